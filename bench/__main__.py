"""``make bench``: every benchmark, one JSON line per figure."""

from __future__ import annotations

from bench import features, ingest, rules, training

for module in (ingest, features, rules, training):
    module.main()
