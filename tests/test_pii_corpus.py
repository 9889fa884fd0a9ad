"""One personal-data policy, tested on a corpus: over a hundred cases built
with Faker in five locales and by hand, sent to a real ``segflow serve``
(Redis store) as identify and track calls, good and refused. Then every file
under the state directory (decompressed), every Redis value of the service,
every response and the server's log are searched: no raw value may be found."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import redis
from faker import Faker

from features.events import format_ms
from serving.server import free_port

ROOT = Path(__file__).resolve().parent.parent
ADMIN, READ = "corpus-admin-key", "corpus-read-key"
LOCALES = ("en_US", "de_DE", "fr_FR", "ja_JP", "pt_BR")
T0 = 1_788_775_200_000


def faker_cases() -> list[dict[str, Any]]:
    """Sixteen cases a locale: each a list of payloads and the raw values none may leak."""
    cases = []
    for locale in LOCALES:
        fake = Faker(locale)
        fake.seed_instance(11)
        for i in range(16):
            email, phone, ip4, ip6 = fake.email(), fake.phone_number(), fake.ipv4_public(), fake.ipv6()
            first, last = fake.first_name(), fake.last_name()
            full = f"{first} {last}"
            street = fake.street_address()
            uid = f"{locale}-{i}"
            shape = i % 8
            if shape == 0:
                born = fake.date_of_birth().isoformat()
                traits = {"email": email, "phone": phone, "firstName": first, "last_name": last, "full_name": full,
                          "address": {"street": street, "city": fake.city()}, "birthday": born}  # fmt: skip
                payloads = [{"type": "identify", "userId": uid, "traits": traits}]
                secrets = [email, phone, full, street]
            elif shape == 1:
                props = {"shipping_phone": phone, "billing_address": street, "client_ip": ip4, "ipv6": ip6,
                         "mobile_phone": phone, "fullName": full, "price": 12}  # fmt: skip
                payloads = [{"type": "track", "userId": uid, "event": "Order Completed", "properties": props}]
                secrets = [phone, street, ip4, ip6, full]
            elif shape == 2:
                note = f"Please call {phone} or write to {email}; seen from {ip4} and {ip6}."
                payloads = [{"type": "track", "userId": uid, "event": "Note Left", "properties": {"note": note}}]
                secrets = [phone, email, ip4, ip6]
            elif shape == 3:
                url = f"https://shop.example/p?email={quote(email)}&phone={quote(phone)}&first_name={quote(full)}&sku=9"
                payloads = [{"type": "page", "userId": uid, "name": "Product", "properties": {"url": url}}]
                secrets = [email, phone, full, quote(email), quote(phone), quote(full)]
            elif shape == 4:
                payloads = [{"type": "track", "userId": email, "anonymousId": phone, "event": f"Clicked {email}",
                             "messageId": f"msg-{email}-{i}", "properties": {"ref": f"{ip4}"}}]  # fmt: skip
                secrets = [email, phone, ip4]
            elif shape == 5:
                traits = {"contact": {"phone": phone, "name": full}, "plan": "gold"}
                props = {"customer": {"name": full, "email": email}, "recipient": {"ip_address": ip4}}
                payloads = [
                    {"type": "identify", "userId": uid, "traits": traits},
                    {"type": "track", "userId": uid, "event": "Gift Sent", "properties": props},
                ]
                secrets = [phone, full, email, ip4]
            elif shape == 6:  # refused events are quarantined: scrubbed too
                props = {"price": "1e999", "email": email, "note": f"from {ip4}, tel {phone}"}
                payloads = [{"type": "track", "userId": uid, "event": "Product Added", "properties": props}]
                secrets = [email, ip4, phone]
            else:  # refused for its time, with personal data in the bad field
                bad_time = f"not a time {email} {phone}"
                payloads = [{"type": "track", "userId": uid, "event": "Product Viewed", "timestamp": bad_time,
                             "properties": {"addr": {"street": street}}}]  # fmt: skip
                secrets = [email, phone]
            cases.append({"payloads": payloads, "secrets": secrets})
    return cases


HAND = [
    ("bob+promo@example.co.uk", {"note": "reply to bob+promo@example.co.uk"}),
    ("Bob.Smith+tag@Mail.Example.com", {"email_address": "Bob.Smith+tag@Mail.Example.com"}),
    ("+44 20 7946 0958", {"note": "ring +44 20 7946 0958 today"}),
    ("(415) 555-2671", {"note": "office (415) 555-2671"}),
    ("415.555.2671", {"note": "fax 415.555.2671"}),
    ("0049 30 901820", {"note": "Tel. 0049 30 901820"}),
    ("2001:db8::1", {"note": "client 2001:db8::1 connected"}),
    ("::ffff:192.0.2.128", {"note": "mapped ::ffff:192.0.2.128"}),
    ("fe80::1ff:fe23:4567:890a", {"link": "http://[fe80::1ff:fe23:4567:890a]:8080/x"}),
    ("198.51.100.23", {"x_forwarded_for": "198.51.100.23"}),
    ("30 901820", {"phone": {"country_code": "+49", "number": "30 901820"}}),
    ("carol.jones", {"email": {"local": "carol.jones", "domain": "example.org"}}),
    ("4155552671", {"phone_number": 4155552671}),
    ("Sesamstraße 12", {"shipping": {"street": "Sesamstraße 12"}}),
    ("%2B14155552671", {"url": "https://x.example/?tel=%2B14155552671"}),
    ("dave%40example.com", {"url": "https://x.example/?u=dave%40example.com"}),
]


def corpus() -> list[dict[str, Any]]:
    cases = faker_cases()
    for i, (secret, props) in enumerate(HAND):
        payload = {"type": "track", "userId": f"hand-{i}", "event": "Hand Case", "properties": props}
        cases.append({"payloads": [payload], "secrets": [secret]})
    return cases


class Served:
    def __init__(self, state: Path, prefix: str) -> None:
        self.state, self.port = state, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = state.parent / "server.log"
        env = {**os.environ, "SEGFLOW_ADMIN_KEYS": ADMIN, "SEGFLOW_READ_KEYS": READ, "SEGFLOW_PII_KEY": "11" * 32,
               "SEGFLOW_STORE": "redis://127.0.0.1:6379/0", "SEGFLOW_STORE_PREFIX": prefix,
               "SEGFLOW_TRACKING_URI": f"sqlite:///{state.parent / 'mlflow.db'}"}  # fmt: skip
        cmd = [sys.executable, "-m", "cli", "serve", "--port", str(self.port), "--clock", "event",
               "--state-dir", str(state), "--segments", str(ROOT / "config" / "segments.yaml")]  # fmt: skip
        self.out = open(self.log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=self.out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-2000:]
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server did not become ready")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self.out.close()


@pytest.fixture
def redis_prefix(redis_client: redis.Redis) -> Iterator[str]:
    prefix = f"segflow-test-pii-{uuid.uuid4().hex[:8]}:"
    yield prefix
    for key in redis_client.scan_iter(match=prefix + "*"):
        redis_client.delete(key)


def state_text(state: Path, read_snapshot: Callable[[Path], str]) -> str:
    """Everything under the state directory, decompressed where it is compressed."""
    files = sorted(p for p in state.rglob("*") if p.is_file())
    return "\n".join(read_snapshot(p) if p.name == "snapshot.bin" else p.read_text(errors="replace") for p in files)


def test_no_raw_personal_data_anywhere(
    tmp_path: Path, redis_client: redis.Redis, redis_prefix: str, read_snapshot: Callable[[Path], str]
) -> None:
    cases = corpus()
    assert len(cases) >= 80 + len(HAND)
    responses: list[str] = []
    server = Served(tmp_path / "state", redis_prefix)
    try:
        with httpx.Client(base_url=server.url, timeout=30, headers={"authorization": f"Bearer {ADMIN}"}) as http:
            for n, case in enumerate(cases):
                for j, payload in enumerate(case["payloads"]):
                    body = {"timestamp": format_ms(T0 + n * 1000 + j), "messageId": f"c{n}-{j}", **payload}
                    path = "/v1/batch" if j % 2 else f"/v1/{payload['type']}"
                    sent = {"batch": [body]} if path == "/v1/batch" else body
                    r = http.post(path, json=sent)
                    assert r.status_code in (200, 400), r.text
                    responses.append(r.text)
            users = {str(p.get("userId")) for c in cases for p in c["payloads"]}
            for user in sorted(users):
                responses.append(http.get(f"/v1/profiles/{quote(user, safe='')}").text)
            held = http.get("/v1/admin/quarantine", params={"limit": 1000}).json()
            assert held["count"] >= 2 * len(LOCALES) * 2  # shapes 6 and 7 were refused
            for item in held["held"]:
                responses.append(http.get(f"/v1/admin/quarantine/{item['id']}").text)
            responses.append(http.get("/v1/admin/quarantine", params={"limit": 1000}).text)
            for seg in http.get("/v1/segments").json()["segments"]:
                responses.append(http.get(f"/v1/segments/{seg['name']}/members").text)
            responses.append(http.get("/metrics").text)
            http.delete("/v1/profiles/en_US-0")  # erasure writes a snapshot
    finally:
        server.stop()
    stored = [
        k.decode() + " " + (zlib.decompress(v[1:]).decode() if v else "")
        for k in redis_client.scan_iter(match=redis_prefix + "*")
        if (v := redis_client.get(k)) is not None
    ]
    assert stored, "the profiles were kept in Redis"
    places = {
        "state directory": state_text(tmp_path / "state", read_snapshot),
        "redis": "\n".join(stored),
        "responses": "\n".join(responses),
        "server log": server.log.read_text(errors="replace"),
    }
    assert "pii_" in places["state directory"] and "pii_" in places["redis"]
    leaks = [
        (where, secret)
        for case in cases
        for secret in case["secrets"]
        for where, text in places.items()
        if secret in text or secret.lower() in text
    ]
    assert leaks == [], leaks
