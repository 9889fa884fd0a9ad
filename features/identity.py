"""Identity: which profile an id's events belong to, and from when.

Segment's calls link ids: an ``identify`` carrying both an ``anonymousId``
and a ``userId`` links the anonymous id to the user; an ``alias`` links its
``previousId`` to its ``userId``. A link joins the source's profile (with
every id already joined to it) into the target's at the *merge instant*,
the linking call's event time; from then on, events under any joined id
belong to the target's profile.

The rules, decided in the order calls arrive (online and offline alike):

- an id joins at most one profile: the first link wins; a later link of the
  same id elsewhere is refused and counted (``conflicts``);
- a link to an id that has joined another goes to where that one joined, so
  chains collapse (several anonymous ids into one user, an alias of an alias);
- an ``alias`` between two known users merges them (the previous user's
  profile, and every id joined to it, moves to the new one): alias is
  Segment's call for exactly that;
- a link within one profile (already joined, or back onto itself) changes nothing.

Offline, the graph is point in time (:meth:`IdentityGraph.owner_at`): at a
cutoff before a link's instant the source's events are its own, from the
instant on they are the target's, so nothing leaks backwards.

>>> g = IdentityGraph()
>>> g.link("anon-1", "u1", 100)
Merge(source='anon-1', target='u1', at_ms=100, moved=('anon-1',))
>>> g.link("anon-2", "anon-1", 150).target  # joins where anon-1 went
'u1'
>>> g.link("anon-1", "u2", 200) is None, g.conflicts  # anon-1 is u1's: the first link wins
(True, 1)
>>> g.resolve("anon-2"), g.linked("anon-1")
('u1', ['u1', 'anon-1', 'anon-2'])
>>> g.owner_at("anon-2", 120), g.owner_at("anon-2", 160)
('anon-2', 'u1')
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from features.events import Event

Link = tuple[str, str, int]  # (source, target, merge instant)
PREVIOUS_ID = "previousId"  # where an alias event keeps the id it links (a trait, scrubbed like ids)


@dataclass(frozen=True, slots=True)
class Merge:
    """One link that joined two profiles: ``source`` (gone) into ``target``."""

    source: str
    target: str
    at_ms: int
    moved: tuple[str, ...]  # the ids that resolve to the target through it: the source and those joined to it


def link_of(
    kind: str | None, user_id: str | None, anonymous_id: str | None, previous_id: object
) -> tuple[str, str] | None:
    """The ``(source, target)`` ids a call links, if it links any.

    >>> link_of("identify", "u1", "a1", None), link_of("alias", "u1", None, "old"), link_of("track", "u1", "a1", None)
    (('a1', 'u1'), ('old', 'u1'), None)
    """
    if not user_id:
        return None
    if kind == "identify" and anonymous_id and anonymous_id != user_id:
        return anonymous_id, user_id
    if kind == "alias" and isinstance(previous_id, str) and previous_id and previous_id != user_id:
        return previous_id, user_id
    return None


def event_link(event: Event) -> tuple[str, str] | None:
    """The (source, target) link an identify or alias event makes, or None."""
    if event.kind not in ("identify", "alias"):
        return None
    return link_of(event.kind, event.user_id, event.anonymous_id, event.traits.get(PREVIOUS_ID))


class IdentityGraph:
    """The links accepted so far, in arrival order."""

    __slots__ = ("_edges", "_members", "_root", "conflicts")

    def __init__(self) -> None:
        self._edges: dict[str, tuple[str, int]] = {}  # id -> (the id it was linked to, as given; the instant)
        self._root: dict[str, str] = {}  # a joined id -> the profile it belongs to now
        self._members: dict[str, list[str]] = {}  # a profile -> the ids joined to it
        self.conflicts = 0

    def __len__(self) -> int:
        return len(self._edges)

    def __bool__(self) -> bool:
        return bool(self._edges)

    def resolve(self, pid: str) -> str:
        """The profile an id's events go to now."""
        return self._root.get(pid, pid)

    def linked(self, pid: str) -> list[str]:
        """Every id of ``pid``'s profile: the profile's own first, then those joined to it in order."""
        root = self._root.get(pid, pid)
        return [root, *self._members.get(root, ())]

    def accepts(self, source: str, target: str) -> bool:
        """Whether linking ``source`` to ``target`` would join two profiles (not one already, not refused)."""
        return source not in self._edges and self._root.get(source, source) != self._root.get(target, target)

    def link(self, source: str, target: str, at_ms: int) -> Merge | None:
        """Link ``source`` to ``target`` at ``at_ms``; the merge it makes (None: none, or refused)."""
        into = self._root.get(target, target)
        if self._root.get(source, source) == into:
            return None
        if source in self._edges:
            self.conflicts += 1
            return None
        moved = [source, *self._members.pop(source, ())]
        self._edges[source] = (target, at_ms)
        for pid in moved:
            self._root[pid] = into
        self._members.setdefault(into, []).extend(moved)
        return Merge(source, into, at_ms, tuple(moved))

    def owner_at(self, pid: str, at_ms: int) -> str:
        """The profile ``pid``'s events belong to at ``at_ms``: following the links whose instant had come."""
        edge = self._edges.get(pid)
        while edge is not None and edge[1] <= at_ms:
            pid = edge[0]
            edge = self._edges.get(pid)
        return pid

    def instants(self, pid: str) -> list[int]:
        """The instants at which ``pid``'s profile changed, ascending (distinct)."""
        return sorted({self._edges[m][1] for m in self.linked(pid) if m in self._edges})

    def ids(self) -> set[str]:
        """Every id in a link, either side."""
        return {*self._edges, *(target for target, _ in self._edges.values()), *self._members}

    def erase(self, pid: str) -> list[str]:
        """Forget ``pid``'s profile's links; every id it had (to erase with it)."""
        ids = self.linked(pid)
        self._members.pop(ids[0], None)
        for x in ids:
            self._root.pop(x, None)
            self._edges.pop(x, None)
        return ids

    def to_state(self) -> dict[str, Any]:
        """The links as JSON-ready values (snapshots)."""
        return {"links": [[s, t, at] for s, (t, at) in self._edges.items()], "conflicts": self.conflicts}

    @classmethod
    def from_state(cls, state: Mapping[str, Any] | None) -> IdentityGraph:
        """A graph back from :meth:`to_state` (None or empty: no links)."""
        graph = cls()
        for source, target, at in (state or {}).get("links", ()):
            graph.link(source, target, at)
        graph.conflicts = int((state or {}).get("conflicts", 0))
        return graph

    @classmethod
    def of(cls, links: Iterable[Link]) -> IdentityGraph:
        """A graph of the given links, applied in order."""
        graph = cls()
        for source, target, at in links:
            graph.link(source, target, at)
        return graph
