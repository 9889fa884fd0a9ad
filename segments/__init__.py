"""Segments: the rule language, segment config, membership evaluation."""

from segments.closures import Context
from segments.config import ConfigError, Group, Segment, SegmentConfig, load, loads
from segments.grammar import RuleError
from segments.membership import Memberships, Reason, Transition, evaluate, next_due
from segments.rules import Rule, compile_rule
from segments.timeline import feature_set_for, fold

__all__ = [
    "ConfigError",
    "Context",
    "Group",
    "Memberships",
    "Reason",
    "Rule",
    "RuleError",
    "Segment",
    "SegmentConfig",
    "Transition",
    "compile_rule",
    "evaluate",
    "feature_set_for",
    "fold",
    "load",
    "loads",
    "next_due",
]
