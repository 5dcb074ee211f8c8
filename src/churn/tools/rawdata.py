"""Obtain the raw data named by data.raw_path, exactly as its committed .dvc pointer describes it.

1. Already present with the pointer's md5: nothing to do.
2. Otherwise `dvc pull` it from the DVC remote.
3. If no remote holds it and it is the bundled sample, regenerate it with the package's deterministic
   generator (params `generate`), check the md5 against the pointer, fail loudly on a mismatch, and
   commit it to the DVC cache and the default remote.
"""

from __future__ import annotations

import logging
from pathlib import Path

import yaml

from churn.errors import ChurnError
from churn.system import dvc, file_md5

BUNDLED_SAMPLE = Path("data/raw/customers.csv")
log = logging.getLogger(__name__)


def pointer_md5(pointer: Path) -> str:
    try:
        outs = yaml.safe_load(pointer.read_text())["outs"]
        return outs[0]["md5"]
    except (OSError, KeyError, IndexError, TypeError, yaml.YAMLError):
        raise ChurnError(f"{pointer}: not a DVC pointer with outs[0].md5") from None


def obtain(raw: Path, rows: int, seed: int) -> str:
    """Make `raw` present and equal to its pointer; returns how it was obtained."""
    from churn.tools.generate import write_csv

    pointer = raw.with_name(raw.name + ".dvc")
    if not pointer.exists():
        if raw.exists():
            return "present (not DVC-tracked)"
        raise ChurnError(f"{raw}: not found and no {pointer} pointer to fetch it by (check data.raw_path)")
    expected = pointer_md5(pointer)
    if raw.exists() and file_md5(raw) == expected:
        return "present"
    pulled = dvc("pull", "--quiet", str(pointer), check=False)
    if pulled.returncode == 0 and raw.exists() and file_md5(raw) == expected:
        return "pulled from the DVC remote"
    if raw != BUNDLED_SAMPLE:
        raise ChurnError(f"{raw}: dvc pull failed and it is not the bundled sample: {pulled.stderr.strip()[-300:]}")
    log.info("no DVC remote holds %s; regenerating it (%d rows, seed %d)", raw, rows, seed)
    write_csv(rows, seed, raw)
    actual = file_md5(raw)
    if actual != expected:
        raw.unlink()
        raise ChurnError(
            f"{raw}: regenerated sample has md5 {actual} but {pointer} records {expected}; the generator, "
            "its pinned libraries or params `generate` changed. Re-create the pointer on purpose with "
            "`dvc add` and commit it, or restore what changed"
        )
    committed = dvc("commit", "--force", "--quiet", str(pointer), check=False)
    if committed.returncode != 0:
        raise ChurnError(f"{pointer}: dvc commit failed: {committed.stderr.strip()[-300:]}")
    pushed = dvc("push", "--quiet", str(pointer), check=False)
    if pushed.returncode != 0:
        log.warning("could not push %s to the DVC remote: %s", raw, pushed.stderr.strip()[-300:])
    return "regenerated and verified against the .dvc pointer"


def main() -> None:
    from churn.cli import run_cli
    from churn.tools.settings import generate_settings, load

    def _main() -> None:
        params, settings = load()
        sample = generate_settings(settings)
        raw = Path(params.data.raw_path)
        how = obtain(raw, sample.rows, sample.seed)
        log.info("%s: %s (md5 %s)", raw, how, file_md5(raw))

    run_cli(_main)


if __name__ == "__main__":
    main()
