"""Real clients get in: the official Segment and RudderStack Python SDKs
(RudderStack gzipping, its default) against a real ``segflow serve``; the
requests analytics-next makes from a browser (preflight with ``Origin``,
then ``text/plain`` bodies with the ``writeKey``) with CORS for the allowed
origin only; the single screen, alias and group routes; and a gzip bomb
refused with 413 at no memory cost."""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import rudderstack.analytics as rudder
import segment.analytics as segment

from features.events import format_ms
from tests.servers import READ, WRITE, Server

SOURCE = "src_" + "s" * 24
SITE, OTHER = "https://shop.example", "https://evil.example"
T0 = 1_790_000_000_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    state = tmp_path_factory.mktemp("clients") / "state"
    env = {"SEGFLOW_SOURCE_KEYS": SOURCE, "SEGFLOW_SOURCE_ORIGINS": SITE}
    s = Server(state, clock="wall", env=env).start()
    try:
        yield s
    finally:
        s.stop()


def profile(server: Server, user: str) -> dict:
    r = httpx.get(f"{server.url}/v1/profiles/{user}", auth=READ, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def export(server: Server, user: str) -> dict:
    r = httpx.get(f"{server.url}/v1/profiles/{user}/export", auth=WRITE, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def logged(server: Server, user: str) -> list[dict]:
    return export(server, user)["events"]


@pytest.mark.parametrize("sdk", [segment, rudder], ids=["segment", "rudderstack"])
def test_the_official_python_sdks_round_trip(server: Server, sdk: object) -> None:
    name = sdk.__name__.split(".")[0]
    user, errors = f"{name}-user", []
    client = sdk.Client(  # type: ignore[attr-defined]
        write_key=WRITE[0], host=server.url, sync_mode=True, max_retries=0, on_error=lambda e, _: errors.append(e)
    )
    assert client.gzip is (name == "rudderstack")  # each SDK as it comes: RudderStack gzips
    client.identify(user, {"email": f"{name}@example.com", "plan": "gold"})
    client.track(user, "Product Viewed", {"product_id": "p1", "category": "shoes", "price": 12.5})
    client.track(user, "Product Added", {"product_id": "p1", "category": "shoes", "price": 12.5})
    client.page(user, "Shoes", "Catalog", {"url": "https://shop.example/shoes"})
    client.screen(user, "Home", "App")
    client.group(user, "company-1", {"name": "ACME", "industry": "retail"})
    client.alias(f"{name}-previous", user)
    client.flush()
    assert errors == []
    kinds = sorted(e["type"] for e in logged(server, user))
    assert kinds == ["alias", "group", "identify", "page", "screen", "track", "track"]
    shown = profile(server, user)
    assert any(v for k, v in shown["features"].items() if "cart" in k or "add_to_cart" in k)
    traits = shown["traits"]  # identify's and group's, the email as its pseudonym
    assert traits["plan"] == "gold" and traits["industry"] == "retail" and traits["email"].startswith("pii_")
    assert export(server, user)["contact"]["email"] == f"{name}@example.com"  # sealed in the vault, for admins
    text = json.dumps(logged(server, user)) + json.dumps(shown)
    assert f"{name}@example.com" not in text


def _analytics_next(event_type: str, user: str, mid: str) -> str:
    """A body as analytics-next's Segment.io destination builds it: the writeKey inside, sent as text/plain."""
    return json.dumps({
        "type": event_type, "event": "Product Viewed", "userId": user, "anonymousId": "anon-1", "messageId": mid,
        "timestamp": format_ms(T0), "sentAt": format_ms(T0), "properties": {"product_id": "p9"},
        "context": {"library": {"name": "analytics.js", "version": "next-1.70.0"}, "page": {"url": SITE + "/p9"}},
        "integrations": {}, "writeKey": SOURCE,
    })  # fmt: skip


def test_a_browser_gets_in_through_the_short_routes_with_cors_for_its_site_only(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        preflight = {"Origin": SITE, "Access-Control-Request-Method": "POST",
                     "Access-Control-Request-Headers": "content-type"}  # fmt: skip
        r = http.options("/v1/t", headers=preflight)
        assert r.status_code == 204 and r.headers["access-control-allow-origin"] == SITE
        assert "POST" in r.headers["access-control-allow-methods"]
        r = http.options("/v1/t", headers={**preflight, "Origin": OTHER})
        assert r.status_code == 403 and r.json()["code"] == "forbidden"
        assert "access-control-allow-origin" not in r.headers
        for path in ("/v1/admin/suppressions", "/v1/profiles/u1", "/v1/nowhere"):  # not for browsers: no CORS
            r = http.options(path, headers=preflight)
            assert "access-control-allow-origin" not in r.headers, path

        for path, kind in (("/v1/t", "track"), ("/v1/p", "page")):
            r = http.post(path, content=_analytics_next(kind, "browser-user", f"b-{kind}"),
                          headers={"content-type": "text/plain", "origin": SITE})  # fmt: skip
            assert r.status_code == 200, r.text
            assert r.headers["access-control-allow-origin"] == SITE
        batch = json.dumps({"batch": [json.loads(_analytics_next("track", "browser-user", "b-b"))], "writeKey": SOURCE})
        r = http.post("/v1/b", content=batch, headers={"content-type": "text/plain", "origin": SITE})
        assert r.status_code == 200 and r.json()["accepted"] == 1

        r = http.post("/v1/t", content=_analytics_next("track", "browser-user", "b-x"),
                      headers={"content-type": "text/plain", "origin": OTHER})  # fmt: skip
        assert r.status_code == 403 and "access-control-allow-origin" not in r.headers  # the key is bound to SITE
        for key in (READ[0], WRITE[0]):  # only a source key may sit in a body
            body = _analytics_next("track", "browser-user", "b-y").replace(SOURCE, key)
            r = http.post("/v1/t", content=body, headers={"content-type": "text/plain", "origin": SITE})
            assert r.status_code == 403 and r.json()["code"] == "forbidden", r.text
            assert r.headers["access-control-allow-origin"] == SITE  # the page can read why
    assert sorted(e["messageId"] for e in logged(server, "browser-user")) == ["b-b", "b-page", "b-track"]


def test_deflate_bodies_are_read_and_broken_or_unknown_encodings_refused(server: Server) -> None:
    body = json.dumps({"userId": "deflated", "event": "Product Viewed", "messageId": "d1", "timestamp": format_ms(T0)})
    with httpx.Client(base_url=server.url, timeout=30, auth=WRITE) as http:
        raw = zlib.compress(body.encode())[2:-4]
        for encoded in (zlib.compress(body.encode()), raw, iter([raw[:1], raw[1:]])):  # zlib-wrapped, raw, trickled
            r = http.post("/v1/track", content=encoded, headers={"content-encoding": "deflate"})
            assert r.status_code == 200, r.text
        two_members = gzip.compress(body.encode()[:20]) + gzip.compress(body.encode()[20:])
        r = http.post("/v1/track", content=two_members, headers={"content-encoding": "gzip"})
        assert r.status_code == 200 and r.json()["duplicates"] == 1  # the same event, whole
        r = http.post("/v1/track", content=b"not gzip at all", headers={"content-encoding": "gzip"})
        assert r.status_code == 400 and "not valid gzip" in r.json()["message"]
        r = http.post("/v1/track", content=gzip.compress(body.encode())[:-10], headers={"content-encoding": "gzip"})
        assert r.status_code == 400 and "ends before" in r.json()["message"]
        r = http.post("/v1/track", content=body, headers={"content-encoding": "br"})
        assert r.status_code == 415 and r.json()["code"] == "unsupported_media_type"
    assert [e["messageId"] for e in logged(server, "deflated")] == ["d1"]


def _peak_rss_kb(pid: int) -> int:
    """The process's peak resident memory so far (memory freed after a spike still shows)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_a_gzip_bomb_is_refused_with_413_at_no_memory_cost(server: Server) -> None:
    inflated = 400 * 1024 * 1024
    z = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = b"\x00" * (1024 * 1024)
    bomb = b"".join(z.compress(chunk) for _ in range(inflated // len(chunk))) + z.flush()
    assert 300_000 < len(bomb) < 500 * 1024  # about 400 KB on the wire: under the plain batch limit
    assert server.proc is not None
    before = _peak_rss_kb(server.proc.pid)
    with httpx.Client(base_url=server.url, timeout=60, auth=WRITE) as http:
        for path in ("/v1/batch", "/v1/b"):
            r = http.post(path, content=bomb, headers={"content-encoding": "gzip", "content-type": "application/json"})
            assert r.status_code == 413 and r.json()["code"] == "payload_too_large", r.text
        assert http.get("/healthz").status_code == 200
    assert _peak_rss_kb(server.proc.pid) - before < 50 * 1024
