"""The wall clock: a due exit fires with no new event, at its due time,
while the server only waits."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from pydantic import SecretStr

from features.events import format_ms
from models.intent_online import OnlineIntentModel
from serving.app import create_app
from serving.regime import intent_feature_names
from serving.scorers import Scorers
from serving.server import ServerThread
from serving.settings import Settings

RULES = """
version: 1
segments:
  - name: seen_1s
    description: any event in the last second
    rule: since(any) <= 1s
"""


def test_due_exit_fires_on_the_wall_clock(tmp_path: Path) -> None:
    (tmp_path / "segments.yaml").write_text(RULES)
    settings = Settings(
        state_dir=tmp_path / "state", clock="wall", segments=tmp_path / "segments.yaml",
        write_keys=[SecretStr("w-secret")], read_keys=[SecretStr("r-secret")],
        tracking_uri=f"sqlite:///{tmp_path / 'm.db'}",
    )  # fmt: skip
    server = ServerThread(create_app(settings, Scorers(OnlineIntentModel(), intent_feature_names())))
    with server as url, httpx.Client(base_url=url, timeout=10) as http:
        now = time.time_ns() // 1_000_000
        body = {"userId": "w1", "event": "Product Viewed", "messageId": "w1-1", "timestamp": format_ms(now)}
        entered = http.post("/v1/track", auth=("w-secret", ""), json=body).json()["transitions"]
        assert [(t["segment"], t["kind"]) for t in entered] == [("seen_1s", "enter")]
        deadline = time.monotonic() + 15
        why: dict = {}
        while time.monotonic() < deadline:
            why = http.get("/v1/profiles/w1/segments/seen_1s", auth=("r-secret", "")).json()
            if not why["member"]:
                break
            time.sleep(0.1)
        assert why["member"] is False
        assert why["last_transition"]["kind"] == "exit"
        assert why["last_transition"]["at_ms"] == now + 1001  # due: a second and a millisecond after the event
