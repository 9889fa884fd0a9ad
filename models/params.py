"""Parameters as scikit-learn expects them: ``get_params``/``set_params``
read from and written to the attributes ``__init__`` names, so
``sklearn.base.clone`` gives an unfitted copy with the same settings and a
search can set them.

>>> from models.intent_batch import BatchIntentModel
>>> BatchIntentModel(num_boost_round=50).get_params()["num_boost_round"]
50
"""

from __future__ import annotations

import inspect
from typing import Any, Self


class Params:
    """``get_params``/``set_params`` over ``__init__``'s parameters (each kept as an attribute of the same name)."""

    @classmethod
    def _param_names(cls) -> list[str]:
        return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The parameters ``__init__`` was given (``deep`` is accepted for scikit-learn; nothing nests here)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> Self:
        """Change parameters by name; ValueError names one that is not a parameter."""
        names = self._param_names()
        for name, value in params.items():
            if name not in names:
                raise ValueError(f"{type(self).__name__} has no parameter {name!r} (it has {', '.join(names)})")
            setattr(self, name, value)
        return self
