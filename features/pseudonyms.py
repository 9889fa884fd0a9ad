"""Keyed pseudonymization of personal data at the edge.

Personal data (email, phone, IP, names) is never stored raw: it is replaced by
a keyed hash (BLAKE2b in keyed mode, a MAC) so the same person maps to the same
pseudonym inside one installation while nobody without the key can reverse or
dictionary-attack it. The key comes from settings, never from the code: the
embedded default generates one on first run and keeps it outside the repository
(``$SEGFLOW_HOME/pii.key``, by default ``~/.segflow/pii.key``, mode 0600).

>>> p = Pseudonymizer(b"k" * 32)
>>> alias = p("Alice@Example.com ")
>>> alias == p("alice@example.com"), alias.startswith("pii_"), len(alias)
(True, True, 36)
>>> p(alias) == alias  # pseudonymizing twice changes nothing
True
>>> p.scrub_text("see https://x.io/?e=bob%40mail.com now").startswith("see https://x.io/?e=pii_")
True
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote

PREFIX = "pii_"
_DIGEST_BYTES = 16
_PSEUDONYM = re.compile(r"pii_[0-9a-f]{32}\Z")
EMAIL = re.compile(r"[\w.+-]+(?:@|%40)[\w-]+(?:\.[\w-]+)+")
# A phone number as a whole id: E.164 with a leading '+', a national number
# written with separators, or 10-11 digits after a trunk '0'. Other plain digit
# strings are not phones: shops use numeric user ids (and no integer id starts
# with 0); a plain-digit phone under its key (``phone``) is caught by the key.
PHONE = re.compile(r"(?:\+\d[\d\s().-]{6,18}\d|\(?\d{3}\)?[\s.-]\d{3}[\s.-]\d{4}|0\d{9,10})\Z")

# Inside free text: a maximal run of digits and separators (nothing word-like
# or dotted touching it), checked by :func:`_phone_like`.
_PHONE_RUN = re.compile(
    r"(?<![\w./+\-])(?:\+|00)?\(?\+?\d[\d\s().\-/+]{5,24}\d(?:\s?(?:x|ext\.?|#)\s?\d{1,6})?(?![\w/\-]|\.\d)"
)
_EXTENSION = re.compile(r"\s?(?:x|ext\.?|#)\s?\d{1,6}\Z")
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?!\w|\.\d)")
_IPV6 = re.compile(r"(?<![\w:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?::\d{1,3}(?:\.\d{1,3}){3})?(?![\w:]|\.\w)")
_DATE = re.compile(r"\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}")
# Cheap first look: could this text hold any of the above?
_HINT = re.compile(
    r"@|%40|(?<![\w./+\-])\(?\+?\d[\d\s().\-/+]{5,}\d|[0-9A-Fa-f]*:[0-9A-Fa-f]*:|(?:\d{1,3}\.){3}\d|%2[bB]|%3[aA]"
)
_QUERY_PAIR = re.compile(r"([?&;])([^=&#;?]{1,64})=([^&#;]*)")


def _phone_like(run: str, alone: bool = True) -> bool:
    """Whether a run of digits and separators is a phone number. ``alone``:
    the run is the whole value, where a plain digit string is an id (shops
    use numeric ids); inside free text, 10 to 15 plain digits are a phone."""
    run = _EXTENSION.sub("", run)
    digits = sum(c.isdigit() for c in run)
    if run.startswith(("+", "00", "(+")):
        return 7 <= digits <= 15
    if not 8 <= digits <= 15 or _DATE.fullmatch(run.strip()):
        return False
    return any(not c.isdigit() for c in run) or (not alone and digits >= 10)


def _ip_like(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


# Personal field names, compared lower-case without '_', '-', '.' or spaces.
PERSONAL_KEYS = frozenset(
    {
        "email", "emailaddress", "mail", "phone", "phonenumber", "mobile", "mobilephone", "mobilenumber",
        "cell", "cellphone", "telephone", "tel", "fax", "firstname", "lastname", "fullname", "givenname",
        "familyname", "surname", "middlename", "maidenname", "username", "displayname", "address",
        "streetaddress", "street", "address1", "address2", "addressline1", "addressline2", "postalcode",
        "postcode", "zip", "zipcode", "ip", "ipaddress", "clientip", "remoteip", "userip", "ipv4", "ipv6",
        "xforwardedfor", "xrealip", "birthday", "dateofbirth", "dob", "birthdate", "ssn", "taxid",
        "nationalid", "passport", "passportnumber",
    }
)  # fmt: skip
_PERSONAL_SUFFIXES = (
    "email", "emailaddress", "phone", "phonenumber", "mobile", "mobilenumber", "firstname", "lastname",
    "fullname", "streetaddress", "address", "ipaddress", "ipv4", "ipv6", "birthday", "dateofbirth",
)  # fmt: skip
# Under these keys a ``name`` is a person's (elsewhere in properties it is a product's).
PERSON_KEYS = frozenset({"traits", "customer", "recipient", "user", "contact", "person", "buyer", "sender", "owner"})
_MONEY_SUFFIXES = ("cost", "price", "amount", "tax", "total", "method", "carrier", "currency", "country")


def normal_key(key: str) -> str:
    """A field name as the policy compares it: lower case, no '_', '-', '.' or spaces.

    >>> normal_key("Shipping_Phone"), normal_key("ip-address")
    ('shippingphone', 'ipaddress')
    """
    return key.lower().replace("_", "").replace("-", "").replace(".", "").replace(" ", "")


def personal_key(key: str, person: bool = False) -> bool:
    """Whether a field of this name holds personal data wherever it appears.
    ``person``: the field belongs to a person (traits, or a ``customer``
    object), so a plain ``name`` is the person's.

    >>> [personal_key(k) for k in ("full_name", "mobile_phone", "client_ip", "shipping_street", "name", "price")]
    [True, True, True, True, False, False]
    >>> personal_key("name", person=True), personal_key("shipping", person=True), personal_key("shipping_cost")
    (True, False, False)
    """
    k = normal_key(key)
    if k in PERSONAL_KEYS or (person and k == "name"):
        return True
    for prefix in ("shipping", "billing"):
        if k.startswith(prefix) and len(k) > len(prefix):
            return not k.endswith(_MONEY_SUFFIXES)
    return k.endswith(_PERSONAL_SUFFIXES) and not k.endswith(("macaddress", "webaddress", "walletaddress"))


KEY_ENV = "SEGFLOW_PII_KEY"
HOME_ENV = "SEGFLOW_HOME"


class Pseudonymizer:
    """Replaces a personal value by ``pii_`` and 32 hex digits of a keyed hash."""

    __slots__ = ("_clean", "_key")

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError(f"pseudonymization key is {len(key)} bytes; it needs at least 16")
        self._key = key[:64]
        self._clean: set[str] = set()  # short texts seen to hold nothing personal (they repeat: categories, devices)

    def __call__(self, value: str) -> str:
        if _PSEUDONYM.match(value):
            return value
        normal = value.strip().lower().replace("%40", "@")
        digest = hashlib.blake2b(normal.encode(), key=self._key, digest_size=_DIGEST_BYTES)
        return PREFIX + digest.hexdigest()

    def tombstone(self, value: str) -> str:
        """A keyed hash that recognizes ``value`` again without holding it
        (what erasure keeps to drop a user's later events)."""
        return "erased_" + hashlib.blake2b(value.encode(), key=self._key, digest_size=_DIGEST_BYTES).hexdigest()

    def digest(self, text: str) -> str:
        """A keyed hash of ``text`` exactly as given (case kept), 32 hex digits."""
        return hashlib.blake2b(text.encode(), key=self._key, digest_size=_DIGEST_BYTES).hexdigest()

    def scrub_text(self, text: str) -> str:
        """Replace every email address, phone number and IP address inside
        ``text`` by its pseudonym, and in a URL's query string the value of
        every personal parameter (``?phone=...``); percent-encoded forms too."""
        if text in self._clean:
            return text
        if _HINT.search(text) is None:
            if len(text) <= 64:
                if len(self._clean) >= 100_000:
                    self._clean.clear()
                self._clean.add(text)
            return text
        return scrub_with(text, self)

    def identifier(self, value: str) -> str:
        """An id as events and profiles keep it: the pseudonym of one that looks
        personal (an email address, a phone number), else scrubbed of what it
        holds; so an API path names the same profile as the events did.

        >>> p = Pseudonymizer(b"0" * 32)
        >>> p.identifier("u1"), p.identifier("ann@example.com") == p("ann@example.com")
        ('u1', True)
        """
        return self(value) if looks_personal(value) else self.scrub_text(value)

    def __repr__(self) -> str:  # never show the key
        return "Pseudonymizer(<key hidden>)"


def looks_personal(identifier: str) -> bool:
    """Whether an id looks like an email address or a phone number.

    >>> looks_personal("alice@example.com"), looks_personal("+44 20 7946 0958")
    (True, True)
    >>> looks_personal("543462"), looks_personal("u-000017")
    (False, False)
    """
    return ("@" in identifier and EMAIL.fullmatch(identifier) is not None) or (PHONE.match(identifier) is not None)


def redact(text: str) -> str:
    """Text safe for errors and logs: emails, IP addresses and phone numbers
    replaced by placeholders (no key needed, nothing recoverable).

    >>> redact("bad timestamp 'bob@x.io' from 10.1.2.3 or 2001:db8::1, call +44 20 7946 0958")
    "bad timestamp '<email>' from <ip> or <ip>, call <phone>"
    """
    if _HINT.search(text) is None:
        return text
    return scrub_with(text, lambda value: "<email>" if ("@" in value or "%40" in value) else "<personal>", redact=True)


def scrub_with(text: str, replace: Callable[[str], str], redact: bool = False) -> str:
    """``text`` with each personal value found in it passed through ``replace``
    (a pseudonymizer, or placeholders when ``redact``)."""
    original = text
    if "%" in text:
        text = unquote(text)
    plain = text
    if "=" in text and "?" in text:
        text = _QUERY_PAIR.sub(lambda m: _query_value(m, replace, redact), text)
    text = EMAIL.sub(lambda m: replace(m.group(0)), text)
    text = _IPV6.sub(lambda m: _if(m.group(0), _ip_like, "<ip>" if redact else replace), text)
    text = _IPV4.sub(lambda m: _if(m.group(0), _ip_like, "<ip>" if redact else replace), text)
    whole = len(text)
    text = _PHONE_RUN.sub(
        lambda m: _if(m.group(0), lambda run: _phone_like(run, len(run) == whole), "<phone>" if redact else replace),
        text,
    )
    return original if text == plain else text  # nothing personal: the text as given, encoding and all


def _if(value: str, test: Callable[[str], bool], replace: str | Callable[[str], str]) -> str:
    if not test(value):
        return value
    return replace if isinstance(replace, str) else replace(value)


def _query_value(m: re.Match[str], replace: Callable[[str], str], redact: bool) -> str:
    sep, key, value = m.group(1), m.group(2), m.group(3)
    if value and not value.startswith(PREFIX) and personal_key(key, person=True):
        return f"{sep}{key}={'<personal>' if redact else replace(value)}"
    return m.group(0)


def segflow_home() -> Path:
    """Where segflow keeps its local state outside the repository."""
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".segflow")


def load_key(path: Path | None = None) -> bytes:
    """The pseudonymization key: ``$SEGFLOW_PII_KEY`` (hex), else the key file,
    generated with 32 random bytes on first use."""
    env = os.environ.get(KEY_ENV)
    if env:
        try:
            return bytes.fromhex(env)
        except ValueError as exc:
            raise ValueError(f"{KEY_ENV} must be hex digits ({exc})") from None
    path = path or segflow_home() / "pii.key"
    if path.exists():
        return bytes.fromhex(path.read_text().strip())
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    return bytes.fromhex(path.read_text().strip())
