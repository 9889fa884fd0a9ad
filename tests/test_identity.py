"""Identity resolution: anonymous browsing joins the known user at the merge
instant, online and offline alike.

The property test interleaves anonymous and identified events with
``identify`` and ``alias`` calls at random, out of order (some past the
lateness), duplicates included, through the real engine: at every instant
the online profiles equal the offline features over the merged history as
of that instant, no joined id keeps a profile, and no merge enters a
segment twice. The training set uses no anonymous event for the known user
before the merge instant; erasure takes every linked id with it; the API
answers the merged profile by any of its ids.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import orjson
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from features.events import Event, format_ms
from features.identity import IdentityGraph
from features.offline import OfflineFeatures
from features.table import events_to_table
from models.intent_online import OnlineIntentModel
from segments import config as segment_config
from serving.engine import Engine
from serving.regime import BASE_SPECS, build_features, intent_feature_names
from serving.scorers import Scorers
from serving.service import Service
from serving.settings import Settings
from tests.servers import READ, WRITE, Server
from tests.test_features_parity import assert_same, same
from training.datasets import build

MIN = 60_000
BASE = 1_767_225_600_000  # 2026-01-01T00:00Z
RULES = """
version: 1
segments:
  - name: browsing
    rule: count(product_view, 24h) >= 2
  - name: carting
    rule: since(add_to_cart) < 2h
  - name: gold
    rule: trait("plan") == "gold"
