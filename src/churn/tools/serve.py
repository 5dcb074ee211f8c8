"""Serve a registered model over HTTP, as `make serve` does: each row answered with its probability and its label
as the training table spells it, every error a one-line JSON body, requests refused above a size limit.

    python -m churn.tools.serve [--model models:/churn_model@champion] [--port 5001] [--max-request-mb 10]

MLflow's scoring protocol, the parts a table model uses: POST /invocations with JSON `{"dataframe_split":
{"columns": [...], "data": [[...], ...]}}` or `{"dataframe_records": [{...}, ...]}` (Content-Type
application/json), or a CSV with a header (text/csv); GET /ping, /health and /version. The answer is
`{"predictions": [{"<target>_probability": 0.81, "<target>_label": "Yes"}, ...]}`, one per row, in order.
Rows are cleaned as `prepare` cleans the raw table and `churn.tools.predict` cleans a file (numbers from text,
blanks and null as missing); the label and its threshold are the model's (see churn.tools.predict).

Errors are `{"error_code": "...", "message": "<one line>"}` with 400 (a bad request: which column, row or key,
and what was expected), 404, 405, 413 (over --max-request-mb), 415 (another content type) or 500 (the model
failed: the details go to the server's log, never to the client).

Why not `mlflow models serve`: MLflow 3.17's scoring server (mlflow/pyfunc/scoring_server) has no switch for
either: a 400 carries the whole Python stack trace (`stack_trace`) and echoes the request back, and a body of
any size is read into memory and parsed (a 50 MB request took the server from 314 MB to 1.15 GB). The
model itself is the registered one, unchanged: `mlflow models serve -m models:/churn_model@champion` still
works and answers [[p_negative, p_positive], ...] per row.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
from typing import Any

import pandas as pd
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from churn.core.schema import clean_features
from churn.errors import ChurnError, DataError
from churn.system import first_line
from churn.tools.predict import Scoring, check_columns, output_columns, score

log = logging.getLogger(__name__)

SOURCE = "request"  # what error messages call the request's table
FORMATS = ("dataframe_split", "dataframe_records")
JSON, CSV = "application/json", "text/csv"
EXPECTED = "JSON with dataframe_split or dataframe_records (application/json), or a CSV with a header (text/csv)"
DEFAULT_MAX_MB = 10.0


class RequestError(Exception):
    """A request the server refuses: an HTTP status and the one line that says why."""

    def __init__(self, status: int, message: str, code: str = "BAD_REQUEST") -> None:
        super().__init__(message)
        self.status, self.code = status, code


# --- the request's table ----------------------------------------------------------------------------------------


def _split_frame(payload: Any) -> pd.DataFrame:
    if not isinstance(payload, dict) or not isinstance(payload.get("columns"), list):
        raise RequestError(400, 'dataframe_split must be {"columns": [names], "data": [[values], ...]}')
    columns, rows = payload["columns"], payload.get("data")
    if not isinstance(rows, list):
        raise RequestError(400, "dataframe_split.data must be a list of rows (lists of values)")
    if not all(isinstance(c, str) for c in columns) or len(set(columns)) < len(columns):
        raise RequestError(400, "dataframe_split.columns must be distinct column names (strings)")
    for index, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != len(columns):
            got = f"{len(row)} values" if isinstance(row, list) else f"a {type(row).__name__}"
            raise RequestError(400, f"dataframe_split.data[{index}] has {got}; expected {len(columns)} (the columns)")
    return pd.DataFrame(rows, columns=columns, dtype=object)


def _records_frame(payload: Any) -> pd.DataFrame:
    if not isinstance(payload, list):
        raise RequestError(400, "dataframe_records must be a list of rows (objects of column: value)")
    for index, row in enumerate(payload):
        if not isinstance(row, dict):
            raise RequestError(400, f"dataframe_records[{index}] must be an object of column: value")
    return pd.DataFrame.from_records(payload).astype(object) if payload else pd.DataFrame()


def parse_json(body: bytes) -> pd.DataFrame:
    """The table of a JSON request body."""
    if not body.strip():
        raise RequestError(400, f"request body is empty; expected {EXPECTED}")
    try:
        payload = json.loads(body)
    except UnicodeDecodeError:
        raise RequestError(400, "request body is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        where = f"{exc.msg} at line {exc.lineno} column {exc.colno}"
        raise RequestError(400, f"request body is not valid JSON ({where})") from None
    keys = sorted(set(payload) & set(FORMATS)) if isinstance(payload, dict) else []
    if len(keys) != 1:
        got = f"keys {sorted(payload)[:5]}" if isinstance(payload, dict) else f"a JSON {type(payload).__name__}"
        raise RequestError(400, f"request must be an object with exactly one of {', '.join(FORMATS)}; got {got}")
    return _split_frame(payload[keys[0]]) if keys[0] == "dataframe_split" else _records_frame(payload[keys[0]])


def parse_csv(body: bytes, scoring: Scoring) -> pd.DataFrame:
    """The table of a CSV request body, read as churn.tools.predict reads a file (every cell as text, in
    params data.encoding with data.separator)."""
    from churn.storage.csv_reader import read_csv

    if not body.strip():
        raise RequestError(400, f"request body is empty; expected {EXPECTED}")
    try:
        return read_csv(body, scoring.encoding, scoring.separator)
    except DataError as exc:
        raise RequestError(400, str(exc)) from None


def parse(body: bytes, content_type: str, scoring: Scoring) -> pd.DataFrame:
    """The request's table, by Content-Type (charset, if given: utf-8 for JSON, data.encoding for a CSV)."""
    import codecs

    mime, *parameters = [part.strip() for part in content_type.split(";")]
    charset = dict(p.partition("=")[::2] for p in parameters).get("charset", "").strip('"').lower()
    expected = scoring.encoding if mime.lower() == CSV else "utf-8"
    try:
        readable = not charset or codecs.lookup(charset).name == codecs.lookup(expected).name
    except LookupError:
        readable = False
    if mime.lower() not in (JSON, CSV) or not readable:
        shown = content_type or "none"
        raise RequestError(415, f"Content-Type {shown!r} is not supported; send {EXPECTED}", "UNSUPPORTED_MEDIA_TYPE")
    return parse_json(body) if mime.lower() == JSON else parse_csv(body, scoring)


