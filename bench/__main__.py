"""``make bench``: every benchmark, one JSON line per figure."""

from __future__ import annotations

from bench import features, ingest, rules, serving, training

for module in (ingest, features, rules, training, serving):
    module.main()
