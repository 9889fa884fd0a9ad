"""Generator and Segment Spec parsing throughput."""

from __future__ import annotations

import orjson

from bench.report import best_of, emit
from features.events import format_ms, to_payload
from features.pseudonyms import Pseudonymizer
from features.segment_spec import SegmentParser
from features.table import table_to_events
from training.synthetic import generate


def batch_body(n: int = 500) -> tuple[bytes, int]:
    """A 500-event batch body shaped as analytics.js sends it, and when it arrives."""
    history = generate(users=100, days=2, seed=3)
    events = list(table_to_events(history.events.slice(0, n)))
    items = []
    for e in events:
        p = to_payload(e)
        p["context"] = {
            **p.get("context", {}),
            "library": {"name": "analytics.js", "version": "next-1.70.0"},
            "userAgent": "Mozilla/5.0 (X11; Linux x86_64)",
            "locale": "en-US",
            "ip": "203.0.113.7",
        }
        p["sentAt"] = format_ms(e.ts_ms + 150)
        p["integrations"] = {}
        items.append(p)
    return orjson.dumps({"batch": items, "sentAt": format_ms(events[-1].ts_ms + 200)}), events[-1].ts_ms + 250


def main() -> None:
    users, days = 20_000, 7
    counted: list[int] = []
    seconds = best_of(1, lambda: counted.append(generate(users=users, days=days, seed=1).events.num_rows))
    emit(
        "generator",
        "generator_events_per_s",
        counted[0] / seconds,
        "events/s",
        ">= 20000",
        events=counted[0],
        seconds=round(seconds, 2),
    )

    body, received = batch_body()
    parser = SegmentParser(Pseudonymizer(b"b" * 32))
    n = len(parser.body(body, received_ms=received, kind="batch"))
    rounds = 200
    seconds = best_of(3, lambda: [parser.body(body, received_ms=received, kind="batch") for _ in range(rounds)])
    emit("parse", "parse_events_per_s", n * rounds / seconds, "events/s", ">= 200000", body_bytes=len(body))


if __name__ == "__main__":
    main()
