"""One row through a LightGBM booster without the Python predict machinery.

``Booster.predict`` on one row spends most of its ~20 µs converting and
checking; LightGBM's C API has a fast path for exactly this case
(``LGBM_BoosterPredictForMatSingleRowFast``), set up once per booster. The
answer is LightGBM's own, bit for bit.
"""

from __future__ import annotations

import ctypes

import lightgbm as lgb
import numpy as np
from lightgbm.basic import _LIB, _safe_call
from numpy.typing import NDArray

_PREDICT_NORMAL = 0
_FLOAT64 = 1


class SingleRowPredictor:
    """``predict(row)`` for one float64 row of ``n_features`` values."""

    def __init__(self, booster: lgb.Booster, num_iteration: int, n_features: int) -> None:
        self._booster = booster  # keeps the booster (and its handle) alive as long as this
        self._n = n_features
        self._handle = ctypes.c_void_p()
        _safe_call(
            _LIB.LGBM_BoosterPredictForMatSingleRowFastInit(
                booster._handle,
                ctypes.c_int(_PREDICT_NORMAL),
                ctypes.c_int(0),
                ctypes.c_int(num_iteration),
                ctypes.c_int(_FLOAT64),
                ctypes.c_int32(n_features),
                ctypes.c_char_p(b"num_threads=1"),
                ctypes.byref(self._handle),
            )
        )
        self._out = np.zeros(1, dtype=np.float64)
        self._out_len = ctypes.c_int64(0)
        self._out_ptr = self._out.ctypes.data_as(ctypes.POINTER(ctypes.c_double))

    def __call__(self, row: NDArray[np.float64]) -> float:
        if row.dtype != np.float64 or row.shape != (self._n,) or not row.flags.c_contiguous:
            raise ValueError(f"expected a contiguous float64 row of {self._n} values")
        _safe_call(
            _LIB.LGBM_BoosterPredictForMatSingleRowFast(
                self._handle, row.ctypes.data_as(ctypes.c_void_p), ctypes.byref(self._out_len), self._out_ptr
            )
        )
        return float(self._out[0])

    def __del__(self) -> None:
        if getattr(self, "_handle", None) is not None and self._handle.value:
            _LIB.LGBM_FastConfigFree(self._handle)
