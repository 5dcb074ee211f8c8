"""The commands of the README and of docs/ work as written, in a fresh shell with nothing activated.

Convention: every ```sh, ```bash or ```console block in README.md and docs/*.md holds commands that run from the
repository root without activating anything (in a ```console block, the lines starting with `$ `). A block
right after the line `<!-- tests/integration/test_readme.py runs the next block ... -->` is also run
here, line by line, on a temporary repository of the project (one block, in README.md).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, project_env
from tests.integration.helpers import make_repo, mlflow_runs, parents_and_children, run

README = REPO / "README.md"
DOCUMENTS = (README, *sorted((REPO / "docs").glob("*.md")))  # the newcomer's page and its reference pages
SHELL_LANGUAGES = {"sh", "bash", "console"}
RUN_MARK = "<!-- tests/integration/test_readme.py runs the next block"
OPERATORS = {"&&", "||", ";", "|", "&"}
PROGRAMS = {"make", "bin/dvc", "bin/py", "git", "cd", "curl", "cp", "chmod"}  # and .venv/bin/<anything but dvc>
SHELL_BUILTINS = {"export", "set", "."}  # settings for the next command (`set -a && . ./.env && set +a`)
QUEUE_TIMEOUT_S = 480
ORPHANED_LIMIT_S = 60  # tasks queued and no worker alive for this long: the workers died


def shell_blocks(text: str) -> list[tuple[bool, list[str]]]:
    """Each shell code block of `text`: whether it carries the run mark, and its commands."""
    blocks: list[tuple[bool, list[str]]] = []
    language = None
    marked = False
    previous = ""
    body: list[str] = []
    for line in text.splitlines():
        fence = re.match(r"^```(\S*)\s*$", line)
        if language is None and fence:
            language, marked, body = fence.group(1), previous.startswith(RUN_MARK), []
        elif language is not None and line.strip() == "```":
            if language in SHELL_LANGUAGES:
                blocks.append((marked, commands(body, console=language == "console")))
            language = None
        elif language is not None:
            body.append(line)
        if line.strip():
            previous = line.strip()
    assert language is None, "a code block is never closed"
    return blocks


def commands(lines: list[str], console: bool = False) -> list[str]:
    """The commands of a block: continuation lines (`\\` or an open quote) joined, comment-only lines dropped."""
    found: list[str] = []
    pending = ""
    for line in lines:
        if console and not pending:
            if not line.startswith("$ "):
                continue  # output
            line = line[2:]
        pending = f"{pending}\n{line}" if pending else line
        if pending.endswith("\\"):
            pending = pending[:-1]
            continue
        try:
            tokens = shlex.split(pending, comments=True)
        except ValueError:  # a quote still open: the command goes on
            continue
        if tokens:
            found.append(pending)
        pending = ""
    assert not pending, f"unfinished command {pending!r}"
    return found


def segments(command: str) -> list[list[str]]:
    """The simple commands of a command line, split at `&&`, `||`, `;`, `|` and `&`."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    parts: list[list[str]] = [[]]
    for token in lexer:
        if token in OPERATORS:
            parts.append([])
        else:
            parts[-1].append(token)
    return [part for part in parts if part]


def problem(segment: list[str]) -> str | None:
    program = segment[0]
    if program == ".venv/bin/dvc":
        return "spell DVC as bin/dvc (its queue workers need the venv on PATH)"
    if program in PROGRAMS | SHELL_BUILTINS or program.startswith(".venv/bin/") or segment[:2] == ["docker", "compose"]:
        return None
    return (
        f"starts with {program!r}; use make, bin/dvc, bin/py, .venv/bin/..., git, cd, curl, cp, chmod or "
        "docker compose (after export, set or . for settings)"
    )


README_BLOCKS = shell_blocks(README.read_text())


def checked_commands(path: Path) -> tuple[int, list[str]]:
    """How many simple commands the shell blocks of `path` hold, and those that would not run as written."""
    checked = 0
    bad = []
    for _, block in shell_blocks(path.read_text()):
        for command in block:
            for segment in segments(command):
                checked += 1
                if reason := problem(segment):
                    bad.append(f"{shlex.join(segment)}: {reason}")
    return checked, bad


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda path: str(path.relative_to(REPO)))
def test_every_command_shown_runs_without_activating_anything(path):
    assert checked_commands(path)[1] == []


def test_every_make_target_shown_is_in_the_makefile():
    targets = set(re.findall(r"^([a-zA-Z_-]+):", (REPO / "Makefile").read_text(), flags=re.MULTILINE))
    shown = {
        (path.name, word)
        for path in DOCUMENTS
        for _, block in shell_blocks(path.read_text())
        for command in block
        for segment in segments(command)
        if segment[0] == "make"
        for word in segment[1:]
        if "=" not in word and not word.startswith("-")
    }
    assert {"run", "test", "test-fast", "tune", "serve"} <= {target for _, target in shown}
    assert {(name, target) for name, target in shown if target not in targets} == set()


