"""Segment config: ``config/segments.yaml`` loaded, checked and compiled.

A config has a ``version``, named ``thresholds``, ``segments`` (name,
description, rule; optionally an ``exit`` rule for hysteresis and a
``min_dwell``) and ``groups`` of mutually exclusive segments in priority
order. Every error names the file, line and column, the problem and, where
one is close, the intended name; unknown names, type errors and cycles
between segments are refused at load. Each loaded config gets a version id
(a hash of its content) that transitions carry.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

from features.events import CANONICAL_TYPES
from features.specs import Spec, parse_duration
from segments.closures import Fn
from segments.grammar import RuleError
from segments.ir import FROM_FEATURES, FROM_SCORES, FROM_THRESHOLDS, Compare, Not, Read, walk
from segments.rules import Rule, compile_rule


class ConfigError(ValueError):
    """Every problem of a config, each as ``file:line:column: problem``."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass(frozen=True, slots=True)
class Segment:
    name: str
    description: str
    rule: Rule
    exit: Rule | None = None
    min_dwell_ms: int = 0


@dataclass(frozen=True, slots=True)
class Group:
    name: str
    segments: tuple[str, ...]  # highest priority first


@dataclass(slots=True)
class SegmentConfig:
    version: str
    config_id: str
    thresholds: dict[str, float]
    segments: dict[str, Segment]  # in evaluation order: dependencies first
    groups: list[Group] = field(default_factory=list)
    _steps: list[tuple[str, int, Fn | None, Fn]] | None = field(default=None, repr=False, compare=False)

    @property
    def steps(self) -> list[tuple[str, int, Fn | None, Fn]]:
        """Each segment as evaluation needs it, in order: name, min dwell (ms),
        exit rule and rule (as functions of a Context)."""
        if self._steps is None:
            self._steps = [
                (name, seg.min_dwell_ms, seg.exit.fn if seg.exit is not None else None, seg.rule.fn)
                for name, seg in self.segments.items()
            ]
        return self._steps

    @property
    def specs(self) -> list[Spec]:
        """The feature specs the rules need, each once."""
        out: list[Spec] = []
        for seg in self.segments.values():
            for rule in (seg.rule, seg.exit):
                for spec in rule.specs if rule is not None else ():
                    if spec not in out:
                        out.append(spec)
        return out

    def group_of(self, segment: str) -> Group | None:
        for g in self.groups:
            if segment in g.segments:
                return g
        return None


def _line_col(node: yaml.Node, err: RuleError) -> tuple[int, int]:
    """Where a rule error lies in the YAML file (1-based)."""
    mark = node.start_mark
    line = (err.line or 1) - 1
    column = (err.column or 1) - 1
    style = getattr(node, "style", None)
    if style in ("|", ">"):
        value_line = mark.line + 1 + line
        indent = _block_indent(mark.buffer, value_line) if mark.buffer else mark.column + 2
        return value_line + 1, indent + column + 1
    if line == 0:
        return mark.line + 1, mark.column + column + 1 + (1 if style in ("'", '"') else 0)
    return mark.line + 1 + line, column + 1


def _block_indent(buffer: str, line_index: int) -> int:
    lines = buffer.split("\n")
    if line_index < len(lines):
        text = lines[line_index]
        return len(text) - len(text.lstrip(" "))
    return 0


