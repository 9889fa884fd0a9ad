"""The benchmarks' own inputs stay valid as the product's checks tighten
(``make bench`` is not run by the tests; these catch a bench that would fail)."""

from __future__ import annotations

from bench.ingest import batch_body
from features.pseudonyms import Pseudonymizer
from features.segment_spec import SegmentParser


def test_the_parse_benchmark_body_is_accepted_whole() -> None:
    body, received = batch_body(50)
    events = SegmentParser(Pseudonymizer(b"b" * 32)).body(body, received_ms=received, kind="batch")
    assert len(events) == 50
