"""The scoring server's application (churn.tools.serve), driven as uvicorn drives it, with a stand-in model:
answers in the table's labels, one-line JSON errors with no stack trace, the request-size limit."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pandas as pd
import pytest

from churn.tools.predict import Scoring
from churn.tools.serve import App

COLUMNS = ["age", "plan"]
SCORING = Scoring(numerical=["age"], categorical=["plan"], target="Churn", labels=("No", "Yes"), threshold=0.5)
LIMIT = 1000


class Model:
    def predict(self, features: pd.DataFrame) -> np.ndarray:
        if (features["plan"] == "boom").any():
            raise RuntimeError("internal detail\nTraceback-like text")
        positive = features["age"].fillna(0).to_numpy() / 100
        return np.column_stack([1 - positive, positive])


def call(
    body: bytes,
    content_type: str | None = "application/json",
    method="POST",
    path="/invocations",
    chunk=None,
    expect=False,
):
    """(status, parsed body) of one request; `chunk` sends the body in pieces without a Content-Length, `expect`
    has the client wait for `100 Continue` before it sends the body (which it then never does here)."""
    headers = [(b"content-type", content_type.encode())] if content_type is not None else []
    headers += [(b"expect", b"100-continue")] if expect else []
    if chunk is None:
        headers.append((b"content-length", str(len(body)).encode()))
        pieces = [body]
    else:
        pieces = [body[i : i + chunk] for i in range(0, len(body), chunk)] or [b""]
    messages = [{"type": "http.request", "body": p, "more_body": i < len(pieces) - 1} for i, p in enumerate(pieces)]
    sent: list[dict] = []

    async def receive() -> dict:
        assert not expect, "the application read a body the client was told not to send"
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": headers}
    asyncio.run(App(Model(), SCORING, LIMIT, "models:/m@champion")(scope, receive, send))
    assert expect or not messages, "the application must read the whole request"
    status = sent[0]["status"]
    raw = b"".join(m.get("body", b"") for m in sent[1:])
    assert raw.endswith(b"\n") and raw.count(b"\n") == 1  # one line
    return status, json.loads(raw)


def split(rows: list[list], columns=COLUMNS) -> bytes:
    return json.dumps({"dataframe_split": {"columns": columns, "data": rows}}).encode()


def test_rows_get_probability_and_label_as_the_table_spells_it():
    status, body = call(split([[20, "basic"], [80, "pro"], [None, ""]]))
    assert status == 200
    assert body == {
        "predictions": [
            {"Churn_probability": 0.2, "Churn_label": "No"},
            {"Churn_probability": 0.8, "Churn_label": "Yes"},
            {"Churn_probability": 0.0, "Churn_label": "No"},
        ]
    }


def test_records_and_csv_are_accepted_too():
    records = json.dumps({"dataframe_records": [{"age": 70, "plan": "pro", "extra": 1}]}).encode()
    assert call(records)[1]["predictions"] == [{"Churn_probability": 0.7, "Churn_label": "Yes"}]
    status, body = call(b"age,plan\n 70 ,pro\n", "text/csv; charset=utf-8")
    assert (status, body["predictions"][0]["Churn_label"]) == (200, "Yes")


@pytest.mark.parametrize(
    ("body", "content_type", "status", "expected"),
    [
        (b'{"dataframe_split": {"columns": ["age"', "application/json", 400, "not valid JSON (Expecting"),
        (b"", "application/json", 400, "request body is empty"),
        (b"[1, 2]", "application/json", 400, "exactly one of dataframe_split, dataframe_records; got a JSON list"),
        (b'{"instances": []}', "application/json", 400, "got keys ['instances']"),
        (split([[20, "basic"]], ["agee", "plan"]), "application/json", 400, "request: missing column 'age'"),
        (
            split([[20, "basic"], ["old", "pro"]]),
            "application/json",
            400,
            "'age' must be numeric, found 'old' at data row 2",
        ),
        (split([[True, "basic"]]), "application/json", 400, "'age' must be numeric, found True at data row 1"),
        (split([[20]]), "application/json", 400, "dataframe_split.data[0] has 1 values; expected 2"),
        (split([]), "application/json", 400, "no rows to score"),
        (b'{"dataframe_records": [1]}', "application/json", 400, "dataframe_records[0] must be an object"),
        (b'{"dataframe_records": [{"plan": "\xff"}]}', "application/json", 400, "not UTF-8"),
        (b"age,plan\n", "text/csv", 400, "request body: no data rows below the header"),
        (b"age,plan\n1,2,3,4\n", "text/csv", 400, "line 2: 4 fields where the header has 2"),
        (split([[20, "basic"]]), "text/plain", 415, "Content-Type 'text/plain' is not supported"),
        (split([[20, "basic"]]), "application/json; charset=latin-1", 415, "is not supported"),
        (split([[20, "basic"]]), None, 415, "Content-Type 'none' is not supported"),
        (split([[20, "boom"]]), "application/json", 500, "the model failed; see the server log"),
    ],
)
def test_bad_requests_get_one_line_and_no_stack_trace(body, content_type, status, expected):
    got, answer = call(body, content_type)
    assert got == status
    assert set(answer) == {"error_code", "message"}
    assert expected in answer["message"], answer
    assert "Traceback" not in answer["message"] and "\n" not in answer["message"]
    assert "internal detail" not in answer["message"]


@pytest.mark.parametrize("chunk", [None, 100])
def test_a_body_over_the_limit_is_refused_whole_but_read_to_its_end(chunk):
    big = split([[20, "basic"]] * 200)
    status, body = call(big, chunk=chunk)
    assert status == 413 and body["error_code"] == "REQUEST_LIMIT_EXCEEDED"
    assert body["message"].startswith(f"request body is {len(big)} bytes, over the limit of")
    assert call(split([[20, "basic"]] * 10), chunk=7)[0] == 200  # a small body in pieces is fine


def test_a_client_waiting_for_100_continue_is_refused_by_its_content_length_before_it_sends():
    status, body = call(split([[20, "basic"]] * 200), expect=True)  # call() fails if the body is read
    assert status == 413 and "over the limit of" in body["message"]


def test_other_paths_and_methods():
    assert call(b"", None, "GET", "/ping") == (200, {"status": "ok"})
    assert call(b"", None, "GET", "/version")[1]["model"] == "models:/m@champion"
    assert call(b"", None, "GET", "/invocations")[0] == 405
    assert call(b"", None, "GET", "/nowhere")[0] == 404
    assert call(b"", None, "GET", "/ping/")[0] == 404, "no redirect"
    assert call(b"{}", None, "POST", "/ping")[1]["message"] == "/ping takes GET, not POST"
    assert call(b"", None, "GET", "/nowhere")[1]["message"] == "no such path '/nowhere'; POST /invocations scores rows"
