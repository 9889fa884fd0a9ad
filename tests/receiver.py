"""A local webhook receiver: a real HTTP server on 127.0.0.1 that verifies
segflow's signatures, records what it receives, and fails on demand.

Each endpoint (any path) answers 200 unless told otherwise: a script of
answers is played one per request, then 200 again::

    receiver.script("/hooks/crm", [fail(500)] * 3 + [fail(429, retry_after=2)] * 2)
    receiver.script("/hooks/slow", [slow(3.0)])  # answer after 3 s (a timeout for a shorter client)

Used by the tests and by ``make run`` (``python -m tests.receiver``); over
HTTP, ``POST /_control/script`` sets a script and ``GET /_control/received``
gives what was received.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson

from serving.destinations.signing import HEADER, SignatureError, Verifier

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Answer:
    status: int = 200
    retry_after: float | None = None
    delay_s: float = 0.0


def fail(status: int, retry_after: float | None = None) -> Answer:
    return Answer(status, retry_after)


def slow(delay_s: float, status: int = 200) -> Answer:
    return Answer(status, None, delay_s)


@dataclass
class Request:
    """One request as it arrived, and what it was answered."""

    endpoint: str
    received_ms: int
    answered: int
    keys: list[str]
    signature: str  # "ok", or why it was refused


@dataclass
class Received:
    """Everything received, guarded by one lock."""

    requests: list[Request] = field(default_factory=list)
    deliveries: list[dict[str, Any]] = field(default_factory=list)  # accepted ones, each with "received_ms"
    in_flight: Counter[str] = field(default_factory=Counter)
    max_in_flight: Counter[str] = field(default_factory=Counter)


class Receiver:
    def __init__(self, secret: str, host: str = "127.0.0.1", port: int = 0) -> None:
        self.secret = secret
        self._verifier = Verifier(secret)
        self._lock = threading.Lock()
        self._scripts: dict[str, list[Answer]] = {}
        self.received = Received()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                if self.path.startswith("/_control/received"):
                    self._answer(200, orjson.dumps(receiver.summary()))
                else:
                    self._answer(404, b"{}")

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if self.path.startswith("/_control/script"):
                    spec = orjson.loads(body)
                    receiver.script(spec["endpoint"], [Answer(**a) for a in spec["answers"]])
                    self._answer(200, b"{}")
                    return
                status, headers = receiver._take(self.path, body, self.headers.get(HEADER))
                self._answer(status, b"{}", headers)

            def _answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                try:
                    self.send_response(status)
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:  # the client gave up (its timeout): nothing to answer
                    pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.url = f"http://{host}:{self._server.server_address[1]}"
        self._thread: threading.Thread | None = None

    # -- control -----------------------------------------------------------------

    def script(self, endpoint: str, answers: Sequence[Answer]) -> None:
        with self._lock:
            self._scripts[endpoint] = list(answers)

    def start(self) -> Receiver:
        self._thread = threading.Thread(target=self._server.serve_forever, name="receiver", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def keys(self, endpoint: str | None = None) -> list[str]:
        with self._lock:
            return [d["key"] for d in self.received.deliveries if endpoint is None or d["endpoint"] == endpoint]

    def summary(self) -> dict[str, Any]:
        with self._lock:
            r = self.received
            decided = sorted(d["received_ms"] - d["decided_ms"] for d in r.deliveries)  # decision to receipt
            instant = sorted(d["received_ms"] - d["at_ms"] for d in r.deliveries)  # event receipt or due instant
            return {
                "requests": len(r.requests),
                "deliveries": len(r.deliveries),
                "unique": len({d["key"] for d in r.deliveries}),
                "refused_signatures": sum(q.signature != "ok" for q in r.requests),
                "latency_ms_p50": _quantile(decided, 0.5),
                "latency_ms_p99": _quantile(decided, 0.99),
                "instant_latency_ms_p50": _quantile(instant, 0.5),
                "instant_latency_ms_p99": _quantile(instant, 0.99),
                "first_ms": min((d["received_ms"] for d in r.deliveries), default=None),
                "last_ms": max((d["received_ms"] for d in r.deliveries), default=None),
                "by_segment": Counter(f"{d['segment']}:{d['kind']}" for d in r.deliveries),
            }

    # -- receiving -----------------------------------------------------------------

    def _take(self, endpoint: str, body: bytes, signature: str | None) -> tuple[int, dict[str, str]]:
        arrived = time.time_ns() // 1_000_000
        with self._lock:
            self.received.in_flight[endpoint] += 1
            flight = self.received.in_flight[endpoint]
            self.received.max_in_flight[endpoint] = max(self.received.max_in_flight[endpoint], flight)
            script = self._scripts.get(endpoint)
            answer = script.pop(0) if script else Answer()
            try:
                self._verifier.check(body, signature)
                verdict = "ok"
            except SignatureError as exc:
                verdict = str(exc)
        try:
            if answer.delay_s:
                time.sleep(answer.delay_s)
            deliveries = orjson.loads(body).get("deliveries", []) if verdict == "ok" else []
            status = answer.status if verdict == "ok" else 401
            with self._lock:
                self.received.requests.append(
                    Request(endpoint, arrived, status, [d["key"] for d in deliveries], verdict)
                )
                if 200 <= status < 300:
                    self.received.deliveries.extend(
                        {**d, "endpoint": endpoint, "received_ms": arrived} for d in deliveries
                    )
            headers = {"retry-after": f"{answer.retry_after:g}"} if answer.retry_after is not None else {}
            return status, headers
        finally:
            with self._lock:
                self.received.in_flight[endpoint] -= 1


class Spawned:
    """``python -m tests.receiver`` in a child process the caller owns (so the
    receiver's work does not share an interpreter with the server measured):
    ``with Spawned(secret) as r: r.url, r.summary()``."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.url = ""
        self.proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> Spawned:
        cmd = [sys.executable, "-m", "tests.receiver", "--secret", self.secret]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        if not self.url:
            raise RuntimeError("the webhook receiver did not start")
        return self

    def summary(self) -> dict[str, Any]:
        return dict(orjson.loads(urllib.request.urlopen(self.url + "/_control/received", timeout=30).read()))

    def __exit__(self, *_: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)


def _quantile(sorted_values: list[int], q: float) -> int | None:
    return sorted_values[min(int(len(sorted_values) * q), len(sorted_values) - 1)] if sorted_values else None


def main() -> None:
    parser = argparse.ArgumentParser(description="a local webhook receiver for segflow's tests and demo")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--secret", required=True)
    args = parser.parse_args()
    receiver = Receiver(args.secret, port=args.port).start()
    print(receiver.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        receiver.stop()


if __name__ == "__main__":
    main()
