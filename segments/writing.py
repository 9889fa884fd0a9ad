"""Writing thresholds back into a segment config, the file as its authors
left it: comments, blank lines, order and quoting kept (ruamel.yaml's round
trip), only the values set change.

>>> text = "thresholds:\\n  likely_buyer: 0.35   # who is likely to buy\\nsegments: []\\n"
>>> print(with_thresholds(text, {"likely_buyer": 0.4123}), end="")
thresholds:
  likely_buyer: 0.4123 # who is likely to buy
segments: []
"""

from __future__ import annotations

import io
from collections.abc import Mapping

from ruamel.yaml import YAML


def _yaml() -> YAML:
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096  # long rules stay on their lines
    yaml.indent(mapping=2, sequence=4, offset=2)  # "  - name:", as the shipped configs are written
    return yaml


def with_thresholds(text: str, values: Mapping[str, float]) -> str:
    """``text`` with these thresholds set (rounded to 4 places); KeyError names
    one the config does not have (a threshold is declared before rules use it)."""
    yaml = _yaml()
    data = yaml.load(text)
    thresholds = (data.get("thresholds") if isinstance(data, Mapping) else None) or {}
    missing = sorted(set(values) - set(thresholds))
    if missing:
        raise KeyError(f"the config has no thresholds {missing} (it has {sorted(thresholds)})")
    untouched = io.StringIO()
    yaml.dump(data, untouched)
    if untouched.getvalue() != text:  # another layout than the one kept: refuse rather than rewrite it
        raise ValueError("this config's layout would not survive a rewrite (indents, ---, CRLF): set it by hand")
    for name, value in values.items():
        thresholds[name] = round(float(value), 4)
    out = io.StringIO()
    yaml.dump(data, out)
    return out.getvalue()
