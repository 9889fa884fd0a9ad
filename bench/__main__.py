"""``make bench``: every benchmark, one JSON line per figure."""

from __future__ import annotations

from bench import features, ingest, training

for module in (ingest, features, training):
    module.main()
