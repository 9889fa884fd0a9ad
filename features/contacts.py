"""How to reach a person: the email and phone an ``identify`` call carries.

Events never keep them (the parser pseudonymizes both). This module reads
them from the raw payloads of the events a request had accepted, so the
serving layer can seal them in the contact vault before they are dropped.
Only well-formed values are kept: an email that is an address, a phone in
E.164 (``+`` and 8 to 15 digits, as Klaviyo requires; separators dropped).

>>> from features.events import Event
>>> from features.segment_spec import Parsed
>>> e = Event("m1", "identify", "u1", None, 1_000, 1_000, kind="identify")
>>> [c] = contacts_of({"userId": "u1", "traits": {"email": " Bob@Mail.COM ", "phone": "+1 (555) 010-9999"}},
...                   Parsed([e], []))
>>> c.profile_id, c.contact.email, c.contact.phone, c.contact.email_md5
('u1', 'Bob@Mail.COM', '+15550109999', '4cf38bd6ac1546139696f852bb3625ca')
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from features.payloads import identify_traits
from features.pseudonyms import normal_key
from features.segment_spec import Parsed

_DIGITS = re.compile(r"\d")
_ADDRESS = re.compile(r"[^@\s\"<>(),;:]{1,64}@[^@\s\"<>(),;:]+\.[^@\s\"<>(),;:.]+")  # local@domain.tld
EMAIL_KEYS = frozenset({"email", "emailaddress", "mail"})  # trait names as :func:`normal_key` gives them
PHONE_KEYS = frozenset({"phone", "phonenumber", "mobile", "mobilephone", "mobilenumber", "cell", "cellphone"})


def subscriber_hash(email: str) -> str:
    """Mailchimp's member id: the MD5 of the lower-cased address.

    >>> subscriber_hash("Urist.McVankab@freddiesjokes.com")
    '62eeb292278cc15f5817cb78f7790b08'
    """
    return hashlib.md5(email.strip().lower().encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Contact:
    """An address to reach a person by; ``email_md5`` stays when the vault keeps no raw address."""

    email: str | None = None
    phone: str | None = None
    email_md5: str | None = None

    def merged(self, newer: Contact) -> Contact:
        """This contact updated by a newer one (what the newer one lacks is kept)."""
        return Contact(newer.email or self.email, newer.phone or self.phone, newer.email_md5 or self.email_md5)

    def without_raw(self) -> Contact:
        """Only the identifiers derived at the edge (the vault is off)."""
        return replace(self, email=None, phone=None)

    def as_dict(self) -> dict[str, Any]:
        """The contact's fields as plain values (for the vault's admin export)."""
        return {"email": self.email, "phone": self.phone, "email_md5": self.email_md5}


@dataclass(frozen=True, slots=True)
class Sighting:
    """A contact given for a profile at an instant (the event's time)."""

    profile_id: str
    contact: Contact
    at_ms: int


def email_of(value: object) -> str | None:
    """The email an identify call gives in its traits (stripped), or None."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    return text if len(text) <= 254 and _ADDRESS.fullmatch(text) else None


def phone_of(value: object) -> str | None:
    """The phone number an identify call gives in its traits, or None."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value).strip()
    digits = "".join(_DIGITS.findall(text))
    if not text.startswith("+") or not 8 <= len(digits) <= 15 or len(text) > 32 or digits.startswith("0"):
        return None
    return "+" + digits


def contact_in(payload: Mapping[str, Any]) -> Contact | None:
    """The contact an identify payload gives: its traits' email and phone
    (at the root or under ``context.traits``), or a ``userId`` that is an address."""
    traits = identify_traits(dict(payload))
    by_key = {normal_key(k): v for k, v in traits.items() if isinstance(k, str)}
    email = next((e for k in EMAIL_KEYS if (e := email_of(by_key.get(k)))), None) or email_of(payload.get("userId"))
    phone = next((p for k in sorted(PHONE_KEYS) if (p := phone_of(by_key.get(k)))), None)
    if email is None and phone is None:
        return None
    return Contact(email, phone, subscriber_hash(email) if email else None)


def contacts_of(payload: object, parsed: Parsed, kind: str | None = None) -> list[Sighting]:
    """The contacts of a request's accepted identify events, by profile.
    ``kind`` is the endpoint's, as the parser was given it (``batch``, or one
    event's; None: a body with a ``batch`` list is a batch)."""
    batch = kind == "batch" or (kind is None and isinstance(payload, dict) and "batch" in payload)
    items = payload.get("batch") if batch and isinstance(payload, dict) else [payload]
    if not isinstance(items, list) or len(items) != len(parsed.events) + len(parsed.rejected):
        return []  # not what the parser read: nothing to take
    refused = {r.index for r in parsed.rejected}
    accepted = [item for i, item in enumerate(items) if i not in refused]
    out = []
    for item, event in zip(accepted, parsed.events, strict=True):
        if event.kind != "identify" or not isinstance(item, dict):
            continue
        contact = contact_in(item)
        if contact is not None:
            out.append(Sighting(event.profile_id, contact, event.ts_ms))
    return out
