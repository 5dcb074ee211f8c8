"""Apply: the best parameters as a DVC experiment (`dvc exp run -S ...`)."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from churn.errors import ChurnError

log = logging.getLogger(__name__)


def override_text(value: Any) -> str:
    """A value as `dvc exp run -S key=value` parses it back exactly."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return repr(value)
    return str(value)


def apply_command(record: dict[str, Any]) -> list[str]:
    command = [sys.executable, "-m", "dvc", "exp", "run"]
    for key, value in record["params"].items():
        command += ["-S", f"{key}={override_text(value)}"]
    return command


def apply_best(path: Path) -> str:
    """Run the best parameters in `path` as a DVC experiment (train, evaluate, register as for any run);
    returns the experiment's name."""
    if not path.exists():
        raise ChurnError(f"{path}: not found; run `make tune` until a trial completes, then apply")
    record = json.loads(path.read_text())
    command = apply_command(record)
    from churn.system import check_dvc_lock

    check_dvc_lock()  # a dvc.lock left empty by a killed run: restored, or one line saying how
    log.info("applying trial %s of study %r: %s", record["trial"], record["study"], " ".join(command[2:]))
    name = None
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            found = re.search(r"Ran experiment\(s\):\s*(\S+)", line)
            name = found.group(1) if found else name
    if proc.returncode != 0:
        raise ChurnError(f"dvc exp run exited {proc.returncode} applying {path}; see its output above")
    log.info(
        "experiment %s: compare with `dvc exp show`; its CV %s should be %s", name, record["metric"], record["value"]
    )
    return name or ""
