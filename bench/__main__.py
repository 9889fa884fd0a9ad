"""``make bench``: every benchmark, one JSON line per figure."""

from __future__ import annotations

from bench import features, ingest

for module in (ingest, features):
    module.main()
