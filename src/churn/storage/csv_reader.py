"""The one CSV reader: a table's cells as text, whole or in batches of rows, read with Arrow's streaming CSV
reader in the file's declared encoding and separator (data.encoding, data.separator). prepare reads the raw
table with it, churn.tools.predict a table to score, the serving app a request body, churn.tools.datablock a
table to propose a data block for.

Every problem is one line (a DataError) naming the file or body, the line or column, what was expected and the
params.yaml key that fixes it: an unreadable byte, another separator, a missing or repeated column, a ragged
row, no data row. Text only: the cleaning (churn.core.schema) decides the types, so a stray word in a numeric
column is reported with its row instead of silently turning the column into text.
"""

from __future__ import annotations

import codecs
import csv
import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pandas as pd
import pyarrow as pa

from churn.config import DataParams
from churn.errors import DataError
from churn.system import first_line

log = logging.getLogger(__name__)

SEPARATORS = (",", ";", "\t", "|")  # what a header is tried with when the declared separator does not fit
ENCODING_HINT = "latin-1 or cp1252 for most Western European files"
PROGRESS_ROWS = 10_000_000  # log a progress line every this many rows
# Arrow parses the text in blocks of this many bytes; a batch of rows is assembled from as many as it takes.
# Measured on 2M rows (128 MB): 16 MiB blocks parse in 0.45 s, 64 MiB ones in 1.7 s (threads wait on one block).
BLOCK = 1 << 24

Source = Path | bytes  # a file, or a body already in memory (the serving app's request)


def read_csv(
    source: Source,
    encoding: str,
    separator: str,
    columns: list[str] | None = None,
    required_by: str = "",
    name: str | None = None,
) -> pd.DataFrame:
    """Every cell of `columns` (default: all, in the header's order) as text, the whole table at once."""
    return next(iter_csv(source, encoding, separator, columns, None, required_by, name))


def iter_csv(
    source: Source,
    encoding: str,
    separator: str,
    columns: list[str] | None = None,
    batch_rows: int | None = None,
    required_by: str = "",
    name: str | None = None,
) -> Iterator[pd.DataFrame]:
    """The table's rows as text, `batch_rows` at a time (None: all in one frame), in `columns`' order, each
    batch indexed by its rows' positions (0 = the first row below the header) so that errors name the row.
    `name`: how messages call the source (default: the path; "request body" for bytes)."""
    import pyarrow.csv as pacsv

    shown = name or (str(source) if isinstance(source, Path) else "request body")
    if isinstance(source, Path) and not source.exists():
        raise DataError(shown, "file not found")
    if _size(source) == 0:
        raise DataError(shown, "file is empty; expected a CSV with a header row")
    header = _header(source, shown, encoding, separator)
    _check_header(shown, header, separator, columns, required_by)
    wanted = list(columns) if columns is not None else header
    try:  # Arrow parses the first block when it opens the file
        reader = pacsv.open_csv(
            pa.BufferReader(source) if isinstance(source, bytes) else str(source),
            read_options=pacsv.ReadOptions(block_size=BLOCK, encoding=_arrow_encoding(encoding)),
            parse_options=pacsv.ParseOptions(delimiter=separator),
            convert_options=pacsv.ConvertOptions(
                include_columns=wanted, column_types=dict.fromkeys(wanted, pa.string()), strings_can_be_null=False
            ),
        )
    except (pa.ArrowInvalid, UnicodeError, ValueError) as exc:
        raise _unreadable(source, shown, encoding, separator, header, exc) from None
    offset, pending, pending_rows = 0, [], 0
    limit = batch_rows or float("inf")

    def emit(batches: list[pa.RecordBatch]) -> pd.DataFrame:
        nonlocal offset
        table = pa.Table.from_batches(batches, schema=reader.schema)
        frame = table.to_pandas()[wanted]
        frame.index = pd.RangeIndex(offset, offset + len(frame))
        offset += len(frame)
        if offset // PROGRESS_ROWS != (offset - len(frame)) // PROGRESS_ROWS:
            log.info("read %s: %d rows so far", shown, offset)
        return frame

    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            break
        except (pa.ArrowInvalid, UnicodeError, ValueError) as exc:
            raise _unreadable(source, shown, encoding, separator, header, exc) from None
        while len(batch):
            room = int(min(limit - pending_rows, len(batch)))
            pending.append(batch.slice(0, room))
            pending_rows += room
            batch = batch.slice(room)
            if pending_rows >= limit:
                yield emit(pending)
                pending, pending_rows = [], 0
    if offset == 0 and pending_rows == 0:
        raise DataError(shown, "no data rows below the header")
    if pending_rows:
        yield emit(pending)


def iter_raw(path: Path, data: DataParams, batch_rows: int | None) -> Iterator[pd.DataFrame]:
    """The raw table's declared columns (params data block), `batch_rows` rows at a time (None: whole)."""
    if not path.exists():
        raise DataError(str(path), "file not found (check data.raw_path in params.yaml)")
    declared = [*data.id_columns, *data.numerical, *data.categorical, data.target]
    return iter_csv(path, data.encoding, data.separator, declared, batch_rows, "declared in params.yaml data block")


def read_raw(path: Path, data: DataParams) -> pd.DataFrame:
    """The raw table's declared columns, whole."""
    return next(iter_raw(path, data, None))


