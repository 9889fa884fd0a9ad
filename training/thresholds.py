"""Choosing a score threshold for a target, from scores and their labels.

A rule like ``intent >= likely_buyer`` flags a moment when its score is at
least the threshold. For each candidate (every distinct score) the trade-off
table gives precision, recall and the share of moments flagged;
:func:`choose` picks the threshold meeting a target:

- ``precision=P``: the lowest threshold whose precision is at least P (the
  most members at that precision);
- ``recall=R``: the highest threshold whose recall is at least R (the fewest
  members catching that share of buyers);
- ``size=N``: the lowest threshold whose mean number of daily members is at
  most N (:func:`choose_size`: a user is a member on a day when one of its
  moments that day is flagged).

A threshold is written with 4 decimal places; :func:`on_grid` turns scores
into the values a written threshold sees, so that the value chosen flags
exactly the moments it was chosen on, for ``>=`` and ``>`` alike.

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

TARGETS = ("precision", "recall", "size")
PLACES = 4  # a threshold is written with this many decimal places


def parse_target(text: str) -> tuple[str, float]:
    """``precision=0.8`` as ``("precision", 0.8)``; ValueError names what is wrong.

    >>> parse_target("recall=0.5")
    ('recall', 0.5)
    """
    name, _, value = text.partition("=")
    if name not in TARGETS:
        raise ValueError(f"target {text!r}: expected precision=P, recall=R or size=N")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"target {text!r}: {value!r} is not a number") from None
    if name == "size" and not (number > 0 and np.isfinite(number)):
        raise ValueError(f"target {text!r}: a size is a number of members above 0")
    if name != "size" and not 0.0 < number <= 1.0:
        raise ValueError(f"target {text!r}: a {name} is above 0 and at most 1")
    return name, number


def on_grid(p: NDArray, op: str = ">=", places: int = PLACES) -> NDArray[np.float64]:
    """Each score as the written thresholds that flag it see it: the largest
    value ``w`` with ``places`` decimals such that ``score op w`` holds (``>=``
    or ``>``). A threshold ``w`` written with that many decimals then flags a
    score exactly when its grid value is at least ``w``, in floating point too.

    >>> on_grid(np.array([0.46449, 0.4644, 0.5]), ">=").tolist()
    [0.4644, 0.4644, 0.5]
    >>> on_grid(np.array([0.46449, 0.4644, 0.5]), ">").tolist()
    [0.4644, 0.4643, 0.4999]
    """
    if op not in (">=", ">"):
        raise ValueError(f"an entry threshold is compared with >= or >, not {op!r}")
    scale = 10.0**places
    p = np.asarray(p, dtype=np.float64)
    k = np.floor(p * scale) - (1 if op == ">" else 0)
    holds = (lambda w: p >= w) if op == ">=" else (lambda w: p > w)
    for _ in range(2):  # p * scale rounds: a step either way puts k right
        k = np.where(holds(k / scale), k, k - 1)
        k = np.where(holds((k + 1) / scale), k + 1, k)
    return k / scale


def daily_members(p: NDArray, users: NDArray, days: NDArray) -> NDArray[np.float64]:
    """Each user's highest score on each day (a row per user and day): a
    threshold at or below it makes the user a member that day."""
    frame = pd.DataFrame({"p": np.asarray(p, dtype=np.float64), "user": users, "day": days})
    return frame.groupby(["user", "day"], sort=False)["p"].max().to_numpy()


def size_trade_off(p: NDArray, users: NDArray, days: NDArray) -> pd.DataFrame:
    """Per distinct score, as a threshold: the mean number of daily members
    over the days the moments fall on."""
    best = np.sort(daily_members(p, users, days))
    candidates = np.unique(np.asarray(p, dtype=np.float64))
    members = len(best) - np.searchsorted(best, candidates, side="left")
    n_days = max(len(np.unique(days)), 1)
    return pd.DataFrame({"threshold": candidates, "daily_members": members / n_days})


def choose_size(p: NDArray, users: NDArray, days: NDArray, size: float) -> float:
    """The lowest threshold whose mean number of daily members is at most
    ``size``; ValueError when even the highest makes more.

    >>> p, users, days = np.array([0.9, 0.8, 0.2, 0.7]), np.array(["a", "b", "c", "a"]), np.array([0, 0, 0, 1])
    >>> choose_size(p, users, days, 1.0), choose_size(p, users, days, 1.5)
    (0.8, 0.7)
    """
    table = size_trade_off(p, users, days)
    fits = table[table["daily_members"] <= size]
    if fits.empty:
        fewest = float(table["daily_members"].min()) if len(table) else 0.0
        raise ValueError(f"no threshold keeps the mean daily members at {size:g} or fewer (the fewest is {fewest:.2f})")
    return float(fits.iloc[0]["threshold"])


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
