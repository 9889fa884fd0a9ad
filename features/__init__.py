"""Features: the event model, feature specs, online and offline computation."""

from features.events import CANONICAL_TYPES, Event, canonical_type, format_ms, ms_to_datetime, to_payload
from features.limits import EventError, PayloadTooLarge
from features.pseudonyms import Pseudonymizer, load_key, looks_personal
from features.segment_spec import SegmentParser
from features.table import SCHEMA, events_to_table, read_table, table_to_events, write_table

__all__ = [
    "CANONICAL_TYPES",
    "SCHEMA",
    "Event",
    "EventError",
    "PayloadTooLarge",
    "Pseudonymizer",
    "SegmentParser",
    "canonical_type",
    "events_to_table",
    "format_ms",
    "load_key",
    "looks_personal",
    "ms_to_datetime",
    "read_table",
    "table_to_events",
    "to_payload",
    "write_table",
]
