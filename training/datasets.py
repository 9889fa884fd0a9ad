"""Training sets: point-in-time features at sampled cutoffs, with labels.

Cutoffs are event times, at most one per user per ``every`` (default 30
minutes: an event of the user's slot drawn at random by seed), so a busy user does not
dominate and consecutive moments are not near-copies. Features come from the
offline computation (nothing after the cutoff enters them); labels are
purchase within the horizon after the cutoff; censored moments (horizon past
the end of the data) are left out.

Identity (:mod:`features.identity`) is point in time here too: a cutoff
belongs to the profile its event's id belonged to then, so an anonymous
visitor's moments before the merge are the anonymous profile's, with only
its own events, and the known user's moments before the merge see none of
them. A label is a purchase by the person, under any id linked by the end
of the data (labels look ahead by definition; features never do).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.defaults import RULE_SPECS, cluster_specs
from features.events import PRODUCT_VIEW, PURCHASE
from features.offline import OfflineFeatures
from features.online import FeatureSet
from features.specs import DAY_MS
from features.stitching import Stitching
from training.labels import purchase_within

MINUTE_MS = 60_000


@dataclass(frozen=True, slots=True)
class TrainingSet:
    """Features ``X`` at sampled cutoffs, labels ``y``, and the cutoffs themselves (user, time, messageId)."""

    X: pd.DataFrame
    y: np.ndarray
    cutoffs: pd.DataFrame  # profile_id, at (ms), message_id of the event at the cutoff

    def split_by_time(self, test_fraction: float = 0.3, gap_ms: int = 0) -> tuple[TrainingSet, TrainingSet]:
        """Earlier cutoffs to train, later ones to test (no look-ahead). A
        ``gap_ms`` (one label horizon) drops the train cutoffs whose label
        window reaches into the test period, so no test purchase labels a
        training row. Rows keep their index (their position in the whole set).
        """
        at = self.cutoffs["at"].to_numpy()
        edge = np.quantile(at, 1 - test_fraction) if len(at) else 0
        train, test = at < edge - gap_ms, at >= edge
        return self.take(train), self.take(test)

    def splits(self, gap_ms: int, validation: float = 0.15, test: float = 0.3) -> tuple[TrainingSet, ...]:
        """Fit, validation and test parts in time order, a gap of ``gap_ms``
        between each: a model is fitted on the first, its threshold is chosen
        on the second, it is judged on the third."""
        rest, tested = self.split_by_time(test, gap_ms)
        fitted, validated = rest.split_by_time(validation / (1 - test), gap_ms)
        return fitted, validated, tested

    def take(self, mask: np.ndarray) -> TrainingSet:
        """The rows of a boolean mask (their index kept)."""
        return TrainingSet(self.X.loc[mask], self.y[mask], self.cutoffs.loc[mask])


def sample_cutoffs(
    table: pa.Table,
    every_ms: int = 30 * MINUTE_MS,
    seed: int = 0,
    max_per_user: int | None = None,
    stitching: Stitching | None = None,
) -> pd.DataFrame:
    """At most one cutoff per user per ``every_ms`` slot, at event times; the
    user is the profile the event's id belonged to then (``stitching``: the table's links)."""
    frame = pd.DataFrame(
        {
            "profile_id": table.column("profile_id").to_numpy(zero_copy_only=False),
            "at": pc.cast(table.column("ts"), pa.int64()).to_numpy(),
            "message_id": table.column("message_id").to_numpy(zero_copy_only=False),
            "type": table.column("type").to_numpy(zero_copy_only=False),
        }
    )
    frame = frame[frame["type"] != "identify"]
    if stitching is not None:
        linked = frame["profile_id"].isin(stitching.ids)
        frame.loc[linked, "profile_id"] = [
            stitching.owner(p, int(t))
            for p, t in zip(frame.loc[linked, "profile_id"], frame.loc[linked, "at"], strict=True)
        ]
    frame["slot"] = frame["at"] // every_ms
    rng = np.random.default_rng(seed)
    frame["r"] = rng.random(len(frame))
    picked = frame.sort_values("r", kind="stable").drop_duplicates(["profile_id", "slot"])
    if max_per_user is not None:
        picked = picked.groupby("profile_id", sort=False).head(max_per_user)
    return picked.sort_values("at", kind="stable")[["profile_id", "at", "message_id"]].reset_index(drop=True)


def build(
    table: pa.Table,
    features: FeatureSet,
    horizon_ms: int = DAY_MS,
    every_ms: int = 30 * MINUTE_MS,
    max_per_user: int | None = None,
    seed: int = 0,
    offline: OfflineFeatures | None = None,
) -> TrainingSet:
    """Features and purchase-within-horizon labels at sampled cutoffs."""
    offline = offline or OfflineFeatures(features, table)
    stitching = offline.stitching
    cutoffs = sample_cutoffs(table, every_ms, seed, max_per_user, stitching)
    users = table.column("profile_id").to_numpy(zero_copy_only=False)
    people = cutoffs["profile_id"].to_numpy()
    if stitching is not None:  # labels: a purchase by the person, under any of their ids
        person = np.vectorize(stitching.graph.resolve, otypes=[object])
        users, people = person(users), person(people)
    ts = pc.cast(table.column("ts"), pa.int64()).to_numpy()
    is_buy = table.column("type").to_numpy(zero_copy_only=False) == PURCHASE
    end = int(ts.max()) if len(ts) else 0
    # labels at the cutoffs: append the cutoffs as probes to the events
    n = len(users)
    all_users = np.concatenate([users, people])
    all_ts = np.concatenate([ts, cutoffs["at"].to_numpy()])
    all_buy = np.concatenate([is_buy, np.zeros(len(cutoffs), dtype=bool)])
    label, known = purchase_within(all_users, all_ts, all_buy, horizon_ms=horizon_ms, end_ms=end)
    label, known = label[n:], known[n:]
    cutoffs = cutoffs.loc[known].reset_index(drop=True)
    X = offline.at(cutoffs[["profile_id", "at"]])
    return TrainingSet(X.reset_index(drop=True), label[known].astype(np.int8), cutoffs)


def user_vectors(table: pa.Table, features: FeatureSet, offline: OfflineFeatures | None = None) -> pd.DataFrame:
    """One vector per user at the end of the data (for clustering); ids linked
    to another's profile by then are that profile."""
    users = pd.unique(table.column("profile_id").to_numpy(zero_copy_only=False))
    end = int(pc.max(pc.cast(table.column("ts"), pa.int64())).as_py())
    offline = offline or OfflineFeatures(features, table)
    if offline.stitching is not None:
        users = pd.unique(np.array([offline.stitching.owner(u, end) for u in users], dtype=object))
    X = offline.at(pd.DataFrame({"profile_id": users, "at": end}), features)
    X.index = users
    return X


def cluster_features(table: pa.Table, offline: OfflineFeatures | None = None) -> FeatureSet:
    """The features clusters are found over, with the usual price of each
    category learned from ``table``'s product views."""
    offline = offline or OfflineFeatures(FeatureSet(()), table)
    return FeatureSet(cluster_specs(offline.reference("price", "category", PRODUCT_VIEW)))


def habits_of(model: object) -> FeatureSet:
    """The features a cluster model reads: the specs it carries, or (a model
    trained before models carried them) the service's specs of those names."""
    specs = tuple(getattr(model, "specs_", ()))
    if not specs:
        names = set(getattr(model, "features_in_", ()))
        specs = tuple(s for s in RULE_SPECS if s.name in names)
    return FeatureSet(specs)
