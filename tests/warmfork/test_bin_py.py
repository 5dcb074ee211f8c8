"""bin/py routes the project's stage modules through warmfork when the checkout has it and WARMFORK is not 0
(checked in a fake checkout whose `churn` package holds only probe stages)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.warmfork.helpers import SRC, stop_all

REPO = SRC.parent
STAGE = 'import os\nprint(os.environ.get("WARMFORK_CALLER", "cold"))\n'


@pytest.fixture
def checkout(tmp_path):
    root = tmp_path / "checkout"
    (root / "bin").mkdir(parents=True)
    shutil.copy2(REPO / "bin" / "py", root / "bin" / "py")
    (root / "src" / "churn").mkdir(parents=True)
    (root / "src" / "churn" / "__init__.py").touch()
    for package in ("pipeline", "stages"):
        (root / "src" / "churn" / package).mkdir()
        (root / "src" / "churn" / package / "__init__.py").touch()
        (root / "src" / "churn" / package / "probe.py").write_text(STAGE)
    (root / "src" / "warmfork").symlink_to(SRC / "warmfork")
    (tmp_path / "warmup.py").write_text("import json\n")
    directory = Path(tempfile.mkdtemp(prefix="wf-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WARMFORK", "PYTHON", "DVC_"))}
    env.update(
        VIRTUAL_ENV=str(Path(sys.executable).parent.parent),
        WARMFORK_DIR=str(directory),
        WARMFORK_IDLE="60",
        WARMFORK_WARMUP=str(tmp_path / "warmup.py"),  # bin/py's default is the project's (heavy) warm-up
    )
    yield root, env
    stop_all(env, directory)


def py(root: Path, env: dict[str, str], *args: str, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bin/py", *args], cwd=root, env={**env, **extra}, capture_output=True, text=True, check=True, timeout=120
    )


def test_stage_modules_go_through_warmfork_unless_turned_off_or_absent(checkout):
    root, env = checkout
    assert "ready" in py(root, env, "-m", "warmfork", "--start").stderr
    for module in ("churn.pipeline.probe", "churn.stages.probe"):
        assert py(root, env, "-m", module).stdout.strip() != "cold", module
    assert py(root, env, "-m", "churn.pipeline.probe", WARMFORK="0").stdout.strip() == "cold"
    (root / "src" / "warmfork").unlink()  # a checkout without the runner (an older commit's experiment)
    plain = py(root, env, "-m", "churn.pipeline.probe")
    assert plain.stdout.strip() == "cold" and not plain.stderr
