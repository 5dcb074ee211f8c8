"""Write the bundled sample table (`python -m churn.tools.generate [--rows N] [--seed S] [--out FILE]`);
defaults from params.yaml `generate` and `data.raw_path`."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from churn.core.generate import BLOCK_ROWS, iter_blocks
from churn.system import atomic_path

log = logging.getLogger(__name__)


def write_csv(rows: int, seed: int, out: Path, progress: bool = True) -> None:
    """Write the sample atomically, block by block, with a progress bar for large row counts."""
    from tqdm import tqdm

    bar = tqdm(total=rows, unit="rows", disable=not progress or rows <= 2 * BLOCK_ROWS, desc=out.name)
    try:
        with atomic_path(out) as tmp, tmp.open("w", newline="") as handle:
            for index, block in enumerate(iter_blocks(rows, seed)):
                block.to_csv(handle, index=False, header=index == 0, float_format="%.2f", lineterminator="\n")
                bar.update(len(block))
    finally:
        bar.close()
    log.info("wrote %s (%d rows, seed %d)", out, rows, seed)


def main(argv: list[str] | None = None) -> None:
    from churn.cli import run_cli
    from churn.tools.settings import generate_settings, load

    def _main() -> None:
        parser = argparse.ArgumentParser(prog="python -m churn.tools.generate", description=__doc__.splitlines()[0])
        parser.add_argument("--rows", type=int, help="row count (default: generate.rows in params.yaml)")
        parser.add_argument("--seed", type=int, help="seed (default: generate.seed in params.yaml)")
        parser.add_argument("--out", type=Path, help="output CSV (default: data.raw_path in params.yaml)")
        args = parser.parse_args(argv)
        if args.rows is None or args.seed is None or args.out is None:
            params, raw = load()
            sample = generate_settings(raw)
            rows = args.rows if args.rows is not None else sample.rows
            seed = args.seed if args.seed is not None else sample.seed
            out = args.out or Path(params.data.raw_path)
        else:
            rows, seed, out = args.rows, args.seed, args.out
        if rows < 1:
            parser.error("--rows must be >= 1")
        write_csv(rows, seed, out)

    run_cli(_main)


if __name__ == "__main__":
    main()
