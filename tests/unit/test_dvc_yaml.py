"""dvc.yaml against the code: every params key it names exists, every code dep exists, no code dep is missing."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

DVC_YAML = yaml.safe_load((REPO / "dvc.yaml").read_text())
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())
STAGES = sorted(DVC_YAML["stages"])

# Shared infrastructure every stage imports. A change to these shows up in every stage's behaviour only
# through the params or data they handle, which DVC already tracks, so listing them as deps of every stage
# would re-run the whole pipeline for a logging or I/O tweak.
SHARED = {
    "src/churn/__init__.py",
    "src/churn/stages/__init__.py",
    "src/churn/cli.py",
    "src/churn/errors.py",
    "src/churn/params.py",
    "src/churn/io.py",
    "src/churn/tracking.py",
    "src/churn/timing.py",  # benchmark timings only; never changes an output
}


def _resolve(dotted: str):
    node = PARAMS
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(dotted)
        node = node[part]
    return node


def _param_keys(stage: str) -> list[str]:
    keys: list[str] = []
    for entry in DVC_YAML["stages"][stage].get("params", []):
        if isinstance(entry, str):
            keys.append(entry)
        else:  # {file: [keys]}: only params.yaml is used by this project
            for file, names in entry.items():
                assert file == "params.yaml", f"stage {stage} reads params from {file}"
                keys.extend(names)
    return keys


def _deps(stage: str) -> list[str]:
    """The stage's deps with ${...} interpolated from params.yaml, as DVC does."""
    return [re.sub(r"\$\{([^}]+)\}", lambda m: str(_resolve(m.group(1))), d) for d in DVC_YAML["stages"][stage]["deps"]]


def test_stages_are_the_five_modules():
    assert STAGES == ["evaluate", "featurize", "prepare", "register", "train"]
    for stage in STAGES:
        assert DVC_YAML["stages"][stage]["cmd"] == f"bin/py -m churn.stages.{stage}"
        assert (REPO / "src" / "churn" / "stages" / f"{stage}.py").is_file()


@pytest.mark.parametrize("stage", STAGES)
def test_every_params_key_exists(stage):
    keys = _param_keys(stage)
    assert keys, f"stage {stage} names no params"
    missing = []
    for key in keys:
        try:
            _resolve(key)
        except KeyError:
            missing.append(key)
    assert not missing, f"dvc.yaml stage {stage} names params missing from params.yaml: {missing}"


@pytest.mark.parametrize("stage", STAGES)
def test_every_code_dep_exists(stage):
    code = [d for d in _deps(stage) if d.startswith("src/")]
    assert f"src/churn/stages/{stage}.py" in code
    assert [d for d in code if not (REPO / d).is_file()] == []


def test_interpolated_raw_data_dep_is_the_configured_path():
    assert PARAMS["data"]["raw_path"] in _deps("prepare")


# For each stage module, the churn.* modules that importing it loads. One fresh interpreter imports the stages
# one after another, forgetting the churn.* modules in between (third-party imports stay cached: it is fast).
IMPORT_SCRIPT = """
import importlib, json, sys
found = {}
for stage in sys.argv[1:]:
    for name in [n for n in sys.modules if n == "churn" or n.startswith("churn.")]:
        del sys.modules[name]
    importlib.import_module("churn.stages." + stage)
    churn = [m for n, m in sys.modules.items() if n == "churn" or n.startswith("churn.")]
    found[stage] = [getattr(m, "__file__", None) for m in churn]
print(json.dumps(found))
"""


@pytest.fixture(scope="module")
def imported() -> dict[str, list[str]]:
    proc = subprocess.run(
        [sys.executable, "-c", IMPORT_SCRIPT, *STAGES], capture_output=True, text=True, timeout=300, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr
    src = (REPO / "src").resolve()
    result: dict[str, list[str]] = {}
    for stage, files in json.loads(proc.stdout).items():
        paths = [Path(f).resolve() for f in files if f]
        result[stage] = sorted(str(f.relative_to(src.parent)) for f in paths if f.is_relative_to(src / "churn"))
    return result


def test_import_probe_sees_each_stage_separately(imported):
    # prepare imports no other stage; if the probe leaked modules between stages, this would fail.
    assert "src/churn/stages/featurize.py" not in imported["prepare"]
    assert "src/churn/data.py" in imported["prepare"]


@pytest.mark.parametrize("stage", STAGES)
def test_imported_code_is_a_dep(stage, imported):
    assert f"src/churn/stages/{stage}.py" in imported[stage]  # the import really happened
    missing = sorted(set(imported[stage]) - SHARED - set(_deps(stage)))
    assert missing == [], f"dvc.yaml stage {stage} imports code it does not list as deps: {missing}"


def test_layout_paths_are_the_outputs_dvc_yaml_declares():
    """Paths are written in two places (dvc.yaml, churn.layout); this keeps them from drifting apart."""
    from churn import layout

    declared = set()
    for stage in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"].values():
        for kind in ("outs", "metrics", "plots"):
            for entry in stage.get(kind, []):
                declared.add(next(iter(entry)) if isinstance(entry, dict) else entry)
    in_layout = {str(v) for k, v in vars(layout).items() if k.isupper()}
    assert in_layout == declared