def test_the_readme_and_the_docs_show_the_commands():
    assert {"experiments.md", "tuning.md", "team-server.md", "tracking.md"} <= {p.name for p in DOCUMENTS}
    counts = {path.name: checked_commands(path)[0] for path in DOCUMENTS}
    assert counts["README.md"] >= 20, counts
    assert sum(counts.values()) - counts["README.md"] >= 20, counts
    marked = [path.name for path in DOCUMENTS if any(is_marked for is_marked, _ in shell_blocks(path.read_text()))]
    assert marked == ["README.md"], "the run mark belongs to the README's experiments block"


def test_the_parser_reads_the_conventions():
    text = (
        "intro\n<!-- tests/integration/test_readme.py runs the next block -->\n```sh\n"
        "bin/dvc exp run -S model.C=0.1   # a comment\n# only a comment\nmake x A=1 \\\n  B=2\n"
        "curl -d '{\"a\":\n  1}' http://h\n```\n```yaml\nnot: a command\n```\n"
        "```console\n$ git status\nOn branch main\n```\n"
    )
    blocks = shell_blocks(text)
    assert [marked for marked, _ in blocks] == [True, False]
    assert len(blocks[0][1]) == 3 and blocks[1][1] == ["git status"]
    assert segments("git add x && bin/dvc push; cd y | make") == [
        ["git", "add", "x"],
        ["bin/dvc", "push"],
        ["cd", "y"],
        ["make"],
    ]
    assert problem(["source", ".venv/bin/activate"]) and problem([".venv/bin/dvc", "repro"])
    assert problem([".venv/bin/python", "-m", "churn.tools.store"]) is None


# --- the experiments block, run as written ----------------------------------------------------------


def readme_env() -> dict[str, str]:
    """A new terminal's environment: no virtualenv active, the venv's bin not on PATH, no DVC_*, MLFLOW_* or
    CHURN_* variables. The one exception (kept by project_env) is the directory of this test session's warm
    stage servers, which only decides where their sockets live, so that none outlives the session."""
    env = project_env()
    env.pop("VIRTUAL_ENV", None)
    venv_bins = {os.path.realpath(Path(sys.executable).parent), os.path.realpath(REPO / ".venv" / "bin")}
    env["PATH"] = os.pathsep.join(
        p for p in env["PATH"].split(os.pathsep) if p and os.path.realpath(p) not in venv_bins
    )
    return env


def shell(root: Path, env: dict[str, str], *args: str, timeout: int = 600) -> str:
    return run(list(args), root, env, timeout=timeout).stdout


def queue_status(root: Path, env: dict[str, str]) -> str:
    return shell(root, env, "bin/dvc", "queue", "status", timeout=120)


def task_states(status: str) -> list[str]:
    states = ("Queued", "Running", "Success", "Failed")
    return [line.split()[-1] for line in status.splitlines() if line.split() and line.split()[-1] in states]


def wait_for_queue(root: Path, env: dict[str, str], log: Path) -> str:
    """Poll `bin/dvc queue status` until nothing is queued or running; fail if the workers died."""
    deadline = time.monotonic() + QUEUE_TIMEOUT_S
    orphaned_since = None
    while True:
        status = queue_status(root, env)
        states = task_states(status)
        if states and not {"Queued", "Running"} & set(states):
            return status
        idle = re.search(r"Worker status: 0 active, 0 idle", status) and "Running" not in states
        orphaned_since = (orphaned_since or time.monotonic()) if idle else None
        stuck = orphaned_since is not None and time.monotonic() - orphaned_since > ORPHANED_LIMIT_S
        if stuck or time.monotonic() > deadline:
            what = "no queue worker is alive" if stuck else f"not done after {QUEUE_TIMEOUT_S} s"
            raise AssertionError(f"queued experiments stuck ({what}):\n{status}\nqueue start:\n{log.read_text()}")
        time.sleep(3)


def experiments(root: Path, env: dict[str, str]) -> dict[str, dict]:
    """name -> {"params": params.yaml's data, "metrics": reports/metrics.json's data} of every experiment."""
    shown = json.loads(shell(root, env, "bin/dvc", "exp", "show", "--json"))
    found = {}
    for baseline in shown:
        for experiment in baseline.get("experiments") or []:
            for rev in experiment.get("revs") or []:
                data = rev.get("data") or {}
                found[rev.get("name") or experiment.get("name")] = {
                    "params": ((data.get("params") or {}).get("params.yaml") or {}).get("data") or {},
                    "metrics": ((data.get("metrics") or {}).get("reports/metrics.json") or {}).get("data") or {},
                }
    return found


