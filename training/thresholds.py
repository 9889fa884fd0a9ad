"""Choosing a score threshold for a target, from scores and their labels.

A rule like ``intent >= likely_buyer`` flags a moment when its score is at
least the threshold. For each candidate (every distinct score) the trade-off
table gives precision, recall and the share of moments flagged;
:func:`choose` picks the threshold meeting a target:

- ``precision=P``: the lowest threshold whose precision is at least P (the
  most members at that precision);
- ``recall=R``: the highest threshold whose recall is at least R (the fewest
  members catching that share of buyers).

>>> y = np.array([0, 0, 1, 0, 1, 1])
>>> p = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
>>> choose(y, p, "precision", 0.75), choose(y, p, "recall", 1.0)
(0.3, 0.3)
>>> choose(y, p, "precision", 1.0)
0.5
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.typing import NDArray

TARGETS = ("precision", "recall")


def parse_target(text: str) -> tuple[str, float]:
    """``precision=0.8`` as ``("precision", 0.8)``; ValueError names what is wrong.

    >>> parse_target("recall=0.5")
    ('recall', 0.5)
    """
    name, _, value = text.partition("=")
    if name not in TARGETS:
        raise ValueError(f"target {text!r}: expected precision=P or recall=R")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"target {text!r}: {value!r} is not a number") from None
    if not 0.0 < number <= 1.0:
        raise ValueError(f"target {text!r}: a {name} is above 0 and at most 1")
    return name, number


def trade_off(y: NDArray, p: NDArray) -> pd.DataFrame:
    """Per distinct score, as a threshold: precision, recall and the share of moments flagged."""
    y = np.asarray(y, dtype=np.int64)
    p = np.asarray(p, dtype=np.float64)
    order = np.argsort(-p, kind="stable")
    scores, labels = p[order], y[order]
    hits, flagged = np.cumsum(labels), np.arange(1, len(labels) + 1)
    last = np.r_[scores[1:] != scores[:-1], True]  # the last of each run of equal scores: all of them flagged
    table = pd.DataFrame(
        {
            "threshold": scores[last],
            "precision": hits[last] / flagged[last],
            "recall": hits[last] / max(int(labels.sum()), 1),
            "flagged": flagged[last] / max(len(labels), 1),
        }
    )
    return table.sort_values("threshold", kind="stable").reset_index(drop=True)


def choose(y: NDArray, p: NDArray, target: str, value: float) -> float:
    """The threshold meeting ``target`` (see the module); ValueError when none does."""
    table = trade_off(y, p)
    meets = table[table[target] >= value]
    if meets.empty:
        best = float(table[target].max()) if len(table) else 0.0
        raise ValueError(f"no threshold reaches {target} {value:g} on these rows (the best is {best:.3f})")
    row = meets.iloc[0] if target == "precision" else meets.iloc[-1]
    return float(row["threshold"])
