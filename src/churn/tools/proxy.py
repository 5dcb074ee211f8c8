"""A counting HTTP proxy: forwards every request to an MLflow tracking server and records what it was, so tests
and the bench can hold a client to its request budget (`python -m churn.tools.proxy --help`).

Each record is the method, the path, the run or model id the request names (from its JSON body or query) and
the answer's status. Requests are forwarded one connection each, keep-alive towards the client.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import logging
import threading
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

log = logging.getLogger(__name__)

HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}
ID_KEYS = ("run_id", "run_uuid", "model_id", "name", "experiment_id")


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # without the query
    ids: dict[str, str]  # run_id, model_id, name ... as the request names them
    status: int
    created: str = ""  # the run id a runs/create answered with

    @property
    def run_id(self) -> str:
        """The run the request names: in its body or query, or in an artifact path (`.../<run id>/artifacts/`)."""
        if self.ids.get("run_id") or self.ids.get("run_uuid"):
            return self.ids.get("run_id") or self.ids["run_uuid"]
        parts = self.path.split("/")
        if "artifacts" in parts[5:]:
            index = parts.index("artifacts", 5)
            return parts[index - 1] if _is_id(parts[index - 1]) else ""
        return ""

    @property
    def endpoint(self) -> str:
        """`POST runs/create`, `PUT artifacts`: the API call, without prefixes and ids."""
        path = self.path
        for prefix in ("/api/2.0/mlflow-artifacts/artifacts", "/ajax-api/2.0/mlflow-artifacts/artifacts"):
            if path.startswith(prefix):
                return f"{self.method} artifacts"
        for prefix in ("/api/2.0/mlflow/", "/api/3.0/mlflow/", "/ajax-api/2.0/mlflow/"):
            if path.startswith(prefix):
                path = path.removeprefix(prefix)
                break
        parts = [p for p in path.split("/") if p and not _is_id(p)]
        return f"{self.method} {'/'.join(parts)}"

    @property
    def is_upload(self) -> bool:
        return self.endpoint == "PUT artifacts"


def _is_id(part: str) -> bool:
    """A run, model or trace id in a path (`0f3c...`, `m-0f3c...`), not an endpoint's name."""
    digits = part.removeprefix("m-").removeprefix("tr-").replace("-", "")
    return len(digits) >= 16 and all(c in "0123456789abcdef" for c in digits.lower())


def _ids(body: bytes, query: str) -> dict[str, str]:
    found = {k: v[0] for k, v in urllib.parse.parse_qs(query).items() if k in ID_KEYS and v}
    if body[:1] == b"{":
        try:
            data = json.loads(body)
        except ValueError:
            return found
        found.update({k: str(data[k]) for k in ID_KEYS if isinstance(data.get(k), (str, int))})
    return found


class CountingProxy:
    """`with CountingProxy(upstream) as proxy:` point clients at `proxy.url`; `proxy.requests` is what they sent."""

    def __init__(self, upstream: str, host: str = "127.0.0.1", port: int = 0) -> None:
        parsed = urllib.parse.urlsplit(upstream)
        self.upstream = (parsed.hostname or "127.0.0.1", parsed.port or 80)
        self._records: list[Request] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, port), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="counting-proxy", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def requests(self) -> list[Request]:
        with self._lock:
            return list(self._records)

    def reset(self) -> list[Request]:
        """The requests so far, and start counting again."""
        with self._lock:
            records, self._records = self._records, []
        return records

    def __enter__(self) -> CountingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _record(self, request: Request) -> None:
        with self._lock:
            self._records.append(request)

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args) -> None:
                log.debug(format, *args)

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while size := int(self.rfile.readline().strip() or b"0", 16):
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    self.rfile.readline()
                    return b"".join(chunks)
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _forward(self) -> None:
                body = self._body()
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
                headers["Content-Length"] = str(len(body))
                upstream = http.client.HTTPConnection(*proxy.upstream, timeout=300)
                try:
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    answer = upstream.getresponse()
                    payload = answer.read()
                    status, answer_headers = answer.status, answer.getheaders()
                finally:
                    upstream.close()
                path, _, query = self.path.partition("?")
                created = ""
                if path.endswith("/runs/create") and status == 200:
                    with contextlib.suppress(ValueError, KeyError, TypeError):
                        created = json.loads(payload)["run"]["info"]["run_id"]
                proxy._record(Request(self.command, path, _ids(body, query), status, created))
                self.send_response(status)
                for key, value in answer_headers:
                    if key.lower() not in HOP_HEADERS | {"content-length"}:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _forward

        return Handler


def summary(requests: list[Request]) -> dict[str, int]:
    """Requests per endpoint, most frequent first."""
    counts: dict[str, int] = {}
    for request in requests:
        counts[request.endpoint] = counts.get(request.endpoint, 0) + 1
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def iter_lines(requests: list[Request]) -> Iterator[str]:
    for request in requests:
        ids = " ".join(f"{k}={v}" for k, v in request.ids.items())
        yield f"{request.status} {request.endpoint} {ids}".rstrip()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m churn.tools.proxy", description=__doc__.split("\n\n")[0])
    parser.add_argument("upstream", help="the tracking server, e.g. http://127.0.0.1:5000")
    parser.add_argument("--port", type=int, default=5002, help="port to listen on, on 127.0.0.1 (5002)")
    args = parser.parse_args(argv)
    from churn.cli import run_cli

    run_cli(lambda: _serve(args.upstream, args.port))


def _serve(upstream: str, port: int) -> None:
    import time

    with CountingProxy(upstream, port=port) as proxy:
        log.info("counting requests to %s on %s; Ctrl-C prints the counts", upstream, proxy.url)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            for endpoint, count in summary(proxy.requests).items():
                log.info("%5d  %s", count, endpoint)


if __name__ == "__main__":
    main()
