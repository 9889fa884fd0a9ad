"""A timeline fixture checks what it names, and says so when it names nothing
or a segment the config lacks (a fixture that checks nothing never passes)."""

from __future__ import annotations

import pytest

from features.defaults import RULE_SPECS
from segments.config import loads
from segments.fixtures import run_timeline

CONFIG = loads(
    "version: 1\nsegments:\n  - name: shoes_browsers_24h\n    rule: count(product_view, 24h) >= 1\n",
    known_features=RULE_SPECS,
)
VIEW = {"at": "0s", "type": "product_view"}


def test_a_timeline_passes_or_fails_on_the_segments_it_names() -> None:
    both = [{"at": "0s", "enter": "shoes_browsers_24h"}, {"at": "24h", "exit": "shoes_browsers_24h"}]
    assert run_timeline(CONFIG, {"events": [VIEW], "expect": both}, "t")[0]
    passed, diff = run_timeline(CONFIG, {"events": [VIEW], "only": ["shoes_browsers_24h"]}, "t")
    assert not passed and "enter shoes_browsers_24h" in diff  # expected nothing, it entered


@pytest.mark.parametrize(
    ("spec", "said"),
    [
        ({"events": [VIEW], "expect": []}, "checks no segment"),
        ({"events": [VIEW], "only": ["shoes_browser_24h"]}, "no segment ['shoes_browser_24h']"),
        ({"events": [VIEW], "expect": [{"at": "0s", "enter": "shoes"}]}, "no segment ['shoes']"),
    ],
)
def test_a_timeline_that_checks_nothing_or_a_missing_segment_is_an_error(spec: dict, said: str) -> None:
    with pytest.raises(ValueError, match=r"t: .*" + said.replace("[", r"\[").replace("]", r"\]")):
        run_timeline(CONFIG, spec, "t")
