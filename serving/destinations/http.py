"""Calling a destination over HTTP, and what its answer means for a retry.

Any 2xx is success; 408, 429, 5xx, a timeout or a broken connection can be
retried (``Retry-After`` honoured, in seconds or as an HTTP date); any other
4xx means the receiver refuses the request: sending it again would not help.
An answer's body is never kept in an error: it may hold personal data.
"""

from __future__ import annotations

import email.utils
import re
import time
from typing import Any

import httpx

MEMBER = re.compile(r"/[0-9a-f]{32}(?=/|$)")  # a Mailchimp member id: the MD5 of an email address


class Retryable(Exception):
    """An attempt that failed but may succeed later (after ``retry_after`` seconds, if the receiver said)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Refused(Exception):
    """The receiver refused the payload itself: sending it again would not help."""


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` in seconds from now (given as seconds or an HTTP date).

    >>> retry_after("2"), retry_after(None), retry_after("soon")
    (2.0, None, None)
    >>> retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0)
    10.0
    """
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


async def call(client: httpx.AsyncClient, method: str, url: str, timeout_s: float, *,
               ok: tuple[int, ...] = (), **kwargs: Any) -> httpx.Response:  # fmt: skip
    """One request; its answer when it succeeded (or its status is in ``ok``),
    else :class:`Retryable` or :class:`Refused`."""
    try:
        r = await client.request(method, url, timeout=timeout_s, **kwargs)
    except httpx.TimeoutException:
        raise Retryable(f"no answer within {timeout_s} s") from None
    except httpx.TransportError as exc:
        raise Retryable(f"connection failed: {type(exc).__name__}") from None
    if r.is_success or r.status_code in ok:
        return r
    where = f"{method} {MEMBER.sub('/{member}', httpx.URL(url).path)}"  # no subscriber hash in a reason or a log
    if r.status_code in (408, 429) or r.status_code >= 500:
        raise Retryable(f"{where}: HTTP {r.status_code}", retry_after(r.headers.get("retry-after")))
    raise Refused(
        f"{where}: HTTP {r.status_code} ({len(r.content)} bytes; the body is not kept: it may hold personal data)"
    )
