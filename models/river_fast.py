"""The default online pipeline computed straight from River's learned state.

The pipeline is one-hot encoding of strings and standard scaling of numbers,
then logistic regression trained by SGD (:func:`models.intent_online.make_pipeline`).
River evaluates it through a chain of generic transformers and sparse
vectors; here the same arithmetic runs over plain dicts: the encoders learn
first, the sample is encoded with their updated state, the log loss gradient
moves the intercept and the weights. The state is River's own (counts, means,
variances, seen values, weights, intercept, iteration count), so the model
stays a River pipeline: it pickles, explains and learns through River alike.
Tests hold both paths to the same answers.

Sums run in the sample's order, River's in its own (which also depends on
the order of a set of seen values), so results agree to rounding, not bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray
from river import compose, linear_model, optim

from models.vectors import NEVER, feature_kind, signed_log1p


def default_parts(pipeline: compose.Pipeline) -> tuple[Any, Any, linear_model.LogisticRegression] | None:
    """The one-hot encoder, scaler and logistic regression of a pipeline shaped
    like the default one (whatever its optimizer); None for any other shape."""
    steps = pipeline.steps
    if list(steps) != ["encode", "model"] or type(steps["model"]) is not linear_model.LogisticRegression:
        return None
    parts = steps["encode"].transformers
    try:
        return parts["Pipeline"]["OneHotEncoder"], parts["Pipeline1"]["StandardScaler"], steps["model"]
    except KeyError:
        return None


def learns_here(lr: linear_model.LogisticRegression) -> bool:
    """Whether :func:`learn` does what River would: plain SGD on the unweighted
    log loss, no penalty (other set-ups learn through River)."""
    loss = lr.loss
    return (
        not lr.l1
        and not lr.l2
        and type(lr.optimizer) is optim.SGD
        and type(loss) is optim.losses.Log
        and loss.weight_pos == 1.0
        and loss.weight_neg == 1.0
    )


def logit(parts: tuple[Any, Any, linear_model.LogisticRegression], items: Iterable[tuple[str, Any]]) -> float:
    """The model's log-odds of River feature items."""
    _, scaler, lr = parts
    weights, means, variances = lr._weights, scaler.means, scaler.vars
    z = lr.intercept
    for name, value in items:
        if type(value) is str:
            z += weights.get(f"{name}_{value}", 0.0)
        else:
            var = variances.get(name, 0.0)
            if var:
                z += weights.get(name, 0.0) * ((value - means.get(name, 0.0)) / var**0.5)
    return z


def logits(
    parts: tuple[Any, Any, linear_model.LogisticRegression],
    columns: Mapping[str, NDArray[Any]],
    categorical: tuple[str, ...],
    n: int,
) -> NDArray[np.float64]:
    """:func:`logit` of many vectors at once, given as columns (in the vector's
    order): the same terms added in the same order per row, so each row's
    log-odds is the scalar one's up to the rounding of ``log1p``."""
    _, scaler, lr = parts
    weights, means, variances = lr._weights, scaler.means, scaler.vars

    def term(name: str, values: NDArray[np.float64] | float) -> NDArray[np.float64] | float:
        var = variances.get(name, 0.0)
        if not var:
            return 0.0
        return weights.get(name, 0.0) * ((values - means.get(name, 0.0)) / var**0.5)

    z = np.full(n, lr.intercept, dtype=np.float64)
    for name, raw in columns.items():
        kind = feature_kind(name, categorical)
        if kind == "categorical":
            z += np.array([0.0 if v is None else weights.get(f"{name}_{v}", 0.0) for v in raw], dtype=np.float64)
            continue
        x = np.asarray(raw, dtype=np.float64)
        missing = ~np.isfinite(x)
        value = term(name, signed_log1p(np.where(missing, 0.0, x)))
        flagged = name + "_missing"
        z += np.where(missing, term(flagged, 1.0), value)  # the first item: the value, or the missing flag
        if kind == "recency":
            z += np.where(missing, term(name, NEVER), term(flagged, 0.0))
        elif kind != "plain":
            z += np.where(missing, 0.0, term(flagged, 0.0))
    return z


def learn(parts: tuple[Any, Any, linear_model.LogisticRegression], x: Mapping[str, Any], y: bool) -> None:
    """``pipeline.learn_one(x, y)`` for a default pipeline whose model :func:`learns_here`."""
    onehot, scaler, lr = parts
    counts, means, variances = scaler.counts, scaler.means, scaler.vars
    seen = onehot.values
    numbers: list[str] = []
    strings: dict[str, str] = {}
    for i, xi in x.items():  # the encoders learn first (Welford's update, as River's scaler)
        if type(xi) is str:
            seen[i].add(xi)
            strings[i] = xi
        else:
            counts[i] += 1
            n = counts[i]
            old = means[i]
            means[i] += (xi - old) / n
            variances[i] += ((xi - old) * (xi - means[i]) - variances[i]) / n
            numbers.append(i)
    encoded: dict[str, float] = {}
    for i in numbers:
        std = variances[i] ** 0.5
        encoded[i] = (x[i] - means[i]) / std if std else 0.0
    for i, values in seen.items():  # every value seen so far: 1 for the sample's, 0 for the rest
        mine = strings.get(i)
        for v in values:
            encoded[f"{i}_{v}"] = 1.0 if v == mine else 0.0
    weights = lr._weights
    z = lr.intercept
    for k, xk in encoded.items():
        if xk:
            z += weights.get(k, 0.0) * xk
    target = 1 if y else -1
    margin = z * target
    if margin > 18.0:
        gradient = math.exp(-margin) * -target
    elif margin < -18.0:
        gradient = float(-target)
    else:
        gradient = -target / (math.exp(margin) + 1.0)
    gradient = float(max(min(gradient, lr.clip_gradient), -lr.clip_gradient))
    optimizer = lr.optimizer
    lr.intercept -= lr.intercept_lr.get(optimizer.n_iterations) * gradient
    rate = optimizer.learning_rate
    for k, xk in encoded.items():
        weights[k] = weights.get(k, 0.0) - (xk * gradient) * rate
    optimizer.n_iterations += 1
