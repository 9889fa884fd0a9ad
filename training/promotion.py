"""Whether a new model takes the ``champion`` alias, and why.

A new model is promoted when there is no champion, when the champion cannot
be judged on this evaluation set (it reads other features; it has the new
model's settings and was fitted on older data, so only the data differs), or
when it beats the champion by at least a margin on the same rows, rows
neither was fitted on. Every decision carries its reason, logged with the
run and the version.

>>> judge("roc_auc", 0.8125, Champion("3", 0.8100), margin=0.005).promote
False
>>> print(judge("roc_auc", 0.8125, Champion("3", 0.8100), margin=0.002).reason)
promoted: roc_auc 0.8125 against champion v3's 0.8100 (+0.0025, margin 0.0020)
>>> print(judge("silhouette", 0.31, None, margin=0.01).reason)
promoted: the first version (silhouette 0.3100)
"""

from __future__ import annotations

from dataclasses import dataclass

# how much better a new model must score to move the alias: differences
# smaller than these are noise on the synthetic histories of a few thousand users
DEFAULT_MARGINS = {"roc_auc": 0.002, "silhouette": 0.005}


@dataclass(frozen=True, slots=True)
class Champion:
    """The current champion as judged on the new model's evaluation rows."""

    version: str
    score: float | None  # None: it cannot be judged on these rows
    how: str = ""  # how it was judged, when not as registered
    why_not: str = ""  # why it could not be judged
    keep: bool = False  # not judged, and kept all the same (it was fitted on data as new as the new model's)


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether the new model takes the alias, and why."""

    promote: bool
    reason: str


def judge(metric: str, score: float, champion: Champion | None, margin: float) -> Verdict:
    """Promote or keep: no champion, one that cannot be judged, or the margin decides."""
    if champion is None:
        return Verdict(True, f"promoted: the first version ({metric} {score:.4f})")
    if champion.score is None:
        if champion.keep:
            return Verdict(False, f"kept champion v{champion.version}: it {champion.why_not} ({metric} {score:.4f})")
        return Verdict(True, f"promoted: champion v{champion.version} {champion.why_not} ({metric} {score:.4f})")
    gain = score - champion.score
    how = f" ({champion.how})" if champion.how else ""
    figures = (
        f"{metric} {score:.4f} against champion v{champion.version}'s {champion.score:.4f}{how} "
        f"({gain:+.4f}, margin {margin:.4f})"
    )
    if gain >= margin:
        return Verdict(True, f"promoted: {figures}")
    return Verdict(False, f"kept champion v{champion.version}: {figures}")
