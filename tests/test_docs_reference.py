"""The reference docs name what the code has: every setting and feature a rule
can name (configuration.md), every route and error code (http.md), every
Segment event mapping (events.md)."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from features.defaults import RULE_SPECS
from features.events import SEGMENT_NAMES
from models.intent_online import OnlineIntentModel
from serving.app import _CODES, create_app
from serving.regime import intent_feature_names
from serving.scorers import Scorers
from serving.settings import Settings

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_every_setting_and_rule_feature_is_documented() -> None:
    text = (DOCS / "configuration.md").read_text()
    settings = [f for f in Settings.model_fields if f"`{f}` | `SEGFLOW_{f.upper()}`" not in text]
    assert not settings, f"settings not in docs/configuration.md: {settings}"
    features = [s.name for s in RULE_SPECS if f"| `{s.name}` |" not in text]
    assert not features, f"features not in docs/configuration.md: {features}"


def test_every_route_and_error_code_is_in_the_http_docs(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state", keys_file=tmp_path / "keys.json")
    app = create_app(settings, Scorers(OnlineIntentModel(), intent_feature_names()))
    text = (DOCS / "http.md").read_text()
    routes = [(m, r.path) for r in app.routes for m in sorted(getattr(r, "methods", None) or []) if m != "HEAD"]
    assert len(routes) > 30
    missing = [f"{m} {p}" for m, p in routes if f"`{m} {p}`" not in text]
    assert not missing, f"routes not in docs/http.md: {missing}"
    codes = [c for c in _CODES.values() if f"`{c}`" not in text]
    assert not codes, f"error codes not in docs/http.md: {codes}"


def test_every_segment_event_mapping_is_in_the_events_docs() -> None:
    text = (DOCS / "events.md").read_text()
    missing = [name for name, kind in SEGMENT_NAMES.items() if f"| `{name}` | `{kind}` |" not in text]
    assert not missing, f"Segment event names not in docs/events.md: {missing}"


def _anchors(text: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens."""
    heads = re.findall(r"^#+ (.+)$", re.sub(r"^```.*?^```", "", text, flags=re.S | re.M), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in heads}


def test_every_link_between_the_docs_leads_somewhere() -> None:
    broken = []
    for page in [*DOCS.glob("*.md"), DOCS.parent / "README.md"]:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if target.startswith(("http://", "https://")):
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists():
                broken.append(f"{page.name}: {target}")
            elif anchor and linked.is_file() and anchor not in _anchors(linked.read_text()):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert not broken, broken


def test_every_metric_a_running_service_exposes_is_in_the_operations_docs(tmp_path: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families
    from pydantic import SecretStr

    from serving.server import ServerThread

    settings = Settings(state_dir=tmp_path / "state", clock="event", admin_keys=[SecretStr("ak-secret")],
                        read_keys=[SecretStr("rk-secret")], keys_file=tmp_path / "keys.json")  # fmt: skip
    app = create_app(settings, Scorers(OnlineIntentModel(), intent_feature_names()))
    with ServerThread(app) as url, httpx.Client(base_url=url, timeout=30) as http:
        sent = http.post("/v1/track", auth=("ak-secret", ""), json={"userId": "u1", "event": "Product Viewed",
                                                                    "timestamp": "2026-01-01T00:00:00Z"})  # fmt: skip
        assert sent.status_code == 200, sent.text
        exposed = http.get("/metrics", headers={"Authorization": "Bearer rk-secret"}).text
    text = (DOCS / "operations.md").read_text()
    names = {f.name + ("_total" if f.type == "counter" else "") for f in text_string_to_metric_families(exposed)}
    ours = {n for n in names if n.startswith("segflow_") and not n.endswith("_created")}  # the client's timestamps
    assert {"segflow_events_total", "segflow_destination_delivered_total", "segflow_intent_score"} <= ours
    missing = [n for n in ours if f"`{n}" not in text and f"`{n.removeprefix('segflow_destination')}`" not in text]
    assert not missing, f"metrics not in docs/operations.md: {sorted(missing)}"
