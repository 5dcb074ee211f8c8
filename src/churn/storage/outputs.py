"""Stage outputs written all or nothing (StagedOutputs), and the JSON, pickles, figures and CSV rows they hold."""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
from pathlib import Path
from types import TracebackType

from churn.errors import DataError
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


def write_pickle(obj: object, path: Path) -> None:
    with phase("write"), open(path, "wb") as handle:
        pickle.dump(obj, handle, protocol=5)


def read_pickle(path: str | Path) -> object:
    """Load a pickle that an upstream stage of this pipeline wrote (never an untrusted file)."""

    if not Path(path).exists():
        raise DataError(str(path), "not found; run the upstream stage first (dvc repro)")
    with open(path, "rb") as handle:
        return pickle.load(handle)  # noqa: S301 - our own pipeline's output


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
