"""Tables in record batches, for the large-data path: which path a table takes (params `resources`), the raw
CSV read in batches, parquet read by batches and written batch by batch. Memory is bounded by the batch size.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from churn.config import DataParams, ResourcesParams
from churn.errors import DataError
from churn.timing import phase

log = logging.getLogger(__name__)

PROGRESS_ROWS = 10_000_000  # log a progress line every this many rows


def streams(rows: int, resources: ResourcesParams) -> bool:
    """Whether a stage whose input has `rows` rows takes the streaming path."""
    return rows > resources.streaming_rows


def parquet_rows(path: str | Path) -> int:
    """A parquet file's row count, from its footer (nothing else is read)."""
    if not Path(path).exists():
        raise DataError(str(path), "not found; run the upstream stage first (dvc repro)")
    return pq.ParquetFile(path).metadata.num_rows


def csv_rows_above(path: Path, data: DataParams, limit: int) -> bool:
    """Whether the CSV has more than `limit` data rows. A file too small to hold that many rows (each row has
    at least one byte per declared column) is not read at all, so the default path pays nothing."""
    if not path.exists():
        return False
    size = path.stat().st_size
    if size <= (limit + 1) * len([*data.id_columns, *data.features, data.target]):
        return False
    lines, last = 0, b"\n"
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 24), b""):
            lines += chunk.count(b"\n")
            last = chunk[-1:]
            if lines > limit + 1:
                return True
    return lines + (last != b"\n") - 1 > limit


def iter_parquet(path: str | Path, batch_rows: int, columns: list[str] | None = None) -> Iterator[pd.DataFrame]:
    """The file's rows in order, `batch_rows` at a time (fewer for the last), as DataFrames."""
    handle = pq.ParquetFile(path)
    done = 0
    for batch in handle.iter_batches(batch_size=batch_rows, columns=columns, use_threads=True):
        frame = batch.to_pandas()
        done += len(frame)
        if done // PROGRESS_ROWS != (done - len(frame)) // PROGRESS_ROWS:
            log.info("read %s: %d of %d rows", path, done, handle.metadata.num_rows)
        yield frame


class BatchWriter:
    """A parquet file written batch by batch (one row group or more per batch) with a fixed schema."""

    def __init__(self, path: Path, schema: pa.Schema | None = None) -> None:
        self.path, self.schema, self.rows = path, schema, 0
        self._writer: pq.ParquetWriter | None = None

    def write(self, frame: pd.DataFrame) -> None:
        with phase("write"):
            table = pa.Table.from_pandas(frame, schema=self.schema, preserve_index=False)
            if self._writer is None:
                self.schema = table.schema
                self._writer = pq.ParquetWriter(self.path, self.schema, compression="snappy")
            self._writer.write_table(table)
        self.rows += len(frame)

    def close(self) -> None:
        if self._writer is None and self.schema is not None:  # no rows: still a valid, empty file
            self._writer = pq.ParquetWriter(self.path, self.schema, compression="snappy")
        if self._writer is not None:
            self._writer.close()
            log.info("wrote %s (%d rows)", self.path, self.rows)

    def __enter__(self) -> BatchWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def prepared_schema(data: DataParams) -> pa.Schema:
    """The prepared tables' columns and types, as the default path writes them."""
    fields = [pa.field(c, pa.large_string()) for c in data.id_columns]
    fields += [pa.field(c, pa.float64()) for c in data.numerical]
    fields += [pa.field(c, pa.string()) for c in data.categorical]
    return pa.schema([*fields, pa.field(data.target, pa.int64())])


def iter_raw(path: Path, data: DataParams, batch_rows: int) -> Iterator[pd.DataFrame]:
    """The declared columns of the raw CSV as text, about `batch_rows` rows at a time, each batch indexed by
    its rows' positions in the file (0 = the first row below the header) so that errors name the row. The
    header is checked as the default path checks it (churn.pipeline.files)."""
    import pyarrow.csv as pacsv

    from churn.pipeline import files

    wanted = [*data.id_columns, *data.numerical, *data.categorical, data.target]
    if not path.exists():
        raise DataError(str(path), "file not found (check data.raw_path in params.yaml)")
    if path.stat().st_size == 0:
        raise DataError(str(path), "file is empty; expected a CSV with a header row")
    header = files._header(path, data.encoding, data.separator)
    files._check_header(path, header, data.separator, wanted, "declared in params.yaml data block")
    with path.open("rb") as handle:
        sample = handle.read(1 << 20)
    bytes_per_row = max(len(sample) / max(sample.count(b"\n"), 1), 8.0)
    block = int(min(max(batch_rows * bytes_per_row, 1 << 16), 1 << 30))
    reader = pacsv.open_csv(
        path,
        read_options=pacsv.ReadOptions(block_size=block, encoding=data.encoding),
        parse_options=pacsv.ParseOptions(delimiter=data.separator),
        convert_options=pacsv.ConvertOptions(
            include_columns=wanted, column_types={c: pa.string() for c in wanted}, strings_can_be_null=False
        ),
    )
    offset, pending, pending_rows = 0, [], 0

    def emit(batches: list[pa.RecordBatch]) -> pd.DataFrame:
        nonlocal offset
        frame = pa.Table.from_batches(batches).to_pandas()[wanted]
        frame.index = pd.RangeIndex(offset, offset + len(frame))
        offset += len(frame)
        if offset // PROGRESS_ROWS != (offset - len(frame)) // PROGRESS_ROWS:
            log.info("read %s: %d rows so far", path, offset)
        return frame

    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            break
        except (pa.ArrowInvalid, UnicodeError, ValueError) as exc:
            raise files._unreadable(path, data.encoding, data.separator, header, exc) from None
        while len(batch):
            room = batch_rows - pending_rows
            pending.append(batch.slice(0, room))
            pending_rows += min(room, len(batch))
            batch = batch.slice(room)
            if pending_rows >= batch_rows:
                yield emit(pending)
                pending, pending_rows = [], 0
    if pending_rows:
        yield emit(pending)
    if offset == 0:
        raise DataError(str(path), "no data rows below the header")


def stored_rows(*paths: str | Path) -> int:
    """The rows of these parquet files together; 0 for a missing one (the stage's own read reports it)."""
    return sum(parquet_rows(p) for p in paths if Path(p).exists())
