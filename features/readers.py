"""One compiled function that reads many features of a profile at once.

Windowed counts, sums and means over the same stream and window share one
binary search; a ratio reuses its parts when they are read anyway; every
other feature is read by its own reader. The arithmetic is the buckets'
own (:meth:`features.buckets.Buckets.total`), so values are the same to the
bit. The code is written here from the specs: names and numbers reach it as
bound values or integers, never as text from outside.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Sequence
from typing import Any

from features.specs import Ratio, Spec, WindowCount, WindowMean, WindowSum

Read = Callable[[Any, int], dict[str, Any]]


def ratio(num: Any, den: Any) -> float:
    """One feature over another: 0 when the denominator is 0 or either is not a number."""
    if not isinstance(num, int | float) or not isinstance(den, int | float) or not den:
        return 0.0
    return num / den


def compile_reader(
    wanted: Sequence[Spec],
    stream_of: Callable[[Spec], int],
    slot_of: Callable[[WindowSum | WindowMean], int],
    fallback: Callable[[Spec], Callable[[Any, int], Any]],
) -> Read:
    """``read(profile, t)``: ``{spec.name: value}`` of ``wanted`` at ``t``, in order.

    ``stream_of`` gives a windowed spec's stream index, ``slot_of`` a sum's or
    mean's property position in its stream, ``fallback`` any spec's own reader.
    """
    body: list[str] = []
    consts: dict[str, Any] = {"bisect_left": bisect_left, "nan": math.nan, "ratio": ratio}
    local: dict[Spec, str] = {}
    searched: dict[tuple[int, int, int], str] = {}
    loaded: set[int] = set()

    def window(spec: WindowCount | WindowSum | WindowMean) -> str:
        i, w, r = stream_of(spec), spec.within_ms, spec.resolution_ms
        key = (i, w, r)
        if key not in searched:
            g = searched[key] = f"g{len(searched)}"
            if i not in loaded:
                loaded.add(i)
                body.append(f"    c{i} = B[{i}].cum")
            body.append(f"    j{g} = bisect_left(B[{i}].keys, (t - {w}) // {r} + 1)")
            body.append(f"    e{g} = j{g} < len(c{i})")
        g = searched[key]

        def total(slot: int) -> str:  # Buckets.total over buckets from j on
            return f"((c{i}[-1][{slot}] - c{i}[j{g} - 1][{slot}] if j{g} else c{i}[-1][{slot}]) if e{g} else 0.0)"

        if isinstance(spec, WindowCount):
            return f"int({total(0)})"
        j = slot_of(spec)
        if isinstance(spec, WindowSum):
            return total(2 + 2 * j)
        n = f"n{len(local)}"
        body.append(f"    {n} = {total(1 + 2 * j)}")
        return f"({total(2 + 2 * j)} / {n} if {n} else nan)"

    def value(spec: Spec) -> str:
        if spec in local:
            return local[spec]
        if isinstance(spec, WindowCount | WindowSum | WindowMean):
            expr = window(spec)
        elif isinstance(spec, Ratio):
            expr = f"ratio({value(spec.numerator)}, {value(spec.denominator)})"
        else:
            f = f"f{len(consts)}"
            consts[f] = fallback(spec)
            expr = f"{f}(p, t)"
        v = local[spec] = f"v{len(local)}"
        body.append(f"    {v} = {expr}")
        return v

    names: list[str] = []
    for spec in wanted:
        names.append(value(spec))
    keys = [f"k{i}" for i in range(len(wanted))]
    consts.update({k: spec.name for k, spec in zip(keys, wanted, strict=True)})
    pairs = ", ".join(f"{k}: {v}" for k, v in zip(keys, names, strict=True))
    source = "\n".join(["def read(p, t):", "    B = p.buckets", *body, f"    return {{{pairs}}}"])
    namespace: dict[str, Any] = {"__builtins__": {"int": int, "len": len}, **consts}
    exec(compile(source, "<features>", "exec"), namespace)
    read: Read = namespace["read"]
    return read
