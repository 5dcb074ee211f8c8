"""Fixtures for warmfork's tests (see helpers.py)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from tests.warmfork.helpers import Runner, runner_env, stop_all, write_probe


@pytest.fixture
def runner(tmp_path):
    directory = Path(tempfile.mkdtemp(prefix="wf-"))
    modules = tmp_path / "modules"
    write_probe(modules)
    found = Runner(directory, modules, runner_env(directory, modules, tmp_path))
    yield found
    stop_all(found.env, directory)