def settings(tokens: list[str]) -> list[dict[str, object]]:
    """The params each experiment of one `dvc exp run` command sets: `-S key=a,b` is a grid."""
    values = [tokens[i + 1] for i, token in enumerate(tokens) if token in ("-S", "--set-param")]
    grid: list[dict[str, object]] = [{}]
    for value in values:
        key, choices = value.split("=", 1)
        grid = [{**g, key.lstrip("+"): yaml.safe_load(choice)} for g in grid for choice in choices.split(",")]
    return grid


def lookup(params: dict, dotted: str):
    node = params
    for part in dotted.split("."):
        node = node[part]
    return node


def stop_queue(root: Path, env: dict[str, str]) -> None:
    """Stop the queue's workers, then end any process of this test still working in the repository."""
    import psutil

    with contextlib.suppress(subprocess.TimeoutExpired):
        subprocess.run(["bin/dvc", "queue", "stop", "--kill"], cwd=root, env=env, capture_output=True, timeout=60)
    time.sleep(1)
    mine = []
    for proc in psutil.process_iter(["cwd"]):
        cwd = proc.info.get("cwd") or ""
        if proc.pid != os.getpid() and (cwd == str(root) or cwd.startswith(f"{root}{os.sep}")):
            mine.append(proc)
    for proc in mine:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(mine, timeout=10)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()


@pytest.mark.slow
def test_the_experiments_block_as_written(tmp_path):
    marked = [block for is_marked, block in README_BLOCKS if is_marked]
    assert len(marked) == 1, "README.md: exactly one block must carry the test_readme.py run mark"
    block = [shlex.split(command, comments=True) for command in marked[0]]
    lines = [shlex.join(tokens) for tokens in block]
    queued = [t for t in block if t[:4] == ["bin/dvc", "exp", "run", "--queue"]]
    expected = {  # what the README promises; keep these in the block
        "an experiment run in the workspace": any(t[:4] == ["bin/dvc", "exp", "run", "-S"] for t in block),
        "two queued experiment commands": len(queued) >= 2,
        "two queue workers": ["bin/dvc", "queue", "start", "-j", "2"] in block,
        "the queue's status": ["bin/dvc", "queue", "status"] in block,
        "the experiments table": ["bin/dvc", "exp", "show"] in block,
    }
    assert all(expected.values()), f"the README's experiments block lacks {expected}: {lines}"
    assert all(len(segments(command)) == 1 for command in marked[0]), "one simple command per line, please"

    root = make_repo(tmp_path / "repo", rows=600)
    (root / ".venv").symlink_to(REPO / ".venv")  # as in a clone after `make setup`
    with (root / ".git" / "info" / "exclude").open("a") as exclude:
        exclude.write("/.venv\n")  # .gitignore's `/.venv/` matches a directory, not this symlink
    env = readme_env()
    # The state `make run` leaves on a clone: the store created, the pipeline run, dvc.lock committed.
    shell(root, env, ".venv/bin/python", "-m", "churn.tools.store", "init")
    shell(root, env, "bin/dvc", "repro")
    shell(root, env, "git", "add", "-A")
    shell(root, env, "git", "commit", "-q", "-m", "pipeline results")

    log = tmp_path / "queue-start.log"
    status = ""
    try:
        for tokens in block:
            if tokens[:3] == ["bin/dvc", "queue", "start"]:
                # As in a terminal: its workers keep its stdout, so it goes to a file, not a pipe we would wait on.
                with log.open("w") as output:
                    subprocess.run(
                        tokens, cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                        timeout=120, check=True,
                    )  # fmt: skip
            elif tokens[:3] == ["bin/dvc", "queue", "status"]:
                status = wait_for_queue(root, env, log)
            else:
                shell(root, env, *tokens)
    finally:
        stop_queue(root, env)

    states = task_states(status)
    assert states.count("Success") == sum(len(settings(t)) for t in queued), status
    assert "Failed" not in states, status
    found = experiments(root, env)
    assert len(found) == len(states) + 1, found  # the queued ones and the one run in the workspace
    for name, experiment in found.items():
        assert experiment["metrics"].get("roc_auc", 0) > 0.5, (name, experiment)
    wanted = [s for t in block if t[:3] == ["bin/dvc", "exp", "run"] for s in settings(t)]
    assert len(found) == len(wanted), (wanted, found)
    for setting in wanted:
        assert any(all(lookup(e["params"], k) == v for k, v in setting.items()) for e in found.values()), (
            f"no experiment ran with {setting}: {found}"
        )
    parents, _ = parents_and_children(mlflow_runs(root))
    assert sorted(p.data.tags.get("dvc.exp_name") for p in parents if p.data.tags.get("dvc.exp_name")) == sorted(
        found
    ), "every experiment's runs are in the repository's one store"
