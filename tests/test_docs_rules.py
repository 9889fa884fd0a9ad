"""The rule-language reference runs: every ``yaml example`` block of
docs/rules.md is a config and a timeline, run as ``segflow segments test``
runs fixtures, and every node type of the rule IR, every function and every
score appears in at least one example."""

from __future__ import annotations

import re
import typing
from pathlib import Path

import pytest
import yaml

from features.defaults import RULE_SPECS
from segments import ir
from segments.checking import FUNCTIONS, SCORES
from segments.config import loads
from segments.fixtures import run_timeline

DOC = Path(__file__).resolve().parent.parent / "docs" / "rules.md"
_BLOCK = re.compile(r"^```yaml example\n(.*?)^```", re.S | re.M)


def _examples() -> list[tuple[str, dict]]:
    text = DOC.read_text()
    out = []
    for match in _BLOCK.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        out.append((f"docs/rules.md:{line}", yaml.safe_load(match.group(1))))
    return out


EXAMPLES = _examples()


def _config(example: dict, where: str):
    parts = {"version": 1, **{k: v for k, v in example.items() if k != "timeline"}}
    return loads(yaml.safe_dump(parts, sort_keys=False), where, RULE_SPECS)


@pytest.mark.parametrize(("where", "example"), EXAMPLES, ids=[w for w, _ in EXAMPLES])
def test_each_example_enters_and_exits_as_it_says(where: str, example: dict) -> None:
    config = _config(example, where)
    passed, diff = run_timeline(config, dict(example["timeline"]), where)
    assert passed, f"{where}:\n{diff}"


def test_every_construct_of_the_rule_language_has_an_example() -> None:
    assert len(EXAMPLES) >= 10, "the examples were not found in docs/rules.md"
    seen: set[type] = set()
    rules: list[str] = []
    sources: set[int] = set()
    for where, example in EXAMPLES:
        for segment in _config(example, where).segments.values():
            for rule in (segment.rule, segment.exit):
                if rule is None:
                    continue
                assert rule.tree is not None
                rules.append(rule.text)
                for node in ir.walk(rule.tree):
                    seen.add(type(node))
                    if isinstance(node, ir.Read):
                        sources.add(node.source)
    node_types = set(typing.get_args(ir.Node))
    assert node_types, "the rule IR lists no node types"
    missing = sorted(t.__name__ for t in node_types - seen)
    assert not missing, f"rule IR node types with no example in docs/rules.md: {missing}"
    assert sources == {ir.FROM_FEATURES, ir.FROM_SCORES, ir.FROM_THRESHOLDS}
    called = {name for name in FUNCTIONS if any(re.search(rf"\b{name}\(", r) for r in rules)}
    assert called == set(FUNCTIONS), f"functions with no example: {sorted(set(FUNCTIONS) - called)}"
    named = {s for s in SCORES if any(re.search(rf"\b{s}\b", r) for r in rules)}
    assert named == set(SCORES), f"scores with no example: {sorted(set(SCORES) - named)}"
