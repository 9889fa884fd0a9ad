"""What is in force: the segment config, the feature set it and the models
derive, and the features the intent models read. Shared by the service, the
preview, the CLI and the benchmarks."""

from __future__ import annotations

from pathlib import Path

from features.defaults import DEFAULT_SPECS, RULE_SPECS
from features.online import FeatureSet
from segments import config as segment_config
from segments.config import SegmentConfig
from segments.timeline import feature_set_for
from serving.scorers import Scorers

BASE_SPECS = RULE_SPECS


def build_features(config: SegmentConfig, scorers: Scorers | None = None) -> FeatureSet:
    """The default specs and habits, the specs the models bring (the cluster
    model's), and every spec the rules derive."""
    specs = list(BASE_SPECS)
    names = {s.name for s in specs}
    for spec in scorers.specs if scorers is not None else ():
        if spec in specs:
            continue
        if spec.name in names:
            raise ValueError(f"a model defines the feature {spec.name} differently from the service")
        specs.append(spec)
        names.add(spec.name)
    return feature_set_for(config, specs)


def load_config(path: str | Path) -> SegmentConfig:
    """A segment config whose rules may name any base feature."""
    return segment_config.load(path, BASE_SPECS)


def loads_config(text: str, source: str = "segments.yaml") -> SegmentConfig:
    return segment_config.loads(text, source, BASE_SPECS)


def intent_feature_names() -> tuple[str, ...]:
    return tuple(s.name for s in DEFAULT_SPECS)


def longest_window_ms(features: FeatureSet) -> int:
    longest = 0
    for spec in features.specs:
        within = getattr(spec, "within_ms", 0)
        if isinstance(within, int):
            longest = max(longest, within)
    return longest
