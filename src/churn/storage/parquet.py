"""Parquet tables read and written in record batches (memory bounded by the batch size, not the table), or
read whole where a stage needs the whole table (train's in-memory fit)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from churn.config import DataParams
from churn.errors import DataError
from churn.timing import phase

log = logging.getLogger(__name__)

PROGRESS_ROWS = 10_000_000  # log a progress line every this many rows
MISSING = "not found; run the upstream stage first (dvc repro)"


def parquet_rows(path: str | Path) -> int:
    """A parquet file's row count, from its footer (nothing else is read)."""
    if not Path(path).exists():
        raise DataError(str(path), MISSING)
    return pq.ParquetFile(path).metadata.num_rows


def read_parquet(path: str | Path) -> pd.DataFrame:
    """The whole table."""
    if not Path(path).exists():
        raise DataError(str(path), MISSING)
    frame = pd.read_parquet(path, engine="pyarrow")
    log.info("read %s (%d rows)", path, len(frame))
    return frame


def iter_parquet(
    path: str | Path, batch_rows: int, columns: list[str] | None = None, categories: tuple[str, ...] | list[str] = ()
) -> Iterator[pd.DataFrame]:
    """The file's rows in order, `batch_rows` at a time (fewer for the last), as DataFrames. `categories`: text
    columns read as pandas categoricals (from parquet's dictionary pages, each distinct value made once): the
    same values, which scikit-learn's encoders take several times faster than a column of strings."""
    if not Path(path).exists():
        raise DataError(str(path), MISSING)
    handle = pq.ParquetFile(path, read_dictionary=list(categories) or None)
    done = 0
    for batch in handle.iter_batches(batch_size=batch_rows, columns=columns, use_threads=True):
        frame = batch.to_pandas()
        done += len(frame)
        if done // PROGRESS_ROWS != (done - len(frame)) // PROGRESS_ROWS:
            log.info("read %s: %d of %d rows", path, done, handle.metadata.num_rows)
        yield frame


class RowReader:
    """A parquet file's rows in order, taken n at a time whatever its row groups: another file's batches, read
    alongside (evaluate reads data/prepared/test.parquet's raw columns beside data/features/test.parquet)."""

    def __init__(self, path: str | Path, batch_rows: int, columns: list[str]) -> None:
        self.path = path
        self._batches = iter_parquet(path, batch_rows, columns)
        self._held: list[pd.DataFrame] = []
        self._count = 0

    def take(self, rows: int) -> pd.DataFrame:
        """The next `rows` rows (a DataError when the file has fewer left)."""
        while self._count < rows:
            frame = next(self._batches, None)
            if frame is None:
                raise DataError(str(self.path), f"has fewer rows than the table read beside it ({rows} wanted)")
            self._held.append(frame)
            self._count += len(frame)
        whole = self._held[0] if len(self._held) == 1 else pd.concat(self._held, ignore_index=True)
        taken, rest = whole.iloc[:rows].reset_index(drop=True), whole.iloc[rows:].reset_index(drop=True)
        self._held, self._count = ([rest] if len(rest) else []), len(rest)
        return taken

    def finish(self) -> None:
        """A DataError unless every row was taken."""
        if self._count or next(self._batches, None) is not None:
            raise DataError(str(self.path), "has more rows than the table read beside it")


def file_schema(path: str | Path) -> pa.Schema:
    """A parquet file's columns and types, from its footer."""
    if not Path(path).exists():
        raise DataError(str(path), MISSING)
    return pq.read_schema(path)


class BatchWriter:
    """A parquet file written batch by batch (one row group or more per batch) with a fixed schema; a table
    of one batch is written exactly as pandas' DataFrame.to_parquet(index=False) writes it."""

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


def write_parquet(frame: pd.DataFrame, path: Path) -> None:
    """A whole frame as one batch."""
    with BatchWriter(path) as writer:
        writer.write(frame)


def prepared_schema(data: DataParams) -> pa.Schema:
    """The prepared tables' columns and types: ids as text, numbers as float, categories as text, target 0/1."""
    fields = [pa.field(c, pa.large_string()) for c in data.id_columns]
    fields += [pa.field(c, pa.float64()) for c in data.numerical]
    fields += [pa.field(c, pa.string()) for c in data.categorical]
    return pa.schema([*fields, pa.field(data.target, pa.int64())])
