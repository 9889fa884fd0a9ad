"""Connections that cannot hold the server: a deadline to receive each request,
and a cap on connections still sending one.

uvicorn's keep-alive timer is reset by every byte, so a client that sends a
header a byte at a time (slowloris) or never finishes its body would hold a
connection, a file descriptor and memory for ever. Here a connection that is
receiving a request (from its first byte, or from the moment it connects,
until the request is complete) must finish within ``request_deadline_s`` or
is dropped; and when more than ``max_pending_requests`` connections are
receiving at once, the one that has been at it longest is dropped, so a flood
of slow connections can never keep out a quick request such as ``/healthz``.
Time spent by the app on a complete request does not count.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class Receiving:
    """The connections receiving a request, oldest first, and how many were dropped."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.connections: OrderedDict[DeadlineProtocol, None] = OrderedDict()
        self.expired = 0
        self.evicted = 0

    def start(self, conn: DeadlineProtocol) -> None:
        self.connections[conn] = None
        self.connections.move_to_end(conn)
        while len(self.connections) > self.limit:
            oldest, _ = self.connections.popitem(last=False)
            self.evicted += 1
            oldest.drop()

    def stop(self, conn: DeadlineProtocol) -> None:
        self.connections.pop(conn, None)


class DeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a receive deadline per request."""

    deadline_s: float = 10.0
    receiving: Receiving = Receiving(1000)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._begin()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:
            self._begin()

    def on_message_complete(self) -> None:
        self._end()
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._end()
        super().connection_lost(exc)

    def _begin(self) -> None:
        self._deadline = self.loop.call_later(self.deadline_s, self._expire)
        self.receiving.start(self)

    def _end(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self.receiving.stop(self)

    def _expire(self) -> None:
        self._deadline = None
        self.receiving.expired += 1
        self.drop()

    def drop(self) -> None:
        """Close the connection (it was too slow, or the oldest of too many)."""
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self.receiving.stop(self)
        if not self.transport.is_closing():
            self.transport.close()


def deadline_protocol(deadline_s: float, max_pending: int) -> type[DeadlineProtocol]:
    """A protocol class for ``uvicorn.Config(http=...)`` with these limits."""
    return type(
        "SegflowHttpProtocol", (DeadlineProtocol,), {"deadline_s": deadline_s, "receiving": Receiving(max_pending)}
    )
