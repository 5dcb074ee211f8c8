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
from churn.timing import phase

log = logging.getLogger(__name__)


class StagedOutputs:
    """Write a stage's outputs under a staging folder, then move them all into place on success.

    A failure anywhere before `publish()` leaves no output behind, half-written or otherwise.
    """

    def __init__(self, name: str) -> None:
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
    if path.stat().st_size == 0:
        raise DataError(str(path), "file is empty; expected a CSV with a header row")
    try:
        header = pd.read_csv(path, nrows=0).columns
    except pd.errors.EmptyDataError:
        raise DataError(str(path), "file is empty; expected a CSV with a header row") from None
    wanted = [*data.id_columns, *data.numerical, *data.categorical, data.target]
    missing = [c for c in wanted if c not in header]
    if missing:
        raise DataError(str(path), f"missing column {missing[0]!r} declared in params.yaml data block")
    # Everything is read as text: validate_and_clean decides the types, so a stray word in a numeric
    # column is reported with its row instead of silently turning the column into text.
    frame = pd.read_csv(path, usecols=wanted, dtype=str, keep_default_na=False, engine="pyarrow")
    if frame.empty:
        raise DataError(str(path), "no data rows below the header")
    log.info("read %s: %d rows, %d columns", path, len(frame), len(wanted))
    return frame[wanted]


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
