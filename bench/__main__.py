"""``make bench``: every benchmark, one JSON line per figure."""

from __future__ import annotations

from bench import destinations, features, http, identity, ingest, redis_store, rules, serving, snapshot, training

for module in (ingest, features, rules, training, serving, identity, http, snapshot, destinations, redis_store):
    module.main()
