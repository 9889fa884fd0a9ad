"""`segflow segments validate|test|diff`: exit codes and readable output."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from cli.main import app

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


def test_validate_shipped_and_broken(tmp_path: Path) -> None:
    ok = runner.invoke(app, ["segments", "validate", str(ROOT / "config/segments.yaml")])
    assert ok.exit_code == 0 and "valid" in ok.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("segments:\n  - name: x\n    rule: count(add_to_crt, 1h) >= 1\n  - name: y\n    rule: intent >\n")
    result = runner.invoke(app, ["segments", "validate", str(bad)])
    assert result.exit_code == 1
    assert "bad.yaml:3:17: segment 'x': unknown event type 'add_to_crt' (did you mean 'add_to_cart'?)" in result.output
    assert "segment 'y'" in result.output and "2 problem(s)" in result.output
    assert runner.invoke(app, ["segments", "validate", str(tmp_path / "none.yaml")]).exit_code == 2


def test_a_misspelled_property_is_warned_of_and_an_error_with_strict(tmp_path: Path) -> None:
    from features.events import Event
    from features.table import events_to_table, write_table

    events = [Event("m1", "Coupon Applied", "u1", None, 1_767_225_600_000, 1_767_225_600_000,
                    properties={"coupon": "WELCOME", "category": "shoes"})]  # fmt: skip
    write_table(events_to_table(events), tmp_path / "events.parquet")
    config = tmp_path / "segments.yaml"
    config.write_text(
        "version: 1\nsegments:\n"
        "  - {name: typo, rule: 'count(product_view, 24h, categroy == \"shoes\") >= 1'}\n"
        '  - {name: custom, rule: \'count("Coupon Applied", 7d, coupon == "WELCOME") >= 1\'}\n'
    )
    args = ["segments", "validate", str(config), "--events", str(tmp_path / "events.parquet")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "warning: segment 'typo': no feature declares a property 'categroy'" in result.output
    assert "did you mean 'category'?" in result.output and "'custom'" not in result.output  # the events carry coupon
    strict = runner.invoke(app, [*args, "--strict"])
    assert strict.exit_code == 1 and "error: segment 'typo'" in strict.output


def test_rules_over_traits_and_custom_events_enter_and_exit_at_the_right_instants() -> None:
    result = runner.invoke(app, ["segments", "test", str(ROOT / "config/fixtures/vocabulary.yaml")])
    assert result.exit_code == 0, result.output
    assert "3 passed, 0 failed" in result.output


def test_shipped_fixtures_pass_and_a_wrong_one_shows_a_diff(tmp_path: Path) -> None:
    result = runner.invoke(app, ["segments", "test", str(ROOT / "config/fixtures/segments.yaml")])
    assert result.exit_code == 0, result.output
    assert "11 passed, 0 failed" in result.output
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(f"""config: {ROOT / "config/segments.yaml"}
timelines:
  - name: off by an hour
    start: 2026-01-01T00:00:00Z
    events: [{{at: 0s, type: add_to_cart, price: 3}}]
    until: 3d
    only: [cart_abandoners_48h]
    expect: [{{at: 47h, enter: cart_abandoners_48h}}]
""")
    result = runner.invoke(app, ["segments", "test", str(wrong)])
    assert result.exit_code == 1
    assert "-2026-01-02T23:00:00.000Z (+169200s) enter cart_abandoners_48h" in result.output
    assert "+2026-01-03T00:00:00.000Z (+172800s) enter cart_abandoners_48h" in result.output


def test_diff_rule_by_rule(tmp_path: Path) -> None:
    new = tmp_path / "new.yaml"
    text = (ROOT / "config/segments.yaml").read_text()
    new.write_text(
        text.replace("likely_buyer: 0.35", "likely_buyer: 0.4").replace(
            "rule: count(email_click, 7d) >= 3", "rule: count(email_click, 7d) >= 2"
        )
    )
    result = runner.invoke(app, ["segments", "diff", str(ROOT / "config/segments.yaml"), str(new)])
    assert result.exit_code == 0
    assert "~ email_clickers_7d.rule: 'count(email_click, 7d) >= 3' -> 'count(email_click, 7d) >= 2'" in result.output
    assert "~ thresholds.likely_buyer: 0.35 -> 0.4" in result.output
