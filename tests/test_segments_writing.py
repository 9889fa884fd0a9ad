"""Thresholds written back into a config change only their own lines: every
comment, blank line and rule stays as its author wrote it."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from features.defaults import RULE_SPECS
from segments.config import loads
from segments.writing import with_thresholds

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = [ROOT / "config/segments.yaml", ROOT / "tests/fixtures/state-v1/segments.yaml"]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.parent.name)
def test_nothing_set_changes_nothing(path: Path) -> None:
    text = path.read_text()
    assert with_thresholds(text, {}) == text


def test_the_likely_buyer_pair_changes_two_lines_and_the_config_reads_them() -> None:
    text = (ROOT / "config/segments.yaml").read_text()
    new = with_thresholds(text, {"likely_buyer": 0.41234, "likely_buyer_exit": 0.36})
    changed = [line for line in difflib.unified_diff(text.splitlines(), new.splitlines(), lineterm="", n=0)
               if line[:1] in "+-" and not line.startswith(("+++", "---"))]  # fmt: skip
    assert changed == [
        "-  likely_buyer: 0.35       # intent score above which a user is a likely buyer",
        "-  likely_buyer_exit: 0.30  # ... and below which a likely buyer stops being one (hysteresis)",
        "+  likely_buyer: 0.4123     # intent score above which a user is a likely buyer",
        "+  likely_buyer_exit: 0.36  # ... and below which a likely buyer stops being one (hysteresis)",
    ]
    config = loads(new, known_features=RULE_SPECS)
    assert config.thresholds["likely_buyer"] == 0.4123 and config.thresholds["likely_buyer_exit"] == 0.36
    assert loads(text, known_features=RULE_SPECS).segments.keys() == config.segments.keys()


def test_a_threshold_the_config_lacks_is_named() -> None:
    with pytest.raises(KeyError, match="no thresholds \\['likely_buyr'\\]"):
        with_thresholds((ROOT / "config/segments.yaml").read_text(), {"likely_buyr": 0.5})
