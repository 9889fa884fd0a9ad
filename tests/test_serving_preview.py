"""Preview: the same history under two configs, what differs, by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from features.events import Event
from features.table import events_to_table, write_table
from models.intent_online import OnlineIntentModel
from serving.preview import preview
from serving.regime import intent_feature_names, loads_config
from serving.scorers import Scorers

T0 = 1_790_035_200_000  # midnight UTC
H = 3_600_000
OLD = """
version: 1
thresholds: {carts: 2}
segments:
  - name: carters
    description: cart adds in the last day
    rule: count(add_to_cart, 24h) >= thresholds.carts
  - name: viewers
    description: a product view in the last day
    rule: count(product_view, 24h) >= 1
"""
NEW = OLD.replace("thresholds: {carts: 2}", "thresholds: {carts: 1}")


def scorers() -> Scorers:
    return Scorers(OnlineIntentModel(), intent_feature_names())


EVENTS = [
    Event("1", "add_to_cart", "ann", None, T0 + H, T0 + H),
    Event("2", "product_view", "ben", None, T0 + 2 * H, T0 + 2 * H),
    Event("3", "add_to_cart", "cat", None, T0 + 3 * H, T0 + 3 * H),
    Event("4", "add_to_cart", "cat", None, T0 + 4 * H, T0 + 4 * H),
    Event("5", "product_view", "ben", None, T0 + 40 * H, T0 + 40 * H),
]


def test_a_lower_threshold_shows_who_would_enter_and_when() -> None:
    result = preview(loads_config(OLD), loads_config(NEW), EVENTS, scorers())
    carters = next(s for s in result.segments if s.name == "carters")
    viewers = next(s for s in result.segments if s.name == "viewers")
    assert carters.status == "changed" and viewers.status == "same"
    assert carters.only_new == [
        ("ann", "enter", T0 + H),
        ("cat", "enter", T0 + 3 * H),  # under the old threshold cat entered an hour later
        ("ann", "exit", T0 + 25 * H),
        ("cat", "exit", T0 + 28 * H),  # one cart add is enough until the later one leaves the window
    ]
    assert carters.only_old == [("cat", "enter", T0 + 4 * H), ("cat", "exit", T0 + 27 * H)]
    assert not viewers.only_new and not viewers.only_old
    # sizes at each day's end: day 0 old {cat}, new {ann, cat}; day 1 everyone has left
    assert [(o, n) for _, o, n in carters.daily] == [(1, 2), (0, 0)]


def test_same_config_changes_nothing() -> None:
    result = preview(loads_config(OLD), loads_config(OLD), EVENTS, scorers())
    assert all(s.status == "same" and not s.only_new and not s.only_old for s in result.segments)


def test_cli_preview_prints_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")  # nothing registered there
    (tmp_path / "old.yaml").write_text(OLD)
    (tmp_path / "new.yaml").write_text(NEW)
    write_table(events_to_table(EVENTS), tmp_path / "events.parquet")
    args = ["segments", "preview", "--config", str(tmp_path / "new.yaml"), "--against", str(tmp_path / "old.yaml"),
            "--events", str(tmp_path / "events.parquet"), "--json"]  # fmt: skip
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    shown = json.loads(done.stdout)  # MLflow logs a new store's migrations on stderr
    assert (
        shown["models"] == {"segflow-intent-online": "fresh:0.003", "intent": "auto"}
        and "frozen" in shown["online_model"]
    )
    carters = next(s for s in shown["segments"] if s["segment"] == "carters")
    assert (carters["would_enter"], carters["would_leave"], carters["size_new"]) == (2, 2, 0)
    bad = CliRunner().invoke(app, [*args[:3], str(tmp_path / "missing.yaml"), *args[4:]])
    assert bad.exit_code == 2


def test_a_segment_that_refers_to_a_changed_one_is_changed_too() -> None:
    old = loads_config("""version: 1
segments:
  - {name: a, description: x, rule: 'count(product_view, 1h) >= 1'}
  - {name: b, description: x, rule: 'in_segment("a")'}
""")
    new = loads_config(
        """version: 1
segments:
  - {name: a, description: x, rule: 'count(product_view, 1h) >= 2'}
  - {name: b, description: x, rule: 'in_segment("a")'}
"""
    )
    result = {
        s.name: s for s in preview(old, new, [Event("m1", "product_view", "U", None, T0, T0)], scorers()).segments
    }
    assert result["b"].status == "changed" and result["b"].only_old == [("U", "enter", T0)]
    assert (result["b"].size_old, result["b"].size_new) == (1, 0)
