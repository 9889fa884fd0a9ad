"""``make bench``: every benchmark, one JSON line per figure."""

from __future__ import annotations

from bench import ingest

for module in (ingest,):
    module.main()
