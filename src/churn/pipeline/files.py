"""Stage I/O: staged (all-or-nothing) outputs, the raw CSV, JSON, parquet, pickles and figures."""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
from pathlib import Path
from types import TracebackType

import pandas as pd

from churn.config import DataParams
from churn.errors import DataError
from churn.system import first_line
from churn.timing import phase

log = logging.getLogger(__name__)


class StagedOutputs:
    """Write a stage's outputs under a staging folder, then move them all into place on success.

    A failure anywhere before `publish()` leaves no output behind, half-written or otherwise; the folders
    of a run that was killed (SIGKILL) are removed by the stage's next run.
    """

    def __init__(self, name: str) -> None:
        from churn.system import remove_stale_dirs

        for leftover in remove_stale_dirs(f".staging-{name}-*"):
            log.info("removed %s, left by a run of %s that was killed", leftover, name)
        self.root = Path(f".staging-{name}-{os.getpid()}")
        self._pending: list[tuple[Path, Path]] = []

    def path(self, final: str | Path) -> Path:
        """The staged location of `final` (same basename, so artifacts logged from it keep their name)."""
        final = Path(final)
        staged = self.root / final
        staged.parent.mkdir(parents=True, exist_ok=True)
        self._pending.append((staged, final))
        return staged

    def publish(self) -> None:
        for staged, final in self._pending:  # renames: instantaneous
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged, final)
        self.discard()

    def discard(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> StagedOutputs:
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.discard()


def write_json(obj: object, path: Path) -> None:
    with phase("write"):
        path.write_text(json.dumps(obj, indent=2) + "\n")


def read_json(path: str | Path) -> object:
    return json.loads(Path(path).read_text())


def write_parquet(frame: pd.DataFrame, path: Path) -> None:
    with phase("write"):
        frame.to_parquet(path, engine="pyarrow", index=False, compression="snappy")
    log.info("wrote %s (%d rows)", path, len(frame))


def read_parquet(path: str | Path) -> pd.DataFrame:

    if not Path(path).exists():
        raise DataError(str(path), "not found; run the upstream stage first (dvc repro)")
    frame = pd.read_parquet(path, engine="pyarrow")
    log.info("read %s (%d rows)", path, len(frame))
    return frame


def write_pickle(obj: object, path: Path) -> None:
    with phase("write"), open(path, "wb") as handle:
        pickle.dump(obj, handle, protocol=5)


def read_pickle(path: str | Path) -> object:
    """Load a pickle that an upstream stage of this pipeline wrote (never an untrusted file)."""

    if not Path(path).exists():
        raise DataError(str(path), "not found; run the upstream stage first (dvc repro)")
    with open(path, "rb") as handle:
        return pickle.load(handle)  # noqa: S301 - our own pipeline's output


def read_raw(path: str | Path, data: DataParams) -> pd.DataFrame:
    """Read only the declared columns of a CSV; a missing file, column or row is a DataError naming the file."""
    path = Path(path)
    if not path.exists():
        raise DataError(str(path), "file not found (check data.raw_path in params.yaml)")
    wanted = [*data.id_columns, *data.numerical, *data.categorical, data.target]
    frame = read_csv_text(path, data.encoding, data.separator, wanted, "declared in params.yaml data block")
    log.info("read %s: %d rows, %d columns", path, len(frame), len(wanted))
    return frame[wanted]


# --- CSV as text, every problem one line: the raw table (prepare) and a table to score (churn.tools.predict) ---

SEPARATORS = (",", ";", "\t", "|")  # what a header is tried with when the declared separator does not fit
ENCODING_HINT = "latin-1 or cp1252 for most Western European files"


def _shown(separator: str) -> str:
    """A separator as params.yaml spells it."""
    return '"\\t"' if separator == "\t" else f'"{separator}"'


def read_csv_text(
    path: Path, encoding: str, separator: str, columns: list[str] | None = None, required_by: str = ""
) -> pd.DataFrame:
    """Every cell of `columns` (default: all) as text. An unreadable byte, another separator, a missing or
    repeated column, a ragged row or no data row is a DataError naming the file, the line or column, what was
    expected and the params.yaml key (data.encoding, data.separator) that fixes it."""
    source = str(path)
    if path.stat().st_size == 0:
        raise DataError(source, "file is empty; expected a CSV with a header row")
    header = _header(path, encoding, separator)
    _check_header(path, header, separator, columns, required_by)
    # Text only: the cleaning decides the types, so a stray word in a numeric column is reported with its
    # row instead of silently turning the column into text.
    try:
        frame = pd.read_csv(
            path, sep=separator, usecols=columns, dtype=str, keep_default_na=False, engine="pyarrow", encoding=encoding
        )
    except (ValueError, KeyError, UnicodeError) as exc:  # pandas' ParserError and pyarrow's errors are ValueErrors
        raise _unreadable(path, encoding, separator, header, exc) from None
    if frame.empty:
        raise DataError(source, "no data rows below the header")
    return frame


def _header(path: Path, encoding: str, separator: str) -> list[str]:
    import codecs
    import csv

    text_encoding = "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding
    try:
        if _ascii_lines(encoding):  # the first line alone: a bad byte further down is reported with its line
            with path.open("rb") as handle:
                return next(csv.reader([handle.readline().decode(text_encoding)], delimiter=separator), [])
        with path.open(encoding=text_encoding, newline="") as handle:
            return next(csv.reader(handle, delimiter=separator), [])
    except UnicodeError as exc:
        raise _unreadable(path, encoding, separator, [], exc) from None
    except csv.Error as exc:
        raise DataError(str(path), f"line 1 (the header) is not CSV ({exc})") from None


def _other_separator(fields: list[str], separator: str) -> str | None:
    """A separator that splits the header into more fields than the declared one does, if any."""
    line = separator.join(fields)
    counts = {s: len(line.split(s)) for s in SEPARATORS if s != separator}
    best = max(counts, key=counts.get)
    return best if counts[best] > max(len(fields), 1) else None


def _check_header(path: Path, header: list[str], separator: str, columns: list[str] | None, required_by: str) -> None:
    source = str(path)
    names = [h.strip() for h in header]
    missing = [c for c in columns or [] if c not in header]
    other = _other_separator(header, separator) if missing or len(header) == 1 else None
    if other is not None:
        raise DataError(
            source,
            f"looks {_shown(other)}-separated, not {_shown(separator)}-separated (its header: "
            f"{separator.join(header)[:80]!r}); set data.separator: {_shown(other)} in params.yaml",
        )
    if missing:
        column = missing[0]
        spaced = f" (the header has {header[names.index(column)]!r}: remove the spaces)" if column in names else ""
        raise DataError(source, f"missing column {column!r} {required_by}{spaced}".rstrip())
    for column in columns if columns is not None else header:
        positions = [i + 1 for i, h in enumerate(header) if h == column]
        if len(positions) > 1:
            raise DataError(
                source,
                f"column {column!r} appears {len(positions)} times in the header (fields {positions}); "
                "rename the copies",
            )


def _ascii_lines(encoding: str) -> bool:
    """Whether lines of this encoding end in the byte of "\\n" (utf-8, latin-1, cp1252; not utf-16)."""
    try:
        return b"a,;\n".decode(encoding) == "a,;\n"
    except UnicodeError:
        return False


def _unreadable(path: Path, encoding: str, separator: str, header: list[str], exc: BaseException) -> DataError:
    """The one line for a file pandas could not read: the first undecodable byte, else the first record whose
    field count differs from the header's, else the reader's own first line."""
    import csv

    source = str(path)
    if not _ascii_lines(encoding):
        return DataError(source, f"not readable as {encoding} text ({first_line(exc)[:200]}); check data.encoding")
    with path.open("rb") as handle:
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
                    source,
                    f"line {number}{column}: {byte} is not valid {encoding}; set data.encoding in params.yaml to "
                    f"the file's encoding ({ENCODING_HINT}) or save the file as {encoding}",
                )
    if header:
        with path.open(encoding=encoding, errors="replace", newline="") as handle:
            reader = csv.reader(handle, delimiter=separator)
            start = 1
            try:
                for record in reader:
                    if len(record) != len(header) and record:
                        quote = " (an unclosed quote?)" if any("\n" in field for field in record) else ""
                        return DataError(
                            source,
                            f"line {start}: {len(record)} fields where the header has {len(header)}{quote}; "
                            f"fix the row, or check data.separator ({_shown(separator)})",
                        )
                    start = reader.line_num + 1
            except csv.Error as bad:
                return DataError(source, f"line {start}: not CSV ({bad})")
    return DataError(source, f"not a readable CSV ({first_line(exc)[:200]})")


# PNG metadata without the matplotlib version, so a figure's bytes depend only on its content.
_PNG_METADATA = {"Software": None}


def write_figure(fig, path: Path) -> None:
    with phase("write"):
        fig.savefig(path, format="png", metadata=_PNG_METADATA)


def write_csv_rows(header: list[str], rows, path: Path) -> None:
    import csv

    with phase("write"), path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