def _node_map(node: yaml.Node) -> dict[str, yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return {k.value: v for k, v in node.value}
    return {}


def load(path: str | Path, known_features: Sequence[str | Spec] = ()) -> SegmentConfig:
    path = Path(path)
    return loads(path.read_text(), str(path), known_features)


def yaml_problem(exc: yaml.YAMLError, source: str) -> str:
    r"""A YAML error placed where its problem starts: an unclosed quote or
    bracket where it opens (PyYAML's context), not where the file ends; any
    other where PyYAML found it.

    >>> yaml_problem(_error('a: 1\nb: "open\nc: 2\n'), "s.yaml")
    's.yaml:2:4: not valid YAML: while scanning a quoted scalar, found unexpected end of stream (at line 4)'
    >>> yaml_problem(_error('a:\n  - x: 1\n  - y: 2\n bad: 3\n'), "s.yaml")[:36]
    's.yaml:4:2: not valid YAML: while pa'
    """
    context = getattr(exc, "context", None) or ""
    # an unclosed quote or bracket: where it opens; a block's error: where it is (its context is the whole block)
    start = getattr(exc, "context_mark", None) if ("quoted" in context or "flow" in context) else None
    found = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    mark = start or found
    where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
    what = f"{context}, {problem}" if context else problem
    if start is not None and found is not None and found.line != start.line:
        what += f" (at line {found.line + 1})"
    return f"{source}{where}: not valid YAML: {what}"


def _error(text: str) -> yaml.YAMLError:
    try:
        yaml.safe_load(text)
    except yaml.YAMLError as exc:
        return exc
    raise AssertionError("valid YAML")


def loads(text: str, source: str = "segments.yaml", known_features: Sequence[str | Spec] = ()) -> SegmentConfig:
    problems: list[str] = []

    def at(node: yaml.Node | None, message: str) -> None:
        if node is None:
            problems.append(f"{source}: {message}")
        else:
            problems.append(f"{source}:{node.start_mark.line + 1}:{node.start_mark.column + 1}: {message}")

    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except RecursionError:
        raise ConfigError([f"{source}: the YAML is nested too deeply"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([yaml_problem(exc, source)]) from None
    if not isinstance(data, dict) or root is None:
        raise ConfigError([f"{source}: expected a mapping with version, thresholds, segments and groups"])
    nodes = _node_map(root)
    for key in data:
        if key not in ("version", "thresholds", "segments", "groups"):
            at(_key_node(root, key), f"unknown section {key!r} (expected version, thresholds, segments, groups)")

    thresholds: dict[str, float] = {}
    for name, value in (data.get("thresholds") or {}).items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            at(_node_map(nodes["thresholds"]).get(name), f"threshold {name!r} must be a number, got {value!r}")
        else:
            thresholds[str(name)] = float(value)

    raw_segments = data.get("segments") or []
    seg_nodes = (
        nodes["segments"].value if "segments" in nodes and isinstance(nodes["segments"], yaml.SequenceNode) else []
    )
    if not isinstance(raw_segments, list):
        at(nodes.get("segments"), "segments must be a list")
        raw_segments = []
    names = [s.get("name") for s in raw_segments if isinstance(s, dict)]
    events = [*CANONICAL_TYPES, "any"]
    compiled: dict[str, Segment] = {}
    for raw, node in zip(raw_segments, seg_nodes, strict=False):
        fields = _node_map(node)
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            at(node, "each segment needs a name")
            continue
        name = raw["name"]
        if names.count(name) > 1 and name in compiled:
            at(fields.get("name"), f"segment {name!r} is defined twice")
            continue
        for key in raw:
            if key not in ("name", "description", "rule", "exit", "min_dwell"):
                at(
                    _key_node(node, key),
                    f"unknown segment field {key!r} (expected name, description, rule, exit, min_dwell)",
                )
        rules: dict[str, Rule | None] = {"rule": None, "exit": None}
        for key in ("rule", "exit"):
            rule_text = raw.get(key)
            if rule_text is None:
                if key == "rule":
                    at(node, f"segment {name!r} needs a rule")
                continue
            if not isinstance(rule_text, str):
                at(fields.get(key), f"segment {name!r}: {key} must be text")
                continue
            try:
                rules[key] = compile_rule(rule_text, known_features, events, thresholds)
            except RuleError as err:
                line, col = _line_col(fields[key], err)
                problems.append(f"{source}:{line}:{col}: segment {name!r}: {err.problem}")
        dwell = 0
        if raw.get("min_dwell") is not None:
            try:
                dwell = parse_duration(str(raw["min_dwell"])) // timedelta(milliseconds=1)
            except ValueError as exc:
                at(fields.get("min_dwell"), str(exc))
        main = rules["rule"]
        if main is not None:
            compiled[name] = Segment(name, str(raw.get("description") or ""), main, rules["exit"], dwell)
    for seg in compiled.values():
        for rule in (seg.rule, seg.exit):
            for ref in sorted(rule.segments) if rule is not None else ():
                if ref not in names:
                    node = next(
                        (
                            n
                            for r, n in zip(raw_segments, seg_nodes, strict=False)
                            if isinstance(r, dict) and r.get("name") == seg.name
                        ),
                        None,
                    )
                    close = _suggest(ref, [n for n in names if isinstance(n, str)])
                    at(
                        _node_map(node).get("rule") if node else None,
                        f"segment {seg.name!r}: in_segment({ref!r}) names no segment{close}",
                    )

    order = _order(compiled, problems, source)
    groups: list[Group] = []
    group_nodes = nodes["groups"].value if "groups" in nodes and isinstance(nodes["groups"], yaml.SequenceNode) else []
    for raw, node in zip(data.get("groups") or [], group_nodes, strict=False):
        if (
            not isinstance(raw, dict)
            or not isinstance(raw.get("name"), str)
            or not isinstance(raw.get("segments"), list)
        ):
            at(node, "each group needs a name and a list of segments in priority order")
            continue
        for member in raw["segments"]:
            if member not in names:
                at(
                    _node_map(node).get("segments"),
                    f"group {raw['name']!r}: unknown segment {member!r}"
                    f"{_suggest(str(member), [n for n in names if isinstance(n, str)])}",
                )
        groups.append(Group(raw["name"], tuple(raw["segments"])))
    seen: dict[str, str] = {}
    for g in groups:
        for member in g.segments:
            if member in seen:
                problems.append(f"{source}: segment {member!r} is in groups {seen[member]!r} and {g.name!r}")
            seen[member] = g.name
    if problems:
        raise ConfigError(problems)
    config_id = hashlib.sha256(text.encode()).hexdigest()[:12]
    return SegmentConfig(str(data.get("version", "1")), config_id, thresholds, {n: compiled[n] for n in order}, groups)


def _key_node(node: yaml.Node, key: str) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for k, _ in node.value:
            if k.value == key:
                return k
    return None


def _suggest(name: str, known: list[str]) -> str:
    import difflib

    guess = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f" (did you mean {guess[0]!r}?)" if guess else ""


def _order(segments: dict[str, Segment], problems: list[str], source: str) -> list[str]:
    """Segments with those they depend on first; cycles are refused."""
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2 or name not in segments:
            return
        if state.get(name) == 1:
            cycle = " -> ".join([*path[path.index(name) :], name])
            problems.append(f"{source}: segments depend on each other in a cycle: {cycle}")
            return
        state[name] = 1
        seg = segments[name]
        deps = set(seg.rule.segments) | (seg.exit.segments if seg.exit else set())
        for dep in sorted(deps):
            visit(dep, [*path, name])
        state[name] = 2
        order.append(name)

    for name in segments:
        visit(name, [])
    return order


def as_dict(config: SegmentConfig) -> dict[str, Any]:
    return {
        "version": config.version,
        "config_id": config.config_id,
        "thresholds": config.thresholds,
        "segments": {
            n: {
                "description": s.description,
                "rule": s.rule.text.strip(),
                "exit": s.exit.text.strip() if s.exit else None,
                "min_dwell_ms": s.min_dwell_ms,
            }
            for n, s in config.segments.items()
        },
        "groups": [{"name": g.name, "segments": list(g.segments)} for g in config.groups],
    }


def diff(old: SegmentConfig, new: SegmentConfig) -> list[str]:
    """What changed, rule by rule: ``+`` a new segment, ``-`` a removed one,
    ``~`` a changed rule, exit, dwell, description, threshold or the groups."""
    a, b = as_dict(old), as_dict(new)
    lines = []
    for name in sorted(set(a["segments"]) | set(b["segments"])):
        before, after = a["segments"].get(name), b["segments"].get(name)
        if before == after:
            continue
        if before is None:
            lines.append(f"+ {name}: {after['rule']}")
        elif after is None:
            lines.append(f"- {name}: {before['rule']}")
        else:
            for key in ("rule", "exit", "min_dwell_ms", "description"):
                if before[key] != after[key]:
                    lines.append(f"~ {name}.{key}: {before[key]!r} -> {after[key]!r}")
    for key in sorted(set(a["thresholds"]) | set(b["thresholds"])):
        if a["thresholds"].get(key) != b["thresholds"].get(key):
            lines.append(f"~ thresholds.{key}: {a['thresholds'].get(key)} -> {b['thresholds'].get(key)}")
    if a["groups"] != b["groups"]:
        lines.append(f"~ groups: {a['groups']} -> {b['groups']}")
    return lines


@dataclass(frozen=True, slots=True)
class ScoreThreshold:
    """A threshold a rule compares with a score: the entry (``intent >= t``) or
    the exit (``intent < t`` in an exit rule) of a segment; or, in an entry
    rule, with a feature (``cart_value_7d >= t``, ``since(purchase) <= t``)."""

    name: str
    score: str  # the score, or the feature, compared with it
    role: str  # "entry" or "exit"
    segment: str
    op: str = ">="  # as the score is compared with it: ">=" or ">" (an entry), "<" or "<=" (an exit)
    spec: Spec | None = None  # the feature compared with it (None: a score)
    recency: bool = False  # the feature is a since(...): never is infinitely long ago


_FLIP = {">=": "<=", ">": "<", "<=": ">=", "<": ">", "==": "==", "!=": "!="}


def threshold_reads(config: SegmentConfig) -> dict[str, int]:
    """How many times the rules read each threshold, however they use it."""
    counts: dict[str, int] = {}
    for segment in config.segments.values():
        for rule in (segment.rule, segment.exit):
            for node in walk(rule.tree) if rule is not None and rule.tree is not None else ():
                if isinstance(node, Read) and node.source == FROM_THRESHOLDS:
                    counts[node.name] = counts.get(node.name, 0) + 1
    return counts


def score_thresholds(config: SegmentConfig) -> list[ScoreThreshold]:
    """Every use of a threshold compared with a score, with its role, in config order
    (:func:`rule_thresholds` without the features).

    >>> text = '''
    ... thresholds: {likely: 0.4, likely_exit: 0.3, cart: 100}
    ... segments:
    ...   - name: buyers
    ...     rule: intent >= thresholds.likely and cart_value_7d >= thresholds.cart
    ...     exit: intent < thresholds.likely_exit
    ... '''
    >>> [(t.name, t.score, t.role) for t in score_thresholds(loads(text, known_features=["cart_value_7d"]))]
    [('likely', 'intent', 'entry'), ('likely_exit', 'intent', 'exit')]
    """
    return [t for t in rule_thresholds(config) if t.spec is None]


def rule_thresholds(config: SegmentConfig) -> list[ScoreThreshold]:
    """Every use of a threshold compared with a score (entries and exits, as
    :func:`score_thresholds`) or, in an entry rule, with a feature (any of
    ``>=``, ``>``, ``<=``, ``<``), in config order."""
    found: list[ScoreThreshold] = []
    for segment in config.segments.values():
        for rule, exiting in ((segment.rule, False), (segment.exit, True)):
            tree = rule.tree if rule is not None else None
            negated = {id(n) for top in walk(tree) if isinstance(top, Not) for n in walk(top.part)} if tree else set()
            for node in walk(tree) if tree is not None else ():
                if not isinstance(node, Compare) or not isinstance(node.left, Read) or not isinstance(node.right, Read):
                    continue
                if id(node) in negated:  # under a not: it flags the other way; not followed
                    continue
                op, left, right = node.op, node.left, node.right
                if left.source == FROM_THRESHOLDS:  # t <= intent: as intent >= t
                    op, left, right = _FLIP[op], right, left
                if right.source != FROM_THRESHOLDS or left.source not in (FROM_SCORES, FROM_FEATURES):
                    continue
                if left.source == FROM_FEATURES:  # a feature: an entry rule's, either way round
                    if not exiting and op in (">", ">=", "<", "<=") and left.spec is not None:
                        found.append(
                            ScoreThreshold(right.name, left.name, "entry", segment.name, op, left.spec, left.recency)
                        )
                    continue
                # the entry comes from the rule only; an exit partner is a "<" in the exit rule
                role = ("exit" if op in ("<", "<=") else "") if exiting else ("entry" if op in (">", ">=") else "")
                if role:
                    found.append(ScoreThreshold(right.name, left.name, role, segment.name, op))
    return found
