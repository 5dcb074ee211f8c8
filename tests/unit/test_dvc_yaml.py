"""dvc.yaml against the code: every params key it names exists, and each stage's code deps are exactly the
files under src/ it imports (no exemptions: a file that can change an output is a dependency)."""

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
        assert DVC_YAML["stages"][stage]["cmd"] == f"bin/py -m churn.pipeline.{stage}"
        assert (REPO / "src" / "churn" / "pipeline" / f"{stage}.py").is_file()


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
    assert f"src/churn/pipeline/{stage}.py" in code
    assert [d for d in code if not (REPO / d).is_file()] == []


def test_interpolated_raw_data_dep_is_the_configured_path():
    assert PARAMS["data"]["raw_path"] in _deps("prepare")


def static_imports(module: str) -> set[str]:
    """Every file under src/ that `module` can import, following imports inside functions too (which a
    plain import would not load), and every package __init__ on the way."""
    import ast

    src = REPO / "src"

    def file_of(name: str) -> Path | None:
        base = src.joinpath(*name.split("."))
        for candidate in (base / "__init__.py", base.with_suffix(".py")):
            if candidate.is_file():
                return candidate
        return None

    seen: set[Path] = set()
    todo = [module]
    while todo:
        parts = todo.pop().split(".")
        for depth in range(1, len(parts) + 1):
            path = file_of(".".join(parts[:depth]))
            if path is None or path in seen:
                continue
            seen.add(path)
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    todo += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
                elif isinstance(node, ast.Import):
                    todo += [alias.name for alias in node.names]
    return {str(path.relative_to(REPO)) for path in seen}


# For each stage module, the files under src/ that importing it loads, in a fresh interpreter per stage.
IMPORT_SCRIPT = """
import importlib, json, sys
importlib.import_module("churn.pipeline." + sys.argv[1])
print(json.dumps([getattr(m, "__file__", None) for m in list(sys.modules.values())]))
"""


@pytest.fixture(scope="module")
def imported() -> dict[str, list[str]]:
    src = (REPO / "src").resolve()
    result: dict[str, list[str]] = {}
    for stage in STAGES:
        proc = subprocess.run(
            [sys.executable, "-c", IMPORT_SCRIPT, stage], capture_output=True, text=True, timeout=300, cwd=REPO
        )
        assert proc.returncode == 0, proc.stderr
        paths = [Path(f).resolve() for f in json.loads(proc.stdout) if f]
        result[stage] = sorted(str(f.relative_to(src.parent)) for f in paths if f.is_relative_to(src))
    return result


@pytest.mark.parametrize("stage", STAGES)
def test_every_loaded_file_under_src_is_a_dep(stage, imported):
    """A fresh interpreter imports the stage: any file under src/ it loads must be a dep of that stage."""
    assert f"src/churn/pipeline/{stage}.py" in imported[stage]  # the import really happened
    missing = sorted(set(imported[stage]) - set(_deps(stage)))
    assert missing == [], f"dvc.yaml stage {stage} imports code it does not list as deps: {missing}"


@pytest.mark.parametrize("stage", STAGES)
def test_code_deps_are_exactly_what_the_stage_can_import(stage):
    """Both ways, lazy imports included: no file missing, and no file listed that the stage never imports
    (so editing a tool or another stage's module leaves this stage up to date)."""
    code = {d for d in _deps(stage) if d.startswith("src/")}
    assert code == static_imports(f"churn.pipeline.{stage}"), f"dvc.yaml stage {stage}: code deps differ"


def test_no_stage_imports_a_tool_or_the_fork_server():
    for stage in STAGES:
        names = static_imports(f"churn.pipeline.{stage}")
        assert not [n for n in names if n.startswith("src/churn/tools/") or not n.startswith("src/churn/")]


def churn_imports(path: Path) -> list[str]:
    """The churn modules (or their attributes) a file imports, lazy imports included: `from churn.a import b`
    gives churn.a.b, so `from churn.pipeline import train` names the stage module it imports."""
    import ast

    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names += [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
    return [name for name in names if name == "churn" or name.startswith("churn.")]


def within(name: str, modules: tuple[str, ...]) -> bool:
    return any(name == module or name.startswith(f"{module}.") for module in modules)


def test_layers_point_down():
    """Every module under src/churn, subpackages included: the modules at its top (config, errors, system,
    timing, cli) and core import no stage, storage, tracking or tool; storage (the files stages and tools share)
    imports only the top; tracking imports no stage or tool; pipeline no tool; and a tool imports no stage
    module (what tools share with stages lives in churn.storage)."""
    top = ("churn.config", "churn.errors", "churn.system", "churn.timing", "churn.cli")
    allowed_below = {
        "": top,
        "core": ("churn.core", "churn.config", "churn.errors"),
        "storage": ("churn.storage", *top),
        "tracking": ("churn.tracking", "churn.config", "churn.errors", "churn.system", "churn.timing"),
        "pipeline": ("churn.pipeline", "churn.core", "churn.storage", "churn.tracking", *top),
        "tools": ("churn",),
    }
    stages = ("churn.pipeline",)  # the stages and their helpers: no tool imports any of them
    src = REPO / "src" / "churn"

    def layer(path: Path) -> str:  # the package at the top of its path; "" for the modules at the top
        parts = path.relative_to(src).parts
        return parts[0] if len(parts) > 1 else ""

    files = {path: layer(path) for path in sorted(src.rglob("*.py"))}
    assert set(files.values()) == allowed_below.keys(), "a package under src/churn has no layer in this test"
    assert src / "storage" / "csv_reader.py" in files  # the walk reaches the subpackages
    wrong = []
    for path, layer in files.items():
        for name in churn_imports(path):
            if not within(name, allowed_below[layer]) or (layer == "tools" and within(name, stages)):
                wrong.append(f"{path.relative_to(REPO)}: {name}")
    assert wrong == []


def test_no_import_cycles():
    """No module under src/churn imports, directly or through others, a module that imports it back."""
    src = REPO / "src" / "churn"
    modules = {".".join(p.relative_to(src.parent).with_suffix("").parts): p for p in src.rglob("*.py")}
    modules = {name.removesuffix(".__init__"): path for name, path in modules.items()}

    def edges(name: str) -> set[str]:
        found = set()
        for imported in churn_imports(modules[name]):
            while imported and imported not in modules:  # `from churn.a import b`: churn.a.b or churn.a
                imported = imported.rpartition(".")[0]
            if imported and imported != name and not name.startswith(f"{imported}."):  # a package's own parent
                found.add(imported)
        return found

    graph = {name: edges(name) for name in modules}
    cycles = []
    for start in graph:
        todo, seen = list(graph[start]), set()
        while todo:
            name = todo.pop()
            if name == start:
                cycles.append(start)
                break
            if name not in seen:
                seen.add(name)
                todo += graph[name]
    assert cycles == []


def test_layout_paths_are_the_outputs_dvc_yaml_declares():
    """Paths are written in two places (dvc.yaml, churn.storage.paths); this keeps them from drifting apart."""
    from churn.storage import paths

    declared = set()
    for stage in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"].values():
        for kind in ("outs", "metrics", "plots"):
            for entry in stage.get(kind, []):
                declared.add(next(iter(entry)) if isinstance(entry, dict) else entry)
    in_layout = {str(v) for k, v in vars(paths).items() if k.isupper() and isinstance(v, Path)}
    assert in_layout == declared
