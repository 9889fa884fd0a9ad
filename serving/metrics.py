"""Prometheus metrics: the engine's counters read at scrape time, plus the
request-side figures (rejects by reason, latency from receipt to decision).
Labels are segment names and reasons, never user ids.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from serving.engine import Engine


class Metrics:
    def __init__(self, engine: Callable[[], Engine | None]) -> None:
        self.registry = CollectorRegistry()
        self.rejects = Counter(
            "segflow_rejects", "Events or requests refused, by reason", ["reason"], registry=self.registry
        )
        self.latency = Histogram(
            "segflow_decision_latency_seconds",
            "From receipt of an event to its segment decision",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=self.registry,
        )
        self.registry.register(_EngineCollector(engine))


class _EngineCollector(Collector):
    def __init__(self, engine: Callable[[], Engine | None]) -> None:
        self._engine = engine

    def collect(self) -> Iterator[Metric]:
        engine = self._engine()
        if engine is None:
            return
        s = engine.stats
        for name, doc, value in (
            ("segflow_events", "Events accepted", s.events),
            ("segflow_duplicates", "Events dropped as duplicates of an earlier messageId", s.duplicates),
            ("segflow_suppressed", "Events of erased users, accepted and dropped", s.suppressed),
            ("segflow_late_events", "Events older than their profile's lateness allows", s.late),
        ):
            yield CounterMetricFamily(name, doc, value=value)
        transitions = CounterMetricFamily("segflow_transitions", "Segment transitions", labels=["segment", "kind"])
        for (segment, kind), n in sorted(s.transitions.items()):
            transitions.add_metric([segment, kind], n)
        yield transitions
        sizes = GaugeMetricFamily("segflow_segment_size", "Members of each segment", labels=["segment"])
        for segment, n in engine.sizes().items():
            sizes.add_metric([segment], n)
        yield sizes
        yield GaugeMetricFamily("segflow_profiles", "Profiles held", value=len(engine.users))
        yield GaugeMetricFamily(
            "segflow_online_drift",
            "1 when ADWIN has flagged drift in the online loss",
            value=1.0 if engine.scorers.online.drift_detected_ else 0.0,
        )
        scores = HistogramMetricFamily("segflow_intent_score", "Intent scores of scored events")
        cumulative, buckets = 0, []
        for tenth in range(10):
            cumulative += s.scores.get(tenth, 0)
            buckets.append((str((tenth + 1) / 10) if tenth < 9 else "+Inf", cumulative))
        scores.add_metric([], buckets, sum_value=s.score_sum)
        yield scores