"""
CONFIG = segment_config.loads(RULES, "identity.yaml", BASE_SPECS)
ANONS, USERS = ["a1", "a2", "a3"], ["u1", "u2"]
TRACKS = ["product_view", "product_view", "add_to_cart", "purchase", "page_view"]


def new_engine() -> Engine:
    return Engine(CONFIG, build_features(CONFIG), Scorers(OnlineIntentModel(), intent_feature_names()))


@st.composite
def histories(draw: st.DrawFn) -> list[Event]:
    """Tracks under anonymous or user ids, identify and alias calls linking them."""
    n = draw(st.integers(1, 36))
    steps = draw(st.lists(st.sampled_from([0, 1, 5, 30, 61, 24 * 60]), min_size=n, max_size=n))
    ts = (BASE + np.cumsum(steps) * MIN).tolist()
    jitter = draw(st.lists(st.sampled_from([0, 0, -10, -45, -80]), min_size=n, max_size=n))  # -80: past the lateness
    delay = draw(st.lists(st.integers(0, 60), min_size=n, max_size=n))
    arrival = sorted(range(n), key=lambda i: (ts[i] + (jitter[i] + delay[i]) * MIN, i))
    events: list[Event] = []
    for pos, i in enumerate(arrival):
        at = ts[i] + jitter[i] * MIN + i  # distinct instants: no ties between two ids' last values
        what = draw(st.sampled_from(["anon", "anon", "user", "user", "identify", "alias"]))
        anon, user = draw(st.sampled_from(ANONS)), draw(st.sampled_from(USERS))
        base = Event(f"m{i}", "", None, None, at, BASE + pos * 1000)
        if what == "anon":
            event = replace(base, type=draw(st.sampled_from(TRACKS)), anonymous_id=anon)
        elif what == "user":
            event = replace(base, type=draw(st.sampled_from(TRACKS)), user_id=user,
                            anonymous_id=draw(st.sampled_from([None, anon])))  # fmt: skip
        elif what == "identify":
            plan = draw(st.sampled_from([None, "gold", "free"]))
            event = replace(base, type="identify", kind="identify", user_id=user, anonymous_id=anon,
                            traits={} if plan is None else {"plan": plan})  # fmt: skip
        else:  # alias: an anonymous id, or another user, into a user
            previous = draw(st.sampled_from([*ANONS, *USERS]))
            event = replace(base, type="alias", kind="alias", user_id=user, traits={"previousId": previous})
        if event.type in ("product_view", "add_to_cart", "purchase"):
            event = replace(event, properties={"price": 20.0, "category": draw(st.sampled_from(["shoes", "hats"]))})
        events.append(event)
        if draw(st.integers(0, 7)) == 0:  # a retry of the same message: dropped
            events.append(replace(event, received_ms=event.received_ms + 500))
    return events


def _entered_twice(before: dict[str, set[str]], changes: list) -> list[tuple[str, str]]:
    """Enters of a segment more than once, or of one the profile was in already
    (unless its window closed first: a timer's exit before the event)."""
    enters = Counter((c.profile_id, c.transition.segment) for c in changes if c.transition.kind == "enter")
    timed_out = {(c.profile_id, c.transition.segment) for c in changes if c.cause == "time"}
    return [key for key, n in enters.items() if n > 1 or (key[1] in before.get(key[0], ()) and key not in timed_out)]


@given(histories(), st.lists(st.integers(0, 26 * 60), min_size=1, max_size=2))
@settings(max_examples=150, deadline=None)
def test_online_profiles_equal_the_offline_features_over_the_merged_history(
    events: list[Event], offsets: list[int]
) -> None:
    engine = new_engine()
    offline = OfflineFeatures(engine.features, events_to_table(events))
    links = {i for i, e in enumerate(events) if e.kind in ("identify", "alias")}
    ts = np.array([e.ts_ms for e in events])
    # the earliest event still to arrive that the offline history counts (applied, or a link) after each prefix
    counts = np.array([offline.applied[i] or i in links for i in range(len(events))])
    rest_min = np.minimum.accumulate(np.where(counts, ts, np.iinfo(np.int64).max)[::-1])[::-1]
    reads = []
    for k, e in enumerate(events):
        before = {pid: set(u.members.entered) for pid, u in engine.users.items()}
        out = engine.ingest([e])
        assert _entered_twice(before, out.changes) == [], f"a merge entered a segment twice at {e}"
        joined = [pid for pid in (*ANONS, *USERS) if engine.identity.resolve(pid) != pid]
        assert all(engine.store.get(pid) is None for pid in joined)
        upper = rest_min[k + 1] if k + 1 < len(events) else np.iinfo(np.int64).max
        for off in offsets:
            t = engine.watermark + off * MIN
            if engine.watermark >= 0 and t < upper:
                reads += [(pid, t, engine.features.read(p, t)) for pid, p in engine.store.items()]
    assert engine.identity.conflicts == offline.stitching.graph.conflicts if offline.stitching else True
    if reads:
        got = offline.at(pd.DataFrame([(pid, t) for pid, t, _ in reads], columns=["profile_id", "at"]))
        for i, (pid, t, online) in enumerate(reads):
            assert_same(engine.features, online, got.iloc[i], f"profile {pid} at {t}")


def _vectors(engine: Engine) -> dict[str, dict]:
    return {pid: engine.features.read(p, engine.watermark) for pid, p in sorted(engine.store.items())}


@given(histories(), st.lists(st.integers(1, 6), min_size=1, max_size=12), st.integers(0, 40))
@settings(max_examples=60, deadline=None)
def test_batches_and_a_restore_from_a_snapshot_leave_the_same_profiles_and_links(
    events: list[Event], sizes: list[int], cut: int
) -> None:
    one_by_one = new_engine()
    for e in events:
        one_by_one.ingest([e])
    batched, i, saved = new_engine(), 0, False
    for n in itertools.cycle(sizes):
        if i >= len(events):
            break
        if i >= cut and not saved:  # the state saved and restored into a fresh engine, mid-stream
            restored = new_engine()
            restored.restore_state(orjson.loads(orjson.dumps(batched.export_state())))
            batched, saved = restored, True
        batched.ingest(events[i : i + n])
        i += n
    assert batched.identity.to_state() == one_by_one.identity.to_state()
    mine, theirs = _vectors(batched), _vectors(one_by_one)
    assert mine.keys() == theirs.keys()
    for pid in mine:
        for name in batched.features.names:
            assert same(mine[pid][name], theirs[pid][name]), (pid, name)


def test_lateness_after_a_merge_is_judged_against_the_merged_profile_online_and_offline() -> None:
    h = 60 * MIN
    events = [
        _track("u-now", None, "u1", "product_view", BASE + 10 * h),
        _track("a-old", "a1", None, "product_view", BASE + 6 * h),
        Event("idf", "identify", "u1", "a1", BASE + 10 * h + 1, BASE + 10 * h + 1, kind="identify"),
        _track("a-late", "a1", None, "product_view", BASE + 7 * h),  # late for the merged profile, not for a1's own
        _track("b-new", "b1", None, "product_view", BASE + 20 * h),
        _track("v-old", None, "v1", "product_view", BASE + 15 * h),
        Event("ali", "alias", "v1", None, BASE + 20 * h, BASE + 20 * h, kind="alias", traits={"previousId": "b1"}),
        _track("v-late", None, "v1", "add_to_cart", BASE + 16 * h),  # late once b1's newest came along
    ]
    engine = new_engine()
    late = [engine.ingest([e]).late for e in events]
    assert late == [0, 0, 0, 1, 0, 0, 0, 1]
    offline = OfflineFeatures(engine.features, events_to_table(events))
    assert offline.applied.tolist() == [n == 0 for n in late] and offline.late == 2
    at = BASE + 21 * h
    got = offline.at(pd.DataFrame({"profile_id": ["u1", "v1"], "at": [at, at]}))
    for i, pid in enumerate(["u1", "v1"]):
        profile = engine.store.get(pid)
        assert profile is not None
        assert_same(engine.features, engine.features.read(profile, at), got.iloc[i], pid)


def test_the_graph_links_first_wins_chains_collapse_and_aliases_merge_known_users() -> None:
    g = IdentityGraph()
    assert g.link("a1", "u1", 10) is not None and g.link("a2", "u1", 20) is not None
    assert g.link("a1", "u2", 30) is None and g.conflicts == 1  # a1 is u1's
    merge = g.link("u1", "u2", 40)  # alias between two known users: u1 and its anonymous ids join u2
    assert merge is not None and merge.moved == ("u1", "a1", "a2") and g.linked("a2") == ["u2", "u1", "a1", "a2"]
    assert g.link("u2", "a1", 50) is None and g.conflicts == 1  # within one profile: nothing
    assert [g.owner_at("a1", t) for t in (5, 10, 39, 40)] == ["a1", "u1", "u1", "u2"]
    assert IdentityGraph.from_state(g.to_state()).linked("u2") == g.linked("u2")
    assert g.erase("a1") == ["u2", "u1", "a1", "a2"] and not g and g.resolve("a1") == "a1"


def _track(mid: str, anon: str | None, user: str | None, kind: str, at: int) -> Event:
    return Event(mid, kind, user, anon, at, at, properties={"price": 20.0, "category": "shoes"})


def _history() -> tuple[list[Event], int]:
    """A known user's own browsing, an anonymous visitor's, the identify between them at ``merge``."""
    merge = BASE + 10 * 60 * MIN
    events = [_track(f"u{i}", None, "u1", "product_view", BASE + i * 45 * MIN) for i in range(6)]
    events += [_track(f"a{i}", "a1", None, "product_view", BASE + 5 * MIN + i * 50 * MIN) for i in range(12)]
    events += [_track("a-cart", "a1", None, "add_to_cart", merge - 30 * MIN)]
    events.append(Event("idf", "identify", "u1", "a1", merge, merge, kind="identify"))
    events += [_track(f"after{i}", "a1", "u1", "product_view", merge + (i + 1) * 40 * MIN) for i in range(5)]
    events += [_track("buy", None, "u1", "purchase", merge + 4 * 60 * MIN)]
    events += [_track(f"late{i}", None, "u1", "page_view", merge + 30 * 60 * MIN + i * MIN) for i in range(3)]
    return sorted(events, key=lambda e: e.received_ms), merge


def test_the_training_set_uses_no_anonymous_event_for_the_user_before_the_merge() -> None:
    events, merge = _history()
    engine = new_engine()
    train = build(events_to_table(events), engine.features, every_ms=20 * MIN, seed=1)
    cut = train.cutoffs
    known = cut[cut["profile_id"] == "u1"]
    before, after = known[known["at"] < merge], known[known["at"] >= merge]
    assert len(before) and len(after) and (cut.loc[cut["profile_id"] == "a1", "at"] < merge).all()
    # before the merge the user's features are those of a history without the visitor at all
    alone = OfflineFeatures(engine.features, events_to_table([e for e in events if e.profile_id != "a1"]))
    pd.testing.assert_frame_equal(
        train.X.loc[before.index].reset_index(drop=True), alone.at(before[["profile_id", "at"]]).reset_index(drop=True)
    )
    # from it on, those of a history where every visitor event had been the user's
    relabeled = [replace(e, user_id="u1") if e.profile_id == "a1" else e for e in events]
    joined = OfflineFeatures(engine.features, events_to_table(relabeled))
    pd.testing.assert_frame_equal(
        train.X.loc[after.index].reset_index(drop=True), joined.at(after[["profile_id", "at"]]).reset_index(drop=True)
    )
    views = train.X.loc[after.index, "product_view_count_24h"].to_numpy()
    assert views.max() > 6  # the visitor's views count for the user after the merge
    # the visitor's moments before the merge are labelled by the person's purchase after it
    assert train.y[(cut["profile_id"] == "a1").to_numpy()].max() == 1


def _service(state: Path) -> Service:
    settings = Settings(
        state_dir=state, clock="event", write_keys=[SecretStr("w-secret")], read_keys=[SecretStr("r-secret")],
        segments=Path(__file__).resolve().parent.parent / "config" / "segments.yaml",
    )  # fmt: skip
    return Service(settings, Scorers(OnlineIntentModel(), intent_feature_names())).start()


def test_erasing_a_user_removes_every_linked_id_profile_log_rows_and_links(tmp_path: Path) -> None:
    events, merge = _history()
    events.append(Event("idf2", "identify", "u1", "a2", merge + 1, merge + 1, kind="identify"))
    events.insert(0, _track("a2-view", "a2", None, "product_view", BASE + MIN))
    events.append(Event("idf3", "identify", "u9", "a1", merge + 2, merge + 2, kind="identify"))  # refused: a1 is u1's
    service = _service(tmp_path)
    service.ingest(events)
    engine, log = service.engine, service.log
    assert engine is not None and log is not None
    assert engine.identity.linked("a2") == ["u1", "a1", "a2"] and engine.store.get("a1") is None
    assert engine.identity.conflicts == 1
    assert service.erase("a2")  # by any of the user's ids
    assert engine.identity.linked("u1") == ["u1"] and not engine.identity
    assert [log.count(pid) for pid in ("u1", "a1", "a2")] == [0, 0, 0]
    assert all(engine.store.get(pid) is None and pid not in engine.users for pid in ("u1", "a1", "a2"))
    assert service.ingest([_track("again", "a1", None, "product_view", merge + 2 * 60 * MIN)]).suppressed == 1
    relink = Event("idf4", "identify", "u8", "a1", merge + 3, merge + 3, kind="identify")
    service.ingest([relink])  # the user's event is taken, the erased id is not linked again
    assert engine.identity.resolve("a1") == "a1"
    service.close()
    for name in ("", "no snapshot"):  # after a restart, from the snapshot and the log, then from the log alone
        if name:
            snapshots = list(tmp_path.glob("snapshot*.bin"))
            assert snapshots
            for snapshot in snapshots:
                snapshot.unlink()
        again = _service(tmp_path)
        assert again.engine is not None and not again.engine.identity and again.engine.store.get("u1") is None
        again.close()


def test_links_outlive_the_log_trimming_and_the_person_follows_the_link(tmp_path: Path) -> None:
    events, merge = _history()
    service = _service(tmp_path)
    service.ingest(events)
    assert service.log is not None and service.people is not None
    # after the merge, an unsubscribe and a trait under the anonymous id are the user's
    after = merge + 60 * 60 * MIN
    service.ingest([
        Event("un", "Email Unsubscribed", None, "a1", after, after, name="Email Unsubscribed"),
        Event("tr", "identify", None, "a1", after + 1, after + 1, kind="identify", traits={"plan": "gold"}),
    ])  # fmt: skip
    assert service.people.suppressed("u1") is not None and service.people.traits.of("u1")["plan"] == "gold"
    service.save_snapshot()
    service.log.trim(after + 2, service.log.last_seq())  # every event goes: the links stay
    assert service.log.count() == 0 and service.log.links_beyond() == [("a1", "u1", merge)]
    service.close()
    snapshots = list(tmp_path.glob("snapshot*.bin"))
    assert snapshots
    for snapshot in snapshots:
        snapshot.unlink()
    again = _service(tmp_path)  # rebuilt from the log alone
    assert again.engine is not None and again.engine.identity.resolve("a1") == "u1"
    again.ingest([_track("later", "a1", None, "product_view", after + 5)])
    assert again.engine.store.get("a1") is None and again.engine.store.get("u1") is not None
    again.close()


def test_the_profile_answers_by_any_linked_id_with_the_anonymous_history(tmp_path: Path) -> None:
    server = Server(tmp_path / "state", clock="event").start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            for i in range(3):
                at = format_ms(BASE + i * MIN)
                body = {"type": "track", "event": "Product Viewed", "anonymousId": "visitor-1",
                        "messageId": f"v{i}", "timestamp": at, "properties": {"price": 5}}  # fmt: skip
                assert http.post("/v1/track", json=body, auth=WRITE).status_code == 200
            traits = {"plan": "gold", "email": "ann@example.com"}
            signup = {"type": "identify", "anonymousId": "visitor-1", "messageId": "s1",  # a newsletter sign-up
                      "timestamp": format_ms(BASE + 4 * MIN), "traits": traits}  # fmt: skip
            login = {"type": "identify", "userId": "ann", "anonymousId": "visitor-1", "messageId": "i1",
                     "timestamp": format_ms(BASE + 5 * MIN)}  # fmt: skip
            for body in (signup, login):
                assert http.post("/v1/identify", json=body, auth=WRITE).status_code == 200
            by_anon, by_user = (http.get(f"/v1/profiles/{who}", auth=READ).json() for who in ("visitor-1", "ann"))
            assert by_anon["user"] == by_user["user"] == "ann" and by_user["ids"] == ["ann", "visitor-1"]
            assert by_user["features"]["product_view_count_24h"] == 3 and by_user["traits"]["plan"] == "gold"
            exported = http.get("/v1/profiles/visitor-1/export", auth=WRITE).json()
            assert sorted(e["messageId"] for e in exported["events"]) == ["i1", "s1", "v0", "v1", "v2"]
            assert exported["contact"]["email"] == "ann@example.com"  # the sign-up's contact reaches the user
    finally:
        server.stop()
