"""Webhook signatures: any body signed verifies; any change to it, another
secret, a stale timestamp or a request sent again is refused; the local
receiver refuses such a delivery over HTTP."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from serving.destinations.signing import HEADER, SignatureError, Verifier, sign, verify
from tests.receiver import Receiver

NOW = 1_800_000_000
secrets_ = st.text(min_size=1, max_size=40)


@given(secret=secrets_, body=st.binary(max_size=512))
def test_a_signed_body_verifies(secret: str, body: bytes) -> None:
    assert verify(secret, body, sign(secret, body, timestamp=NOW), now=NOW + 10) == NOW


@given(secret=secrets_, body=st.binary(min_size=1, max_size=512), data=st.data())
def test_a_tampered_body_is_refused(secret: str, body: bytes, data: st.DataObject) -> None:
    i = data.draw(st.integers(0, len(body) - 1))
    flip = data.draw(st.integers(1, 255))
    tampered = body[:i] + bytes([body[i] ^ flip]) + body[i + 1 :]
    with pytest.raises(SignatureError, match="does not match"):
        verify(secret, tampered, sign(secret, body, timestamp=NOW), now=NOW)


@given(secret=secrets_, other=secrets_, body=st.binary(max_size=64))
def test_another_secret_is_refused(secret: str, other: str, body: bytes) -> None:
    if secret != other:
        with pytest.raises(SignatureError):
            verify(other, body, sign(secret, body, timestamp=NOW), now=NOW)


@given(age=st.integers(301, 10**6))
def test_a_stale_or_future_timestamp_is_refused(age: int) -> None:
    header = sign("s", b"{}", timestamp=NOW)
    for now in (NOW + age, NOW - age):
        with pytest.raises(SignatureError, match="beyond"):
            verify("s", b"{}", header, now=now)


def test_malformed_headers_are_refused() -> None:
    for header in (None, "", "t=abc,v1=00", "v1=00", f"t={NOW}", f"t={NOW},v1=00"):
        with pytest.raises(SignatureError):
            verify("s", b"{}", header, now=NOW)


def test_a_request_sent_again_is_a_replay_but_a_retry_is_not() -> None:
    verifier = Verifier("s")
    header = sign("s", b"{}", timestamp=NOW)
    verifier.check(b"{}", header, now=NOW)
    with pytest.raises(SignatureError, match="replay"):
        verifier.check(b"{}", header, now=NOW + 1)
    verifier.check(b"{}", sign("s", b"{}", timestamp=NOW), now=NOW + 1)  # the same body, a new attempt
    for respelled in (header + ",v1=00", " " + header, header.replace(",", " ,"), header + ",x=1"):
        with pytest.raises(SignatureError, match="replay"):
            verifier.check(b"{}", respelled, now=NOW + 2)
    t, n, v1 = (part.split("=", 1)[1] for part in header.split(","))
    for doubled in (f"t={t},t={t},n={n},v1={v1}", f"t={t},n={n},n=zz,v1={v1}", f"t=\u00b2,n={n},v1={v1}"):
        with pytest.raises(SignatureError, match="malformed"):
            verifier.check(b"{}", doubled, now=NOW + 2)


def test_the_receiver_refuses_tampered_and_replayed_deliveries() -> None:
    body = b'{"deliveries": [{"key": "k1"}]}'
    with Receiver("s") as receiver, httpx.Client(base_url=receiver.url) as http:
        header = sign("s", body)
        assert http.post("/hook", content=body, headers={HEADER: header}).status_code == 200
        assert http.post("/hook", content=body, headers={HEADER: header}).status_code == 401  # replayed
        tampered = body.replace(b"k1", b"k2")
        assert http.post("/hook", content=tampered, headers={HEADER: sign("x", tampered)}).status_code == 401
        assert http.post("/hook", content=tampered, headers={HEADER: header}).status_code == 401
    assert receiver.keys() == ["k1"]
