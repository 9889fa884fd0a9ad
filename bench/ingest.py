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


def realistic_bodies(n_bodies: int = 20, n: int = 500) -> list[tuple[bytes, int]]:
    """Batch bodies of a realistic mix, each with personal data to scrub: a
    tenth of the events are identify calls carrying an email, a phone and a
    name; some users are known by their email; page URLs carry an email in
    their query; every person's values differ from body to body."""
    history = generate(users=1500, days=3, seed=5)
    events = list(table_to_events(history.events.slice(0, n_bodies * n)))
    bodies = []
    for b in range(n_bodies):
        items = []
        part = events[b * n : (b + 1) * n]
        for i, e in enumerate(part):
            p = to_payload(e)
            who = f"shopper{b}x{i}"
            if i % 10 == 0:
                email, phone = f"{who}@mail.example", f"+1555{b:03d}{i:04d}"
                traits = {"email": email, "phone": phone, "name": f"Pat {who}", "plan": "gold"}
                p = {"type": "identify", "userId": p.get("userId") or email, "messageId": p["messageId"],
                     "timestamp": p["timestamp"], "traits": traits}  # fmt: skip
            elif i % 7 == 0:
                p["userId"] = f"{who}@mail.example"
            if p.get("type") == "page" or i % 5 == 0:
                p.setdefault("context", {})["page"] = {
                    "url": f"https://shop.example/p?email={who}%40mail.example&ref=n"
                }
            p.setdefault("context", {}).update(
                {"userAgent": "Mozilla/5.0 (X11; Linux x86_64)", "locale": "en-US", "ip": f"203.0.{b}.{i % 250}"}
            )
            p["sentAt"] = format_ms(e.ts_ms + 150)
            items.append(p)
        bodies.append((orjson.dumps({"batch": items, "sentAt": format_ms(part[-1].ts_ms + 200)}), part[-1].ts_ms + 250))
    return bodies


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

    bodies = realistic_bodies()
    parser = SegmentParser(Pseudonymizer(b"b" * 32))
    n = sum(len(parser.body(body, received_ms=received, kind="batch")) for body, received in bodies)
    rounds = 5

    def parse() -> None:
        for _ in range(rounds):
            for body, received in bodies:
                parser.body(body, received_ms=received, kind="batch")

    def decode() -> None:
        for _ in range(rounds):
            for body, _received in bodies:
                orjson.loads(body)

    seconds, decoding = best_of(3, parse), best_of(3, decode)
    emit("parse", "parse_events_per_s", n * rounds / seconds, "events/s", ">= 200000",
         bodies=len(bodies), body_bytes=len(bodies[0][0]), personal="identify traits, emails as ids, urls, ips",
         vs_orjson_loads_ratio=round(seconds / decoding, 1))  # fmt: skip


if __name__ == "__main__":
    main()