def guess_separator(header: str) -> str | None:
    """The separator among SEPARATORS that splits a header line into the most fields (None: none splits it)."""
    counts = {s: len(header.split(s)) for s in SEPARATORS}
    best = max(counts, key=counts.get)
    return best if counts[best] > 1 else None


def shown_separator(separator: str) -> str:
    """A separator as params.yaml spells it."""
    return '"\\t"' if separator == "\t" else f'"{separator}"'


def _arrow_encoding(encoding: str) -> str:
    """Arrow's name for the encoding: "utf8" is read as is, any other name through a Python codec (several
    times slower: "utf-8" too, so it is spelled as Arrow spells it)."""
    return "utf8" if codecs.lookup(encoding).name == "utf-8" else encoding


def _size(source: Source) -> int:
    return len(source) if isinstance(source, bytes) else source.stat().st_size


def _open(source: Source) -> BinaryIO:
    return io.BytesIO(source) if isinstance(source, bytes) else source.open("rb")


def _header(source: Source, shown: str, encoding: str, separator: str) -> list[str]:
    text_encoding = "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding
    try:
        with _open(source) as handle:
            if _ascii_lines(encoding):  # the first line alone: a bad byte further down is reported with its line
                return next(csv.reader([handle.readline().decode(text_encoding)], delimiter=separator), [])
            text = io.TextIOWrapper(handle, encoding=text_encoding, newline="")
            return next(csv.reader(text, delimiter=separator), [])
    except UnicodeError as exc:
        raise _unreadable(source, shown, encoding, separator, [], exc) from None
    except csv.Error as exc:
        raise DataError(shown, f"line 1 (the header) is not CSV ({exc})") from None


def _other_separator(fields: list[str], separator: str) -> str | None:
    """A separator that splits the header into more fields than the declared one does, if any."""
    line = separator.join(fields)
    counts = {s: len(line.split(s)) for s in SEPARATORS if s != separator}
    best = max(counts, key=counts.get)
    return best if counts[best] > max(len(fields), 1) else None


def _check_header(shown: str, header: list[str], separator: str, columns: list[str] | None, required_by: str) -> None:
    names = [h.strip() for h in header]
    missing = [c for c in columns or [] if c not in header]
    other = _other_separator(header, separator) if missing or len(header) == 1 else None
    if other is not None:
        raise DataError(
            shown,
            f"looks {shown_separator(other)}-separated, not {shown_separator(separator)}-separated (its header: "
            f"{separator.join(header)[:80]!r}); set data.separator: {shown_separator(other)} in params.yaml",
        )
    if missing:
        column = missing[0]
        spaced = f" (the header has {header[names.index(column)]!r}: remove the spaces)" if column in names else ""
        raise DataError(shown, f"missing column {column!r} {required_by}{spaced}".rstrip())
    for column in columns if columns is not None else header:
        positions = [i + 1 for i, h in enumerate(header) if h == column]
        if len(positions) > 1:
            raise DataError(
                shown,
                f"column {column!r} appears {len(positions)} times in the header (fields {positions}); "
                "rename the copies",
            )


def _ascii_lines(encoding: str) -> bool:
    """Whether lines of this encoding end in the byte of "\\n" (utf-8, latin-1, cp1252; not utf-16)."""
    try:
        return b"a,;\n".decode(encoding) == "a,;\n"
    except UnicodeError:
        return False


def _unreadable(
    source: Source, shown: str, encoding: str, separator: str, header: list[str], exc: BaseException
) -> DataError:
    """The one line for a table Arrow could not read: the first undecodable byte, else the first record whose
    field count differs from the header's, else the reader's own first line."""
    if not _ascii_lines(encoding):
        return DataError(shown, f"not readable as {encoding} text ({first_line(exc)[:200]}); check data.encoding")
    with _open(source) as handle:
        if not header:  # the header itself failed: its fields as far as they can be read
            header = handle.readline().decode(encoding, errors="replace").rstrip("\r\n").split(separator)
            handle.seek(0)
        for number, line in enumerate(handle, 1):
            try:
                line.decode(encoding)
            except UnicodeError as bad:
                start = getattr(bad, "start", 0)
                field = line[:start].decode(encoding, errors="replace").count(separator)
                column = f", column {header[field]!r}" if number > 1 and field < len(header) else ""
                column = " (the header)" if number == 1 else column
                byte = f"byte 0x{line[start]:02x}" if start < len(line) else "the text"
                return DataError(
                    shown,
                    f"line {number}{column}: {byte} is not valid {encoding}; set data.encoding in params.yaml to "
                    f"the file's encoding ({ENCODING_HINT}) or save the file as {encoding}",
                )
    if header:
        with io.TextIOWrapper(_open(source), encoding=encoding, errors="replace", newline="") as handle:
            reader = csv.reader(handle, delimiter=separator)
            start = 1
            try:
                for record in reader:
                    if len(record) != len(header) and record:
                        quote = " (an unclosed quote?)" if any("\n" in field for field in record) else ""
                        return DataError(
                            shown,
                            f"line {start}: {len(record)} fields where the header has {len(header)}{quote}; "
                            f"fix the row, or check data.separator ({shown_separator(separator)})",
                        )
                    start = reader.line_num + 1
            except csv.Error as bad:
                return DataError(shown, f"line {start}: not CSV ({bad})")
    return DataError(shown, f"not a readable CSV ({first_line(exc)[:200]})")
