"""Stage I/O: staged (all-or-nothing) outputs, JSON, parquet, pickles and file hashes."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import shutil
from pathlib import Path
from types import TracebackType

import pandas as pd

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


def file_md5(path: str | Path) -> str:
    """MD5 of a file's bytes: the same hash DVC 3 records for it in dvc.lock and .dvc pointers."""
    digest = hashlib.md5()  # noqa: S324 - content addressing, as DVC does
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def combined_md5(paths: list[str | Path]) -> str:
    """One hash for several input files (order-independent)."""
    if len(paths) == 1:
        return file_md5(paths[0])
    digest = hashlib.md5()  # noqa: S324
    for path in sorted(map(str, paths)):
        digest.update(f"{path}:{file_md5(path)}\n".encode())
    return digest.hexdigest()


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
    from churn.errors import DataError

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
    from churn.errors import DataError

    if not Path(path).exists():
        raise DataError(str(path), "not found; run the upstream stage first (dvc repro)")
    with open(path, "rb") as handle:
        return pickle.load(handle)  # noqa: S301 - our own pipeline's output
