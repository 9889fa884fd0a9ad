"""Reconciliation: make a platform's list or tag hold exactly segflow's
members of the segment who may get email, whatever changed behind its back.

For each segment of the destination, the platform's members are read
(every page) and matched to profiles (Klaviyo by external id, Mailchimp by
the subscriber hash the vault keeps); the ones segflow does not count are
removed, the missing ones added. A dry run only says what it would do.
Membership is read again once the platform's listing is in, and users with
deliveries still pending or in flight are left to them (what reconciling
them would do, those deliveries are about to do, in order).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from serving.destinations.sync import Member, Platform
from serving.people import People


@dataclass
class Drift:
    segment: str
    members: int  # segflow's members who may get email
    listed: int  # the platform's members before
    missing: int  # segflow's members the platform lacked
    extra: int  # the platform's members segflow does not count
    added: int = 0
    removed: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # why some could not be added, and how many

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def reconcile(
    platform: Platform,
    segments: Iterable[str],
    members_of: Callable[[str], Iterable[str]],
    people: People,
    unsettled: Callable[[], set[str]],
    dry_run: bool = False,
) -> list[Drift]:
    out = []
    for segment in segments:
        listed = await platform.members(segment)
        everyone = set(members_of(segment))  # after the listing: what segflow holds now
        busy = unsettled()
        expected = {p for p in everyone if people.suppressed(p) is None}
        by_hash = {c.email_md5: p for p, c in people.contacts(everyone).items() if c.email_md5}

        def owner(m: Member, by_hash: dict[str, str] = by_hash) -> str | None:
            return m.profile_id or by_hash.get(m.remote_id)

        extra = [m for m in listed if owner(m) not in expected and owner(m) not in busy]
        missing = sorted(expected - {owner(m) for m in listed} - busy)
        drift = Drift(segment, len(expected), len(listed), len(missing), len(extra))
        if not dry_run:
            if extra:
                await platform.remove(segment, extra)
                drift.removed = len(extra)
            skipped = await platform.add(segment, missing) if missing else {}
            drift.added = len(missing) - len(skipped)
            drift.skipped = dict(Counter(skipped.values()))
        out.append(drift)
    return out
