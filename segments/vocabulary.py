"""Does a config speak the events' vocabulary? The property names its rules
read (filters such as ``categroy == "shoes"``, the properties summed,
averaged or counted distinct) checked against the ones segflow knows: the
canonical properties and event fields, those the configured features
declare, and those the events at hand carry. A name nobody declares and no
event carries is most likely misspelled: the segment would quietly match
nobody.

>>> from segments.config import loads
>>> config = loads('''
... version: 1
... segments:
...   - {name: shoes, rule: 'count(product_view, 24h, categroy == "shoes") >= 1'}
... ''')
>>> unknown_properties(config, carried={"category", "sku"})
["segment 'shoes': no feature declares a property 'categroy' and no event carries one (did you mean 'category'?)"]
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator

import orjson
import pyarrow as pa

from features.events import NUMERIC_PROPERTIES, STRING_PROPERTIES
from features.specs import EVENT_FIELDS, TRAIT, Ratio, Relative, Spec
from segments.config import SegmentConfig

KNOWN = frozenset((*EVENT_FIELDS, *NUMERIC_PROPERTIES, *STRING_PROPERTIES))


def properties_of(spec: Spec) -> Iterator[str]:
    """The event properties (and fields) a spec reads."""
    if isinstance(spec, Ratio):
        yield from properties_of(spec.numerator)
        yield from properties_of(spec.denominator)
        return
    where = getattr(spec, "where", None)
    if where is not None:
        yield where.field
    prop = getattr(spec, "prop", None)
    if isinstance(prop, Relative):
        yield prop.prop
        yield prop.by
    elif isinstance(prop, str):
        yield prop
    field = getattr(spec, "field", None)
    if isinstance(field, str) and not field.startswith(TRAIT):
        yield field


def read_by_segment(config: SegmentConfig) -> dict[str, set[str]]:
    """Each segment's property names, from its rule and exit rule."""
    out: dict[str, set[str]] = {}
    for name, segment in config.segments.items():
        rules = [segment.rule] + ([segment.exit] if segment.exit is not None else [])
        out[name] = {p for rule in rules for spec in rule.specs for p in properties_of(spec)}
    return out


def carried(table: pa.Table) -> set[str]:
    """The property names the events of a table carry (typed columns with a value, and every JSON key)."""
    names = {c for c in KNOWN if c in table.column_names and table.column(c).null_count < table.num_rows}
    for text in table.column("properties").to_pylist() if "properties" in table.column_names else []:
        if text:
            names.update(orjson.loads(text))
    return names


def unknown_properties(config: SegmentConfig, carried: Iterable[str] = (), declared: Iterable[Spec] = ()) -> list[str]:
    """A warning for each property a segment reads that is neither known, declared
    by a configured feature (``declared``), nor carried by an event (``carried``)."""
    known = set(KNOWN) | set(carried) | {p for spec in declared for p in properties_of(spec)}
    problems = []
    for segment, names in read_by_segment(config).items():
        for name in sorted(names - known):
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(
                f"segment {segment!r}: no feature declares a property {name!r} and no event carries one{hint}"
            )
    return problems
