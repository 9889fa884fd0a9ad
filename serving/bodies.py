"""Request bodies as clients send them: plain, or ``gzip``- or
``deflate``-encoded (RudderStack's SDKs gzip by default), read as they
arrive and refused with 413 as soon as the *inflated* body passes its
limit. Inflation is bounded chunk by chunk (``max_length``), so a
compression bomb costs no more memory than the limit itself.

>>> import zlib, gzip
>>> Inflater("gzip").feed(gzip.compress(b'{"a": ') + gzip.compress(b'1}'), 100)  # two members
b'{"a": 1}'
>>> Inflater("deflate").feed(zlib.compress(b"[]"), 100)
b'[]'
"""

from __future__ import annotations

import zlib
from typing import Any

from fastapi import HTTPException, Request, status
from starlette.requests import ClientDisconnect

GZIP_MAGIC = b"\x1f\x8b"


class BodyTooLarge(Exception):
    pass


class BadEncoding(ValueError):
    pass


class Inflater:
    """Inflates one body's chunks, never more than asked for at once. Deflate
    is zlib-wrapped (as HTTP means it) or raw (as some clients send it),
    told apart by its first two bytes; gzip may hold several members."""

    def __init__(self, encoding: str) -> None:
        if encoding in ("gzip", "x-gzip"):
            self.encoding = "gzip"
        elif encoding == "deflate":
            self.encoding = "deflate"
        else:
            raise BadEncoding(f"unsupported Content-Encoding {encoding!r}; segflow accepts gzip, deflate, identity")
        self._z: Any = None  # the decoder of the current stream (member)
        self._buf = b""  # bytes not decoded yet: too few to tell what starts there

    def _start(self, data: bytes) -> bool:
        """A decoder for the stream starting ``data`` (False: too few bytes to tell yet)."""
        if len(data) < 2:
            return False
        if self.encoding == "deflate":
            wrapped = data[0] & 0x0F == 8 and ((data[0] << 8) | data[1]) % 31 == 0
            self._z = zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
        else:
            self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
        return True

    def feed(self, chunk: bytes, room: int) -> bytes:
        """The inflated bytes of a chunk; :class:`BodyTooLarge` past ``room``."""
        data, self._buf = self._buf + chunk, b""
        out = bytearray()
        while data:
            if self._z is not None and self._z.eof:  # after a whole stream: another gzip member, or NUL padding
                if self.encoding == "deflate" or not GZIP_MAGIC.startswith(data[:2]):
                    if data.strip(b"\x00"):
                        raise BadEncoding(f"the body has bytes after its {self.encoding} data")
                    return bytes(out)
                self._z = None
            if self._z is None and not self._start(data):
                self._buf = data
                return bytes(out)
            try:
                out += self._z.decompress(data, room + 1 - len(out))
            except zlib.error as exc:
                raise BadEncoding(f"the body is not valid {self.encoding} data ({exc})") from None
            if len(out) > room or self._z.unconsumed_tail:
                raise BodyTooLarge
            data = self._z.unused_data if self._z.eof else b""
        return bytes(out)

    def finish(self) -> None:
        """The body ended: its data must have."""
        if self._z is None or not self._z.eof or (self._buf and self._buf.strip(b"\x00")):
            raise BadEncoding(f"the {self.encoding} body ends before its data does")


def _too_large(limit: int) -> HTTPException:
    return HTTPException(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, f"body over the {limit}-byte limit")


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, inflated if encoded, refused with 413 as soon as it
    passes ``limit`` (a declared length is believed first; a chunked or
    encoded body is counted as it comes), 415 for an encoding segflow does
    not read, 400 for a broken one."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    try:
        inflater = None if encoding in ("", "identity") else Inflater(encoding)
    except BadEncoding as exc:
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, str(exc)) from None
    body = bytearray()
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > (limit if inflater is None else limit + limit // 500 + 1024):  # room for the encoding's own
                raise _too_large(limit)
            body += chunk if inflater is None else inflater.feed(chunk, limit - len(body))
            if len(body) > limit:
                raise _too_large(limit)
        if inflater is not None and received:
            inflater.finish()
    except ClientDisconnect:  # dropped at its deadline, or gone: nothing was accepted
        raise HTTPException(status.HTTP_408_REQUEST_TIMEOUT, "the body did not arrive in time") from None
    except BodyTooLarge:
        raise _too_large(limit) from None
    except BadEncoding as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from None
    return bytes(body)
