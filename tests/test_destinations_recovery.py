"""Deliveries survive a SIGKILL: a real ``segflow serve`` killed while
deliveries are in flight delivers every change after a restart, again only
what was in flight; a reload under the same config sends nothing, one under
a changed config exactly the net membership changes. On the wall clock a
user who stops acting leaves a segment exact to the second, and the exit
reaches the receiver with no new event."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import httpx
from pydantic import SecretStr

from models.intent_online import OnlineIntentModel
from serving.app import create_app
from serving.regime import intent_feature_names
from serving.scorers import Scorers
from serving.server import ServerThread
from serving.settings import Settings
from tests.receiver import Receiver, slow
from tests.servers import READ, WRITE, Server
from tests.test_destinations_delivery import RULES, SECRET, T0, destinations, ev, history, outbox_keys, post, wait_for

CHANGED = """
version: 1
segments:
  - name: carted_1h
    description: added to cart in the last hour
    rule: count(add_to_cart, 1h) >= 1
  - name: carted_7d
    rule: count(add_to_cart, 7d) >= 1
"""


def test_a_sigkill_with_deliveries_in_flight_loses_none_and_reloads_send_only_net_changes(tmp_path: Path) -> None:
    endpoint = "/hooks/kill"
    with Receiver(SECRET) as receiver:
        receiver.script(endpoint, [slow(0.3)] * 40)  # slow answers: the kill finds deliveries in flight
        (tmp_path / "segments.yaml").write_text(RULES)
        (tmp_path / "destinations.yaml").write_text(
            destinations(receiver.url + endpoint)
            .replace("concurrency: 3", "concurrency: 2")
            .replace("batch_size: 100", "batch_size: 20")
        )
        env = {"SEGFLOW_DESTINATIONS": str(tmp_path / "destinations.yaml")}
        server = Server(tmp_path / "state", segments=tmp_path / "segments.yaml", env=env).start()
        try:
            with httpx.Client(base_url=server.url, timeout=30) as http:
                post(http, history(150), WRITE)
                assert http.post("/v1/admin/advance", params={"to_ms": T0 + 6 * 3_600_000}, auth=WRITE).is_success
                decided = {t["key"] for t in outbox_keys(http, READ)}
                wait_for(lambda: len(receiver.keys(endpoint)) >= 200)
            server.kill()
            killed_ms = time.time_ns() // 1_000_000
            assert len(set(receiver.keys(endpoint))) < len(decided)
            server = Server(tmp_path / "state", segments=tmp_path / "segments.yaml", env=env).start()
            with httpx.Client(base_url=server.url, timeout=30) as http:
                wait_for(lambda: set(receiver.keys(endpoint)) == decided)
                before = len(receiver.keys(endpoint))
                assert http.post("/v1/admin/reload", auth=WRITE).json()["events_replayed"] == 0
                time.sleep(1.5)
                assert len(receiver.keys(endpoint)) == before  # the same config: nothing new to send
                (tmp_path / "segments.yaml").write_text(CHANGED)
                assert http.post("/v1/admin/reload", auth=WRITE).status_code == 200
                wait_for(lambda: len(receiver.keys(endpoint)) >= before + 150)
                time.sleep(1.0)
        finally:
            server.stop()
        got = receiver.received.deliveries
    # every change decided before the kill arrived; one arrived twice only if it was in flight at the kill
    first = {d["key"]: d["received_ms"] for d in reversed(got)}
    again = [key for key, n in Counter(d["key"] for d in got).items() if n > 1]
    assert all(first[key] >= killed_ms - 600 for key in again)  # answers took 0.3 s: it was in flight
    assert min(first.values()) < killed_ms - 1000
    net = got[before:]
    assert len(net) == 150 and {(d["segment"], d["kind"], d["cause"]) for d in net} == {
        ("carted_7d", "enter", "reload")
    }
    assert {d["user"] for d in net} == {f"u{u}" for u in range(150)}
    assert len({d["at_ms"] for d in net}) == 1  # all at the reload instant


EXACT = """
version: 1
segments:
  - name: browsing_now
    rule: since(product_view) < 2s
"""


def test_on_the_wall_clock_an_exit_exact_to_the_second_reaches_the_receiver_with_no_new_event(tmp_path: Path) -> None:
    endpoint = "/hooks/exact"
    with Receiver(SECRET) as receiver:
        (tmp_path / "segments.yaml").write_text(EXACT)
        (tmp_path / "destinations.yaml").write_text(destinations(receiver.url + endpoint))
        settings = Settings(
            state_dir=tmp_path / "state", clock="wall", segments=tmp_path / "segments.yaml",
            destinations=tmp_path / "destinations.yaml", admin_keys=[SecretStr(WRITE[0])],
            read_keys=[SecretStr(READ[0])],
        )  # fmt: skip
        app = create_app(settings, Scorers(OnlineIntentModel(), intent_feature_names()))
        with ServerThread(app) as url, httpx.Client(base_url=url, timeout=30) as http:
            viewed = time.time_ns() // 1_000_000
            post(http, [ev("v1", "product_view", "u1", viewed)], WRITE)
            wait_for(lambda: len(receiver.keys(endpoint)) == 2, timeout=20)
        enter, exit_ = receiver.received.deliveries
    assert (enter["kind"], exit_["kind"]) == ("enter", "exit") and exit_["cause"] == "time"
    assert exit_["at_ms"] == viewed + 2000  # exact: two seconds after the view
    assert exit_["received_ms"] >= exit_["at_ms"]
