"""Bad input, table-driven: a raw data file (`bin/dvc repro`), a parameter (`bin/dvc exp run -S ...`), a file to
score (`churn.tools.predict`) and a request to the scoring server (`churn.tools.serve`), each against one
repository that ran the pipeline once. Every case must end with:

- a non-zero exit code (HTTP 4xx for a request);
- exactly one line naming the problem (the file, row, column or key, what was expected), no "Traceback";
- no partial output: each output dvc.lock records is absent (DVC removes a stage's outputs before running
  it) or unchanged, no `.staging-*` folder, no scores file;
- no MLflow run left RUNNING;
- dvc.lock unchanged, and every file git tracks unchanged, except the input the case changed on purpose (and
  what DVC itself writes for it: `-S` rewrites params.yaml, a changed raw file updates its .dvc pointer) and
  outputs DVC removed before running the failing stage.

After each case that ran DVC (and any other that changed something) the repository is put back as the README's
"When a run fails" says (git checkout, dvc checkout).
"""

from __future__ import annotations

import gzip
import json
import signal
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from churn.system import file_md5
from tests.conftest import project_env
from tests.integration.helpers import DVC, PYTHON, make_repo, reproduce, run
from tests.integration.services import free_port

pytestmark = pytest.mark.slow

RAW = "data/raw/customers.csv"
SERVE_LIMIT_MB = 1
COLUMNS = ["age", "tenure", "monthly_charges", "total_charges", "gender", "contract_type", "payment_method"]
ROW = [41, 30, 57.1, 1728.35, "Male", "One year", "Mailed check"]


# --- the repository, the server, and what a case may leave behind --------------------------------------------


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    root = make_repo(tmp_path_factory.mktemp("bad-inputs") / "repo", rows=1000)
    reproduce(root)
    assert json.loads((root / "reports" / "register.json").read_text())["passed"], "no champion to score with"
    return root


