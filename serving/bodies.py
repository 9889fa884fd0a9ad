"""Request bodies as clients send them: plain, or ``gzip``- or
``deflate``-encoded (RudderStack's SDKs gzip by default), read as they
arrive and refused with 413 as soon as the *inflated* body passes its
limit. Inflation is bounded chunk by chunk (``max_length``), so a
compression bomb costs no more memory than the limit itself.

>>> import zlib, gzip
>>> Inflater("gzip").feed(gzip.compress(b'{"a": 1}'), 100)
b'{"a": 1}'
>>> Inflater("deflate").feed(zlib.compress(b"[]"), 100)
b'[]'
"""

from __future__ import annotations

import zlib

from fastapi import HTTPException, Request, status
from starlette.requests import ClientDisconnect

ENCODINGS = ("gzip", "x-gzip", "deflate", "identity")


class BodyTooLarge(Exception):
    pass


class BadEncoding(ValueError):
    pass


class Inflater:
    """Inflates one body's chunks, never more than asked for at once."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        if encoding in ("gzip", "x-gzip"):
            self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._z = zlib.decompressobj(zlib.MAX_WBITS)  # zlib-wrapped, as HTTP means it (raw deflate tried next)
        else:
            raise BadEncoding(f"unsupported Content-Encoding {encoding!r}; segflow accepts gzip, deflate, identity")
        self._raw_tried = False

    def feed(self, chunk: bytes, room: int) -> bytes:
        """The inflated bytes of a chunk, at most ``room + 1`` (one more than fits tells it is too large)."""
        try:
            out = self._z.decompress(chunk, room + 1)
        except zlib.error as exc:
            if self.encoding == "deflate" and not self._raw_tried:  # some clients send raw deflate
                self._raw_tried = True
                self._z = zlib.decompressobj(-zlib.MAX_WBITS)
                return self.feed(chunk, room)
            raise BadEncoding(f"the body is not valid {self.encoding} data ({exc})") from None
        if len(out) > room or self._z.unconsumed_tail:
            raise BodyTooLarge
        return out

    def finish(self) -> bytes:
        if not self._z.eof:
            raise BadEncoding(f"the {self.encoding} body ends before its data does")
        if self._z.unused_data.strip(b"\x00"):
            raise BadEncoding(f"the body has bytes after its {self.encoding} data")
        return b""


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
            if received > limit:  # an encoded body is never larger than what it holds
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
