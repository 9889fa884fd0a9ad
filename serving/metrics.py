"""Prometheus metrics: the engine's counters read at scrape time, plus the
request-side figures (rejects by reason, latency from receipt to decision)
and each destination's deliveries. Labels are segment, destination names
and reasons, never user ids.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from serving.engine import Engine


class Metrics:
    def __init__(
        self,
        engine: Callable[[], Engine | None],
        deliveries: Callable[[], list[dict[str, Any]]] = list,
    ) -> None:
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
        self.registry.register(_DeliveryCollector(deliveries))


class _DeliveryCollector(Collector):
    def __init__(self, deliveries: Callable[[], list[dict[str, Any]]]) -> None:
        self._deliveries = deliveries  # each destination's status, read from its ledger when scraped

    def collect(self) -> Iterator[Metric]:
        label = ["destination"]
        families: dict[str, CounterMetricFamily | GaugeMetricFamily] = {
            "delivered": CounterMetricFamily("segflow_destination_delivered", "Changes delivered", labels=label),
            "attempts": CounterMetricFamily("segflow_destination_attempts", "Requests made", labels=label),
            "retries": CounterMetricFamily("segflow_destination_retries", "Failed attempts retried", labels=label),
            "dead": CounterMetricFamily("segflow_destination_dead_letters", "Changes dead-lettered", labels=label),
            "cancelled": CounterMetricFamily(
                "segflow_destination_cancelled", "Changes cancelled (frequency cap, flap guard)", labels=label
            ),
            "suppressed": CounterMetricFamily(
                "segflow_destination_suppressed", "Enters not sent: the user gets no email", labels=label
            ),
            "skipped": CounterMetricFamily(
                "segflow_destination_skipped", "Changes the platform could not apply (unknown user)", labels=label
            ),
            "deletions": CounterMetricFamily(
                "segflow_destination_deletion_requests", "Deletion requests sent after erasures", labels=label
            ),
            "queued": GaugeMetricFamily("segflow_destination_queued", "Changes waiting to be delivered", labels=label),
        }
        oldest = GaugeMetricFamily(
            "segflow_destination_oldest_undelivered_seconds",
            "Age of the oldest change not yet delivered (0 when none waits)",
            labels=["destination"],
        )
        now = time.time()
        for status in self._deliveries():
            name, counted, first = status["name"], status["since_start"], status["oldest_undelivered_ms"]
            for field, family in families.items():
                family.add_metric([name], status["counts"]["pending"] if field == "queued" else counted[field])
            oldest.add_metric([name], max(now - first / 1000, 0.0) if first is not None else 0.0)
        yield from families.values()
        yield oldest


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
        yield GaugeMetricFamily("segflow_identity_links", "Ids joined to another profile", value=len(engine.identity))
        yield CounterMetricFamily(
            "segflow_identity_conflicts",
            "Links refused: the id had joined another profile first",
            value=engine.identity.conflicts,
        )
        yield GaugeMetricFamily(
            "segflow_online_drift",
            "1 when ADWIN has flagged drift in the online loss",
            value=1.0 if engine.scorers.online.drift_detected_ else 0.0,
        )
        monitor = engine.scorers.drift
        if monitor is not None:
            drift = GaugeMetricFamily(
                "segflow_batch_drift_psi",
                "Population stability index of live batch scores (column score) and the batch model's top "
                "features against its training rows, since the model came in force; above 0.25: shifted",
                labels=["column"],
            )
            for column, psi in sorted(monitor.report().items()):
                drift.add_metric([column], psi)
            yield drift
            yield CounterMetricFamily("segflow_batch_drift_observed", "Events counted for drift", value=monitor.seen)
        scores = HistogramMetricFamily("segflow_intent_score", "Intent scores of scored events")
        cumulative, buckets = 0, []
        for tenth in range(10):
            cumulative += s.scores.get(tenth, 0)
            buckets.append((str((tenth + 1) / 10) if tenth < 9 else "+Inf", cumulative))
        scores.add_metric([], buckets, sum_value=s.score_sum)
        yield scores
