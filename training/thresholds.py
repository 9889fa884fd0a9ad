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
  most N (:func:`choose_size`: a user is a member on a whole UTC day of the
  period when one of its moments that day is flagged).

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

from features.specs import DAY_MS

TARGETS = ("precision", "recall", "size")
PLACES = 4  # a threshold is written with this many decimal places


def parse_target(text: str) -> tuple[str, float]:
    """``precision=0.8`` as ``("precision", 0.8)``; ValueError names what is wrong.

    >>> parse_target("recall=0.5")
    ('recall', 0.5)
    """
    name, equals, value = text.partition("=")
    if name not in TARGETS or not equals:
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


def whole_days(at_ms: NDArray) -> tuple[NDArray[np.int64], int]:
    """The UTC day (days since the epoch) of each moment, -1 for moments on a
    day the period from the first moment to the last does not cover whole
    (its first and last days are usually part-days); and how many whole days
    the period covers (a day with no moment among them counts, as empty).

    >>> days, n = whole_days(np.array([DAY_MS - 1, DAY_MS, 2 * DAY_MS - 1, 4 * DAY_MS]))
    >>> days.tolist(), n
    ([-1, 1, 1, -1], 3)
    """
    at = np.asarray(at_ms, dtype=np.int64)
    if not len(at):
        return at.copy(), 0
    first, last = -(-int(at.min()) // DAY_MS), (int(at.max()) + 1) // DAY_MS  # whole days: [first, last)
    day = at // DAY_MS
    return np.where((day >= first) & (day < last), day, -1), max(last - first, 0)


def daily_members(p: NDArray, users: NDArray, at_ms: NDArray) -> tuple[NDArray[np.float64], int]:
    """Each user's highest score on each whole day of the period (a row per
    user and day: a threshold at or below it makes the user a member that
    day), and the number of whole days; ValueError when there is none."""
    day, n_days = whole_days(at_ms)
    if not n_days:
        raise ValueError("the evaluation period covers no whole day: a size target needs a longer table")
    kept = day >= 0
    scores, users = np.asarray(p, dtype=np.float64)[kept], np.asarray(users)[kept]
    frame = pd.DataFrame({"p": scores, "user": users, "day": day[kept]})
    return frame.groupby(["user", "day"], sort=False)["p"].max().to_numpy(), n_days


def size_trade_off(p: NDArray, users: NDArray, at_ms: NDArray) -> pd.DataFrame:
    """Per distinct score, as a threshold: the mean number of daily members,
    over the whole UTC days of the period, of the users with a moment at or
    above it that day. Moments are samples (one per user per 30 minutes), and
    a rule's exit and dwell keep members longer: the live segment is larger."""
    best, n_days = daily_members(p, users, at_ms)
    best = np.sort(best)
    candidates = np.unique(np.asarray(p, dtype=np.float64))
    candidates = candidates[np.isfinite(candidates)]  # a threshold is a finite number
    members = len(best) - np.searchsorted(best, candidates, side="left")
    return pd.DataFrame({"threshold": candidates, "daily_members": members / n_days})


def choose_size(p: NDArray, users: NDArray, at_ms: NDArray, size: float) -> float:
    """The lowest threshold whose mean number of daily members (see
    :func:`size_trade_off`) is at most ``size``; ValueError when even the
    highest makes more.

    >>> day = DAY_MS
    >>> p, users = np.array([0.9, 0.8, 0.2, 0.7, 0.1]), np.array(["a", "b", "c", "a", "z"])
    >>> at = np.array([day, day + 1, day + 2, 2 * day, 3 * day])  # whole days 1 and 2; day 3 is a part-day
    >>> choose_size(p, users, at, 1.0), choose_size(p, users, at, 1.5)
    (0.8, 0.7)
    """
    if not size > 0:
        raise ValueError(f"a size is a number of members above 0, got {size!r}")
    table = size_trade_off(p, users, at_ms)
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
    """The threshold meeting ``target``, ``"precision"`` or ``"recall"`` (see
    the module; a size is :func:`choose_size`'s), among the scores given;
    ValueError when none does. Give it ``on_grid(p, op)`` to get a value that
    can be written into a config and flag exactly those moments."""
    if target not in ("precision", "recall"):
        hint = ": use choose_size" if target == "size" else ""
        raise ValueError(f"target {target!r}: choose takes precision or recall{hint}")
    table = trade_off(y, p)
    table = table[np.isfinite(table["threshold"])]  # a threshold is a finite number: ±inf scores only count
    meets = table[table[target] >= value]
    if meets.empty:
        best = float(table[target].max()) if len(table) else 0.0
        raise ValueError(f"no threshold reaches {target} {value:g} on these rows (the best is {best:.3f})")
    row = meets.iloc[0] if target == "precision" else meets.iloc[-1]
    return float(row["threshold"])