# --- scoring ----------------------------------------------------------------------------------------------------


def predictions(frame: pd.DataFrame, model, scoring: Scoring) -> list[dict[str, Any]]:
    """Each row's probability and label; a bad row or column is a RequestError naming it."""
    if frame.empty:
        raise RequestError(400, "no rows to score")
    try:
        check_columns(frame, scoring.required, SOURCE, "the model")
        features = clean_features(frame, scoring.numerical, scoring.categorical, SOURCE)
    except DataError as exc:
        raise RequestError(400, str(exc)) from None
    from mlflow.exceptions import MlflowException

    try:
        scored = score(features, pd.DataFrame(index=frame.index), model, scoring)
    except MlflowException as exc:  # the model's signature refused a value
        raise RequestError(400, f"{SOURCE}: rejected by the model's signature: {first_line(exc)[:300]}") from None
    prob_col, label_col = output_columns(scoring.target)
    return [
        {prob_col: float(p), label_col: label.item() if hasattr(label, "item") else label}
        for p, label in zip(scored[prob_col], scored[label_col], strict=True)
    ]


# --- the application: Starlette's routing, our body limit and one-line JSON errors --------------------------------


class OneLineJSON(JSONResponse):
    """A JSON body on one line, ended by a newline (what `curl` shows, and what clients read line by line)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, allow_nan=False).encode() + b"\n"


def error(status: int, code: str, message: str) -> OneLineJSON:
    return OneLineJSON({"error_code": code, "message": message}, status_code=status)


async def receive_body(request: Request, keep: int) -> tuple[bytes, int]:
    """The body's chunks while they add up to at most `keep` bytes, and the body's whole size. What passes `keep`
    is read and dropped: a client sends its whole body before it reads the answer, and a server that closes on
    unread bytes resets the connection under it, so the client would never see the error."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size <= keep:
            chunks.append(chunk)
    return b"".join(chunks), size


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The request body, refused (413) past the limit, holding at most the limit in memory. An over-long
    Content-Length is refused before a byte is read: at once when the client waits for `100 Continue` (it then
    sends nothing), else by dropping what it sends. (Starlette's own max_body_size answers in plain text.)"""
    declared = request.headers.get("content-length", "")
    over = declared.isdigit() and int(declared) > max_bytes
    body, size = b"", 0
    if not (over and request.headers.get("expect", "").lower() == "100-continue"):
        body, size = await receive_body(request, 0 if over else max_bytes)
    if over or size > max_bytes:
        raise RequestError(
            413,
            f"request body is {max(size, int(declared or 0))} bytes, over the limit of {max_bytes / 2**20:g} MB "
            "(--max-request-mb); send fewer rows per request",
            "REQUEST_LIMIT_EXCEEDED",
        )
    return body


async def drain(request: Request) -> None:
    """Read the body to its end, for an answer that needs none of it (the connection stays usable)."""
    with contextlib.suppress(ClientDisconnect):
        await receive_body(request, 0)


async def _refused(_request: Request, exc: RequestError) -> Response:
    return error(exc.status, exc.code, str(exc))


async def _not_found(request: Request, _exc: Exception) -> Response:
    await drain(request)
    return error(404, "NOT_FOUND", f"no such path {request.url.path!r}; POST /invocations scores rows")


async def _not_allowed(request: Request, exc: HTTPException) -> Response:
    await drain(request)
    # The route's methods, from the Allow header, without the HEAD that Starlette adds to a GET route.
    allowed = " or ".join(sorted(set((exc.headers or {})["Allow"].split(", ")) - {"HEAD"}))
    return error(405, "METHOD_NOT_ALLOWED", f"{request.url.path} takes {allowed}, not {request.method}")


async def _gone(_request: Request, _exc: Exception) -> Response:
    return Response(status_code=400)  # the client went away before sending its whole request: nobody reads this


class App(Starlette):
    """The scoring server (run by uvicorn): Starlette's routing around one loaded model."""

    def __init__(self, model, scoring: Scoring, max_bytes: int, model_uri: str = "") -> None:
        self.model, self.scoring, self.max_bytes, self.model_uri = model, scoring, max_bytes, model_uri
        routes = [
            Route("/ping", self.ok, methods=["GET"]),
            Route("/health", self.ok, methods=["GET"]),
            Route("/version", self.version, methods=["GET"]),
            Route("/invocations", self.invocations, methods=["POST"]),
        ]
        handlers = {RequestError: _refused, ClientDisconnect: _gone, 404: _not_found, 405: _not_allowed}
        super().__init__(routes=routes, exception_handlers=handlers)
        self.router.redirect_slashes = False  # /ping/ is no such path, as before, not a redirect

    async def ok(self, request: Request) -> Response:
        await drain(request)
        return OneLineJSON({"status": "ok"})

    async def version(self, request: Request) -> Response:
        from mlflow.version import VERSION

        await drain(request)
        return OneLineJSON({"mlflow": VERSION, "model": self.model_uri})

    async def invocations(self, request: Request) -> Response:
        try:
            body = await read_body(request, self.max_bytes)
            frame = parse(body, request.headers.get("content-type", ""), self.scoring)
            rows = await run_in_threadpool(predictions, frame, self.model, self.scoring)
        except (RequestError, ClientDisconnect):
            raise
        except Exception:  # the details are the server's (its log), the client gets one line
            log.exception("%s %s failed", request.method, request.url.path)
            return error(500, "INTERNAL_ERROR", "the model failed; see the server log")
        return OneLineJSON({"predictions": rows})


# --- command line ----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    from churn.cli import run_cli
    from churn.config import load_params

    parser = argparse.ArgumentParser(prog="python -m churn.tools.serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model URI (default: models:/<register.model_name>@champion)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=5001, help="port (default: 5001)")
    parser.add_argument("--max-request-mb", type=float, default=DEFAULT_MAX_MB, help="largest request body in MB")
    parser.add_argument("--threshold", type=float, help="label threshold (default: the model's)")
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    args = parser.parse_args(argv)

    def _main() -> None:
        import uvicorn

        from churn.tools.predict import load_model, scoring_of

        if args.max_request_mb <= 0:
            raise ChurnError(f"--max-request-mb must be > 0, got {args.max_request_mb:g}")
        if args.threshold is not None and not 0 < args.threshold < 1:
            raise ChurnError(f"--threshold must be in (0, 1), got {args.threshold}")
        params = load_params(args.params)
        uri = args.model or f"models:/{params.register.model_name}@champion"
        model = load_model(uri, params.mlflow.tracking_uri)
        app = App(model, scoring_of(model, params, args.threshold), int(args.max_request_mb * 2**20), uri)
        where = f"http://{args.host}:{args.port}/invocations"
        log.info("serving %s on %s (requests up to %g MB)", uri, where, args.max_request_mb)
        uvicorn.run(app, host=args.host, port=args.port, lifespan="off", log_level="info", access_log=False)

    run_cli(_main)


if __name__ == "__main__":
    main()
