"""Point-in-time purchase labels.

For a scoring moment ``t`` the label is 1 when the user purchases in
``(t, t + horizon]``. A purchase event is never its own label (the interval is
open at ``t``), and moments whose horizon runs past the end of the data are
censored: they are left out, not counted negative.

>>> import numpy as np
>>> users = np.array(["a", "a", "a", "b"])
>>> ts = np.array([0, 10, 20, 5]) * 3_600_000
>>> purchase = np.array([False, True, False, False])
>>> label, known = purchase_within(users, ts, purchase, horizon_ms=24 * 3_600_000, end_ms=40 * 3_600_000)
>>> label.tolist(), known.tolist()
([True, False, False, False], [True, True, False, True])
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

_SHIFT = np.int64(1) << np.int64(42)


def next_purchase_ms(users: npt.ArrayLike, ts_ms: npt.ArrayLike, is_purchase: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Time of each row's user's first purchase strictly after the row's time
    (``-1`` where there is none)."""
    codes = np.unique(np.asarray(users), return_inverse=True)[1].astype(np.int64)
    ts = np.asarray(ts_ms, dtype=np.int64)
    if len(ts) and (ts.min() < 0 or ts.max() >= _SHIFT):
        raise ValueError("timestamps must be milliseconds between 1970 and 2109")
    keys = codes * _SHIFT + ts
    purchases = np.sort(keys[np.asarray(is_purchase, dtype=bool)])
    idx = np.searchsorted(purchases, keys, side="right")
    found = idx < len(purchases)
    nxt = np.full(len(ts), -1, dtype=np.int64)
    hit = purchases[idx[found]]
    same_user = hit // _SHIFT == codes[found]
    rows = np.flatnonzero(found)[same_user]
    nxt[rows] = hit[same_user] - codes[rows] * _SHIFT
    return nxt


def purchase_within(
    users: npt.ArrayLike,
    ts_ms: npt.ArrayLike,
    is_purchase: npt.ArrayLike,
    *,
    horizon_ms: int,
    end_ms: int,
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """``(label, known)``: the label of each moment, and whether it is known
    (its whole horizon lies before the end of the data at ``end_ms``; a
    moment whose horizon runs past it is censored even when a purchase
    already labels it, or the last horizon would hold buyers only)."""
    ts = np.asarray(ts_ms, dtype=np.int64)
    nxt = next_purchase_ms(users, ts, is_purchase)
    label = (nxt >= 0) & (nxt - ts <= horizon_ms)
    known = ts + horizon_ms <= end_ms  # a buyer near the end is censored too: keeping only buyers there would bias
    return label, known
