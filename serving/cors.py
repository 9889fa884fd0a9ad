"""CORS for the ingest routes only, so a shop's pages can send events from
the browser: the origins in ``source_origins`` and those any source key is
bound to. A preflight from one of them is answered (``POST``, the
``content-type`` and ``authorization`` headers); a preflight from any other
origin is refused with an error body and no CORS headers; an answer to an
allowed origin carries ``Access-Control-Allow-Origin`` (errors and 500s
too: this wraps everything). No other route ever gets CORS headers: admin
and read routes are not for browsers."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

INGEST = frozenset(
    f"/v1/{p}"
    for p in ("track", "page", "screen", "identify", "alias", "group", "batch", "t", "p", "s", "i", "a", "g", "b")
)
ALLOW_HEADERS = "content-type, authorization"
MAX_AGE_S = 600


def origins_of(settings_origins: Iterable[str], keys: Callable[[], Iterable[Iterable[str]]]) -> Callable[[], set[str]]:
    """The allowed origins, read again at each call (the keys file changes without a restart)."""
    fixed = set(settings_origins)
    return lambda: fixed.union(*keys())


class IngestCors:
    def __init__(self, app: ASGIApp, allowed: Callable[[], set[str]], refuse: Callable[[int, str], ASGIApp]) -> None:
        self.app = app
        self.allowed = allowed
        self.refuse = refuse  # an error answer in the API's shape

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in INGEST:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        if origin is None:
            await self.app(scope, receive, send)
            return
        allowed = origin in self.allowed()
        if scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            if not allowed:
                await self.refuse(403, f"origin {origin[:100]!r} may not send events here")(scope, receive, send)
                return
            await _preflight(origin)(scope, receive, send)
            return
        if not allowed:
            await self.app(scope, receive, send)
            return

        async def with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                out = MutableHeaders(scope=message)
                out["access-control-allow-origin"] = origin
                out.add_vary_header("Origin")
            await send(message)

        await self.app(scope, receive, with_cors)


def _preflight(origin: str) -> ASGIApp:
    async def answer(scope: Scope, receive: Receive, send: Send) -> None:
        headers = [
            (b"access-control-allow-origin", origin.encode("latin-1")),
            (b"access-control-allow-methods", b"POST"),
            (b"access-control-allow-headers", ALLOW_HEADERS.encode()),
            (b"access-control-max-age", str(MAX_AGE_S).encode()),
            (b"vary", b"Origin"),
            (b"content-length", b"0"),
        ]
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    return answer
