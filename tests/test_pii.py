"""Raw email addresses and IPs never reach what is stored or logged."""

from __future__ import annotations

import logging
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from cli.main import app
from features.pseudonyms import Pseudonymizer, load_key
from features.segment_spec import SegmentParser
from features.table import events_to_table, write_table

RECEIVED = 1_800_000_000_000  # 2027-01-15: received after every timestamp these tests send

EMAIL = "carol.jones@example.org"
IP = "203.0.113.99"
PHONE = "+44 20 7946 0958"

PAYLOADS = [
    {
        "type": "identify",
        "userId": EMAIL,
        "messageId": "i1",
        "timestamp": "2024-05-01T10:00:00Z",
        "traits": {"email": EMAIL, "phone": PHONE, "firstName": "Carol", "address": {"city": "Leeds"}},
        "context": {"ip": IP, "traits": {"email": EMAIL}},
    },
    {
        "type": "track",
        "anonymousId": "a1",
        "event": "Email Link Clicked",
        "messageId": "t1",
        "timestamp": "2024-05-01T10:00:00Z",
        "context": {"ip": IP, "page": {"url": f"https://x.io/?u={EMAIL}"}},
        "properties": {
            "url": f"https://shop.example/?email={EMAIL.replace('@', '%40')}",
            "note": f"reply to {EMAIL}",
            "ip": IP,
            "nested": [{"who": EMAIL}],
        },
    },
    {
        "type": "page",
        "userId": "u2",
        "messageId": "p1",
        "timestamp": "2024-05-01T10:00:00Z",
        "context": {"ip": IP, "page": {"url": f"https://x.io/?u={EMAIL}"}},
    },
]


def _dump(table_path: Path) -> str:
    return str(pq.read_table(table_path).to_pylist())


def test_stored_table_has_no_raw_personal_data(parser: SegmentParser, tmp_path: Path) -> None:
    events = [parser.event(p, received_ms=RECEIVED) for p in PAYLOADS]
    path = write_table(events_to_table(events), tmp_path / "t.parquet")
    stored = _dump(path) + repr(events)
    for secret in (EMAIL, IP, PHONE, "Carol", EMAIL.replace("@", "%40")):
        assert secret not in stored
    assert events[0].user_id is not None and events[0].user_id.startswith("pii_")


def test_cli_import_logs_and_stores_no_raw_personal_data(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    src = tmp_path / "events.jsonl"
    bad = {**PAYLOADS[1], "timestamp": f"not a time {EMAIL}"}
    src.write_bytes(b"\n".join(orjson.dumps(p) for p in [*PAYLOADS, bad]))
    out = tmp_path / "out.parquet"
    caplog.set_level(logging.DEBUG)
    result = CliRunner().invoke(app, ["import", "segment-jsonl", str(src), "--out", str(out)])
    assert result.exit_code == 1, result.output  # the bad line is a data error
    assert "rejected 1" in result.output
    logged = result.output + caplog.text + _dump(out)
    for secret in (EMAIL, IP, PHONE):
        assert secret not in logged


def test_key_is_generated_once_outside_the_repo(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SEGFLOW_HOME", str(tmp_path / "home"))
    key = load_key()
    assert load_key() == key and len(key) == 32
    assert (tmp_path / "home" / "pii.key").stat().st_mode & 0o077 == 0
    assert repr(Pseudonymizer(key)) == "Pseudonymizer(<key hidden>)"
    monkeypatch.setenv("SEGFLOW_PII_KEY", "zz")
    with pytest.raises(ValueError, match="SEGFLOW_PII_KEY must be hex"):
        load_key()