@pytest.fixture(scope="module")
def server(repo):
    """`churn.tools.serve` on the repository's champion, with a 1 MB request limit; its base URL."""
    port = free_port()
    log = repo.parent / "serve.log"
    cmd = [PYTHON, "-m", "churn.tools.serve", "--port", str(port), "--max-request-mb", str(SERVE_LIMIT_MB)]
    with open(log, "w") as out:
        process = subprocess.Popen(cmd, cwd=repo, env=project_env(), stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, f"the server exited {process.returncode}:\n{log.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"no /ping answer within 180 s:\n{log.read_text()[-3000:]}"
            time.sleep(0.5)
        yield url
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert "Traceback" not in log.read_text()  # a bad request is the client's problem, not the server's


def tracked(root: Path) -> dict[str, str]:
    """md5 of every file git tracks (None when it is missing)."""
    names = run(["git", "ls-files"], root).stdout.splitlines()
    return {name: file_md5(root / name) if (root / name).exists() else None for name in names}


def locked_outputs(root: Path) -> dict[str, str]:
    """Every output dvc.lock records, with its md5."""
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    return {out["path"]: out["md5"] for stage in lock["stages"].values() for out in stage.get("outs", [])}


def declared_outputs(root: Path) -> set[str]:
    """Every output dvc.yaml declares (outs, metrics, plots)."""
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    return {
        next(iter(entry)) if isinstance(entry, dict) else entry
        for stage in stages.values()
        for kind in ("outs", "metrics", "plots")
        for entry in stage.get(kind, [])
    }


def running_runs(root: Path) -> int:
    with sqlite3.connect(root / "mlflow.db") as db:
        return db.execute("SELECT COUNT(*) FROM runs WHERE status = 'RUNNING'").fetchone()[0]


@dataclass
class Snapshot:
    lock: bytes
    files: dict[str, str]
    outputs: dict[str, str]

    @classmethod
    def of(cls, root: Path) -> Snapshot:
        return cls((root / "dvc.lock").read_bytes(), tracked(root), locked_outputs(root))


def assert_pristine(root: Path) -> Snapshot:
    """The repository as its last commit left it: git status clean, every recorded output in place."""
    assert run(["git", "status", "--porcelain"], root).stdout == ""
    snapshot = Snapshot.of(root)
    assert {path: file_md5(root / path) for path in snapshot.outputs} == snapshot.outputs
    return snapshot


def assert_nothing_left(root: Path, before: Snapshot, changed_on_purpose: set[str]) -> None:
    assert (root / "dvc.lock").read_bytes() == before.lock, "dvc.lock changed"
    removed_by_dvc = declared_outputs(root)
    for name, md5 in tracked(root).items():
        if name in changed_on_purpose or md5 == before.files[name]:
            continue
        assert md5 is None and name in removed_by_dvc, f"{name} changed"
    for path, md5 in before.outputs.items():
        assert not (root / path).exists() or file_md5(root / path) == md5, f"partial output {path}"
    assert list(root.rglob(".staging-*")) == []
    assert running_runs(root) == 0


def restore(root: Path) -> None:
    """README, "When a run fails": the committed files from git, the recorded outputs from the DVC cache."""
    run(["git", "checkout", "--", "."], root)
    run([*DVC, "checkout", "--force", "--quiet"], root)


def is_pristine(root: Path) -> bool:
    try:
        assert_pristine(root)
    except AssertionError:
        return False
    return True


# The kinds of case that run DVC in the repository. The others only read it (predict writes to the test's own
# folder, the server answers from memory), so they restore it only when the checks found it changed.
CHANGE_THE_REPOSITORY = {"data", "params"}


def one_error_line(output: str, prefix: str = "error: ") -> str:
    assert "Traceback" not in output, output[-3000:]
    lines = [line for line in output.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, output[-3000:]
    return lines[0]


# --- the cases -------------------------------------------------------------------------------------------------


@dataclass
class Case:
    kind: str  # data | params | score | serve
    expected: tuple[str, ...]  # every one of these is in the error line (or the error message)
    data: object = None  # data: rows -> bytes of the raw file; score: rows -> (file name, bytes)
    args: tuple[str, ...] = ()  # params: the -S overrides; score: extra predict arguments
    request: dict = field(default_factory=dict)  # serve: body, content_type, method, path, chunked
    status: int = 400
    prefix: str = "error: "  # DVC's own errors start with "ERROR: "


def text_rows(repo: Path) -> list[list[str]]:
    import csv

    with (repo / RAW).open(newline="") as handle:
        return list(csv.reader(handle))


def csv_bytes(rows: list[list[str]], separator: str = ",", encoding: str = "utf-8") -> bytes:
    return "".join(separator.join(row) + "\n" for row in rows).encode(encoding)


def column(rows: list[list[str]], name: str) -> int:
    return rows[0].index(name)


def with_cell(rows, row: int, name: str, value: str) -> list[list[str]]:
    """The rows with data row `row` (1-based) of column `name` set to `value`."""
    new = [list(r) for r in rows]
    new[row][column(rows, name)] = value
    return new


def with_column(rows, name: str, values) -> list[list[str]]:
    new = [list(r) for r in rows]
    for r, value in zip(new[1:], values, strict=False):
        r[column(rows, name)] = value
    return new


def without_column(rows, name: str) -> list[list[str]]:
    i = column(rows, name)
    return [r[:i] + r[i + 1 :] for r in rows]


def latin1_cell(rows, line: int) -> bytes:
    """The file with a latin-1 byte in the gender of text line `line` (the header is line 1)."""
    rows = with_cell(rows, line - 1, "gender", rows[line - 1][column(rows, "gender")].replace("ale", "\u00e4le"))
    return csv_bytes(rows[: line - 1]) + csv_bytes(rows[line - 1 :], encoding="latin-1")


def ragged(rows, line: int) -> bytes:
    new = [list(r) for r in rows]
    new[line - 1].append("extra")
    return csv_bytes(new)


def unclosed_quote(rows, line: int) -> bytes:
    new = [list(r) for r in rows]
    new[line - 1][column(rows, "contract_type")] = '"' + new[line - 1][column(rows, "contract_type")]
    return csv_bytes(new)


DATA = {
    "latin-1 byte": Case(
        "data",
        ("data/raw/customers.csv: line 4, column 'gender': byte 0xe4 is not valid utf-8", "data.encoding"),
        lambda rows: latin1_cell(rows, 4),
    ),
    "';' separator": Case(
        "data", ('looks ";"-separated', 'set data.separator: ";"'), lambda rows: csv_bytes(rows, separator=";")
    ),
    "missing column": Case(
        "data",
        ("missing column 'tenure' declared in params.yaml data block",),
        lambda rows: csv_bytes(without_column(rows, "tenure")),
    ),
    "text in a numeric column": Case(
        "data",
        ("column 'age' must be numeric, found 'forty' at data row 7",),
        lambda rows: csv_bytes(with_cell(rows, 7, "age", "forty")),
    ),
    "one-class target": Case(
        "data",
        ("target 'churn' has one class (0); need two",),
        lambda rows: csv_bytes(with_column(rows, "churn", ["0"] * len(rows))),
    ),
    "3-class target": Case(
        "data",
        ("target 'churn' must be binary, found 3 classes",),
        lambda rows: csv_bytes(with_column(rows, "churn", ["0", "1", "2"] * len(rows))),
    ),
    "positive_label not a value": Case(
        "data",
        ("data.positive_label 1 is not a value of 'churn' (['no', 'yes'])",),
        lambda rows: csv_bytes(with_column(rows, "churn", [("yes" if r[-1] == "1" else "no") for r in rows[1:]])),
    ),
    "empty file": Case("data", ("data/raw/customers.csv: file is empty",), lambda rows: b""),
    "header only": Case("data", ("no data rows below the header",), lambda rows: csv_bytes(rows[:1])),
    "blank target everywhere": Case(
        "data",
        ("target 'churn' is empty in every row",),
        lambda rows: csv_bytes(with_column(rows, "churn", [""] * len(rows))),
    ),
    "ragged row": Case("data", ("line 10: 10 fields where the header has 9",), lambda rows: ragged(rows, 10)),
    "unclosed quote": Case("data", ("line 5:", "unclosed quote"), lambda rows: unclosed_quote(rows, 5)),
    "repeated column in the header": Case(
        "data",
        ("column 'age' appears 2 times in the header",),
        lambda rows: csv_bytes([[*rows[0], "age"]] + [[*r, "1"] for r in rows[1:]]),
    ),
    "spaces around a column name": Case(
        "data",
        ("missing column 'tenure'", "(the header has ' tenure': remove the spaces)"),
        lambda rows: csv_bytes([[" tenure" if c == "tenure" else c for c in rows[0]], *rows[1:]]),
    ),
    "numeric column with no values": Case(
        "data",
        ("column 'total_charges' has no values",),
        lambda rows: csv_bytes(with_column(rows, "total_charges", [""] * len(rows))),
    ),
    "a compressed file": Case(
        "data",
        ("line 1 (the header): byte 0x8b is not valid utf-8",),
        lambda rows: gzip.compress(csv_bytes(rows), mtime=0),
    ),
}

PARAMS = {
    "unknown key": Case("params", ("params.yaml: prepare.foo is not a known key",), args=("+prepare.foo=1",)),
    "negative C": Case("params", ("params.yaml: model.C must be a number > 0, got -1",), args=("model.C=-1",)),
    "test_size 1.5": Case("params", ("params.yaml: prepare.test_size must be",), args=("prepare.test_size=1.5",)),
    "cv_folds 1": Case("params", ("params.yaml: train.cv_folds must be an integer >= 2",), args=("train.cv_folds=1",)),
    "model.type svm": Case("params", ("params.yaml: model.type must be one of",), args=("model.type=svm",)),
    "threshold 2": Case("params", ("params.yaml: evaluate.threshold must be",), args=("evaluate.threshold=2",)),
    "duplicate column in the data block": Case(
        "params",
        ("data.categorical[2] must be a column not already declared in data.numerical",),
        args=("data.categorical=[gender,contract_type,age]",),
    ),
    "unknown encoding": Case(
        "params", ("params.yaml: data.encoding must be a text encoding",), args=("data.encoding=klingon",)
    ),
    "two-character separator": Case(
        "params", ("params.yaml: data.separator must be one character",), args=("data.separator=ab",)
    ),
    "drop_duplicates maybe": Case(
        "params",
        ("params.yaml: prepare.drop_duplicates must be true or false",),
        args=("prepare.drop_duplicates=maybe",),
    ),
    "warn_share 2": Case(
        "params", ("params.yaml: prepare.warn_share must be a number in [0, 1]",), args=("prepare.warn_share=2",)
    ),
    "positive_label not a value": Case(
        "params", ("data.positive_label 'maybe' is not a value of 'churn'",), args=("data.positive_label=maybe",)
    ),
    "numeric_impute mode": Case(
        "params",
        ("params.yaml: featurize.numeric_impute must be one of median, mean",),
        args=("featurize.numeric_impute=mode",),
    ),
    "raw file missing": Case(
        "params",
        ("failed to reproduce 'prepare'", "data/raw/absent.csv"),
        args=("data.raw_path=data/raw/absent.csv",),
        prefix="ERROR: ",
    ),
}


def scoring_rows(repo: Path) -> list[list[str]]:
    return text_rows(repo)[:21]


def parquet_bytes(rows: list[list[str]]) -> bytes:
    import io

    import pandas as pd

    out = io.BytesIO()
    pd.DataFrame(rows[1:], columns=rows[0]).to_parquet(out, index=False)
    return out.getvalue()


SCORE = {
    "missing column": Case(
        "score",
        ("in.csv: missing column 'tenure'", "required by the model's signature"),
        lambda rows: ("in.csv", csv_bytes(without_column(rows, "tenure"))),
    ),
    "missing id column": Case(
        "score",
        ("missing column 'customer_id' required by data.id_columns",),
        lambda rows: ("in.csv", csv_bytes(without_column(rows, "customer_id"))),
    ),
    "header only": Case(
        "score", ("in.csv: no data rows below the header",), lambda rows: ("in.csv", csv_bytes(rows[:1]))
    ),
    "empty file": Case("score", ("in.csv: file is empty",), lambda rows: ("in.csv", b"")),
    "unsupported input suffix": Case(
        "score", ("in.xlsx: unsupported file type '.xlsx'; expected .csv or .parquet",), lambda rows: ("in.xlsx", b"x")
    ),
    "unsupported output suffix": Case(
        "score",
        ("out.json: unsupported file type '.json'",),
        lambda rows: ("in.csv", csv_bytes(rows)),
        args=("--output", "out.json"),
    ),
    "text in a numeric column": Case(
        "score",
        ("in.csv: column 'age' must be numeric, found 'old' at data row 3",),
        lambda rows: ("in.csv", csv_bytes(with_cell(rows, 3, "age", "old"))),
    ),
    "missing file": Case(
        "score", ("absent.csv: file not found",), lambda rows: ("in.csv", b""), args=("--input", "absent.csv")
    ),
    "latin-1 byte": Case(
        "score",
        ("in.csv: line 3, column 'gender': byte 0xe4 is not valid utf-8", "data.encoding"),
        lambda rows: ("in.csv", latin1_cell(rows, 3)),
    ),
    "';' separator": Case(
        "score", ('in.csv: looks ";"-separated',), lambda rows: ("in.csv", csv_bytes(rows, separator=";"))
    ),
    "ragged row": Case(
        "score", ("in.csv: line 4: 10 fields where the header has 9",), lambda rows: ("in.csv", ragged(rows, 4))
    ),
    "not parquet": Case("score", ("in.parquet: cannot read as parquet",), lambda rows: ("in.parquet", b"PAR1 no")),
    "parquet without rows": Case(
        "score", ("in.parquet: no rows to score",), lambda rows: ("in.parquet", parquet_bytes(rows[:1]))
    ),
    "threshold 1.5": Case(
        "score",
        ("--threshold must be in (0, 1), got 1.5",),
        lambda rows: ("in.csv", csv_bytes(rows)),
        args=("--threshold", "1.5"),
    ),
    "unknown alias": Case(
        "score",
        ("models:/churn_model@nope: cannot load the model",),
        lambda rows: ("in.csv", csv_bytes(rows)),
        args=("--model", "models:/churn_model@nope"),
    ),
}


def split_body(columns=COLUMNS, data=None) -> bytes:
    return json.dumps({"dataframe_split": {"columns": columns, "data": [ROW] if data is None else data}}).encode()


def serve(body: bytes, status: int, *expected: str, content_type="application/json", **request) -> Case:
    return Case("serve", expected, request={"body": body, "content_type": content_type, **request}, status=status)


SERVE = {
    "malformed JSON": serve(b'{"dataframe_split": {"columns": ["age"', 400, "not valid JSON (Expecting"),
    "wrong column": serve(
        split_body(["agee", *COLUMNS[1:]]), 400, "request: missing column 'age' required by the model"
    ),
    "oversized body": serve(split_body(data=[ROW] * 30000), 413, "over the limit of 1 MB (--max-request-mb)"),
    "oversized body without a length": serve(split_body(data=[ROW] * 30000), 413, "over the limit", chunked=True),
    "non-numeric value": serve(
        split_body(data=[ROW, ["old", *ROW[1:]]]),
        400,
        "request: column 'age' must be numeric, found 'old' at data row 2",
    ),
    "empty body": serve(b"", 400, "request body is empty"),
    "unknown content type": serve(
        split_body(), 415, "Content-Type 'application/xml' is not supported", content_type="application/xml"
    ),
    "another charset": serve(split_body(), 415, "is not supported", content_type="application/json; charset=latin-1"),
    "a JSON list": serve(b"[1, 2]", 400, "exactly one of dataframe_split, dataframe_records; got a JSON list"),
    "MLflow 1 format": serve(b'{"columns": ["age"], "data": [[1]]}', 400, "got keys ['columns', 'data']"),
    "short row": serve(split_body(data=[ROW[:3]]), 400, "dataframe_split.data[0] has 3 values; expected 7"),
    "no rows": serve(split_body(data=[]), 400, "no rows to score"),
    "records that are not objects": serve(
        b'{"dataframe_records": [[1, 2]]}', 400, "dataframe_records[0] must be an object"
    ),
    "CSV header only": serve(
        ",".join(COLUMNS).encode() + b"\n", 400, "request body: no data rows below the header", content_type="text/csv"
    ),
    "GET /invocations": serve(b"", 405, "/invocations takes POST, not GET", method="GET"),
    "unknown path": serve(split_body(), 404, "no such path '/predict'", path="/predict"),
}

CASES = {f"{case.kind}: {name}": case for table in (DATA, PARAMS, SCORE, SERVE) for name, case in table.items()}


def test_the_table_is_at_least_thirty_cases_of_each_kind_of_input():
    assert len(CASES) >= 30
    assert {case.kind for case in CASES.values()} == {"data", "params", "score", "serve"}


# --- running a case --------------------------------------------------------------------------------------------


def run_data_case(repo: Path, case: Case) -> set[str]:
    (repo / RAW).write_bytes(case.data(text_rows(repo)))
    result = run([*DVC, "repro"], repo, check=False)
    assert result.returncode != 0
    line = one_error_line(result.stdout + result.stderr, case.prefix)
    assert all(text in line for text in case.expected), line
    return {f"{RAW}.dvc"}  # DVC records the changed raw file in its pointer before running prepare


def run_params_case(repo: Path, case: Case) -> set[str]:
    result = run([*DVC, "exp", "run", *[a for arg in case.args for a in ("-S", arg)]], repo, check=False)
    assert result.returncode != 0
    line = one_error_line(result.stdout + result.stderr, case.prefix)
    assert all(text in line for text in case.expected), line
    key = case.args[0].lstrip("+").split("=")[0]
    assert key in line or case.prefix != "error: ", line  # the line names the key
    return {"params.yaml"}  # `-S` writes the value into params.yaml, and DVC leaves it there


def run_score_case(repo: Path, case: Case, folder: Path) -> set[str]:
    name, content = case.data(scoring_rows(repo))
    (folder / name).write_bytes(content)
    args = {"--input": str(folder / name), "--output": str(folder / "out.csv")}
    extra = dict(zip(case.args[::2], case.args[1::2], strict=True))
    args.update({k: str(folder / v) if k in ("--input", "--output") else v for k, v in extra.items()})
    result = run([PYTHON, "-m", "churn.tools.predict", *[x for kv in args.items() for x in kv]], repo, check=False)
    assert result.returncode == 1
    line = one_error_line(result.stderr)
    assert all(text in line for text in case.expected), line
    assert sorted(p.name for p in folder.iterdir()) == [name], "no scores, no temporary file"
    return set()


def run_serve_case(server: str, case: Case) -> set[str]:
    request = case.request
    body = request["body"]
    headers = {"Content-Type": request["content_type"]}
    data = body
    if request.get("chunked"):
        data = iter([body[i : i + 65536] for i in range(0, len(body), 65536)])  # no Content-Length
        headers["Transfer-Encoding"] = "chunked"
    method = request.get("method", "POST")
    http = urllib.request.Request(
        server + request.get("path", "/invocations"),
        data=data if method == "POST" else None,
        headers=headers,
        method=method,
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(http, timeout=120)
    error = caught.value
    text = error.read().decode()
    assert error.code == case.status, text
    assert text.count("\n") == 1 and "Traceback" not in text and "stack_trace" not in text
    answer = json.loads(text)
    assert set(answer) == {"error_code", "message"}
    assert all(expected in answer["message"] for expected in case.expected), answer
    return set()


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_and_leaves_nothing_behind(name, repo, server, tmp_path):
    case = CASES[name]
    before = assert_pristine(repo)
    try:
        if case.kind == "data":
            changed = run_data_case(repo, case)
        elif case.kind == "params":
            changed = run_params_case(repo, case)
        elif case.kind == "score":
            changed = run_score_case(repo, case, tmp_path)
        else:
            changed = run_serve_case(server, case)
        assert_nothing_left(repo, before, changed | ({RAW} if case.kind == "data" else set()))
    finally:
        if case.kind in CHANGE_THE_REPOSITORY or not is_pristine(repo):
            restore(repo)
    assert_pristine(repo)


def test_the_repository_is_healthy_after_all_of_them(repo):
    """The last word: DVC sees every stage up to date, and a full run still changes nothing."""
    status = run([*DVC, "status", "--json"], repo).stdout
    assert json.loads(status) == {}
    before = assert_pristine(repo)
    run([*DVC, "repro"], repo)
    assert Snapshot.of(repo).lock == before.lock
