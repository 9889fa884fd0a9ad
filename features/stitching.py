"""The identity graph over an event table, for offline features.

Offline features are point in time; with identity they are so twice over:
only the events before a cutoff count, and only under the links made by
then. :class:`Stitching` reads the links of a table (its ``identify`` and
``alias`` rows, in arrival order, as the engine takes them), decides which
events of the linked ids the engine would have dropped as late (a profile
that joined another brings its newest time along), and lays the events of
each linked group out as one profile per *version* of the group: version
``j`` holds every event of the ids that belong together once the group's
first ``j`` merge instants have passed. A cutoff at ``at`` reads the version
in force then, so an anonymous profile's events join the known user's
features exactly from the merge instant, never before.

The cost is a copy of a linked group's events per merge instant it has:
small for the usual one or two anonymous ids per user.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
from numpy.typing import NDArray as Array

from features.identity import PREVIOUS_ID, IdentityGraph, link_of

SEP = "\x1f"  # between an owner's id and the version of its group, in the virtual profile ids


def _ms(column: pa.ChunkedArray) -> Array[np.int64]:
    return column.cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64()).to_numpy()


def table_links(table: pa.Table, skip: Array[np.bool_]) -> list[tuple[int, str, str, int]]:
    """The links of a table's rows not skipped (duplicates): ``(row, source, target, at_ms)`` in arrival order."""
    kinds = table.column("kind").to_numpy(zero_copy_only=False)
    candidates = np.flatnonzero(((kinds == "identify") | (kinds == "alias")) & ~skip)
    if not len(candidates):
        return []
    take = pa.array(candidates)
    users = table.column("user_id").take(take).to_pylist()
    anons = table.column("anonymous_id").take(take).to_pylist()
    traits = table.column("traits").take(take).to_pylist()
    ts = _ms(table.column("ts").take(take))
    out = []
    for i, row in enumerate(candidates.tolist()):
        previous = orjson.loads(traits[i]).get(PREVIOUS_ID) if kinds[row] == "alias" and traits[i] else None
        found = link_of(kinds[row], users[i], anons[i], previous)
        if found is not None:
            out.append((row, found[0], found[1], int(ts[i])))
    return out


@dataclass
class Stitching:
    """An event table's identity links, answering which profile an id belonged to at a time."""

    graph: IdentityGraph
    ids: frozenset[str]  # every id of a linked group
    link_rows: dict[int, tuple[str, str, int]]
    instants: dict[str, list[int]]  # a group's profile (as it ends) -> its merge instants, ascending

    @classmethod
    def of(cls, table: pa.Table, duplicate: Array[np.bool_]) -> Stitching | None:
        """The table's links (None when it has none)."""
        links = table_links(table, duplicate)
        graph = IdentityGraph.of((s, t, at) for _, s, t, at in links)
        if not graph:
            return None
        ids = frozenset(x for pid in graph.ids() for x in graph.linked(pid))
        instants = {root: graph.instants(root) for root in {graph.resolve(x) for x in ids}}
        return cls(graph, ids, {row: (s, t, at) for row, s, t, at in links}, instants)

    def linked(self, profiles: Array) -> Array[np.bool_]:
        """Which of these profile ids are in a linked group."""
        return pd.Series(profiles, dtype=object).isin(self.ids).to_numpy()

    def _instants(self, pid: str) -> list[int]:
        return self.instants[self.graph.resolve(pid)]

    def late(
        self, profiles: Array, ts: Array[np.int64], duplicate: Array[np.bool_], late: Array[np.bool_], lateness_ms: int
    ) -> Array[np.bool_]:
        """``late`` with the linked ids' events decided as the engine does: in
        arrival order, against the newest time of the profile they go to then
        (a merge carries the joining profile's newest along)."""
        late = late.copy()
        graph, newest = IdentityGraph(), dict[str, int]()
        rows = np.flatnonzero(self.linked(profiles) & ~duplicate)
        for row in rows.tolist():
            link = self.link_rows.get(row)
            if link is not None and (merge := graph.link(*link)) is not None:
                joined = newest.pop(merge.source, None)
                if joined is not None:
                    newest[merge.target] = max(newest.get(merge.target, joined), joined)
            owner, t = graph.resolve(profiles[row]), int(ts[row])
            before = newest.get(owner)
            late[row] = before is not None and t < before - lateness_ms
            if before is None or t > before:
                newest[owner] = t
        return late

    def expand(self, keep: Array[np.int64], profiles: Array) -> tuple[Array[np.int64], Array]:
        """The rows to compute over and the (virtual) profile of each: a linked
        group's rows once per version of the group, the others as they are."""
        mine = self.linked(profiles[keep])
        rows, names = [keep[~mine]], [profiles[keep[~mine]]]
        cache: dict[tuple[str, int], str] = {}
        extra_rows, extra_names = [], []
        for row in keep[mine].tolist():
            pid = profiles[row]
            instants = self._instants(pid)
            for j in range(len(instants) + 1):
                name = cache.get((pid, j))
                if name is None:
                    owner = self.graph.owner_at(pid, instants[j - 1]) if j else pid
                    name = cache[(pid, j)] = f"{owner}{SEP}{j}"
                extra_rows.append(row)
                extra_names.append(name)
        rows.append(np.asarray(extra_rows, dtype=np.int64))
        names.append(np.asarray(extra_names, dtype=object))
        return np.concatenate(rows), np.concatenate(names)

    def owner(self, pid: str, at_ms: int) -> str:
        """The profile ``pid``'s events belong to at ``at_ms``."""
        return self.graph.owner_at(pid, at_ms) if pid in self.ids else pid

    def key_at(self, pid: str, at_ms: int) -> str:
        """The (virtual) profile a cutoff of ``pid`` at ``at_ms`` reads."""
        if pid not in self.ids:
            return pid
        j = bisect_right(self._instants(pid), at_ms)
        return f"{self.graph.owner_at(pid, at_ms)}{SEP}{j}"
