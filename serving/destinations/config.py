"""Destinations, as configured in ``config/destinations.yaml``.

>>> d = Destinations.loads('''
... destinations:
...   - name: crm
...     kind: webhook
...     url: http://127.0.0.1:9000/hooks/segflow
...     secret_env: CRM_WEBHOOK_SECRET
...     segments: [cart_abandoners_48h]
...     frequency_cap: {count: 1, per: 24h}
...     flap_guard: 10m
... ''')
>>> crm = d.destinations[0]
>>> crm.batch_size, crm.flap_guard_ms, crm.frequency_cap.per_ms
(100, 600000, 86400000)
>>> crm.wants("cart_abandoners_48h", "exit"), crm.wants("likely_buyers", "enter")
(True, False)

Three kinds: a signed ``webhook``; ``klaviyo`` (a list per segment, and
optionally an event a flow triggers on); ``mailchimp`` (a tag per segment in
an audience). A webhook *triggers* (an email, a flow): it may take a
frequency cap and a flap guard. A list or tag sync mirrors memberships, so
it never does. Secrets and API keys come from the environment
(``secret_env``, ``api_key_env``), or inline for tests.

>>> k = Destinations.loads('''
... destinations:
...   - {name: k, kind: klaviyo, api_key_env: KLAVIYO_KEY, lists: {vip: Xy12}, events: [vip]}
...   - {name: m, kind: mailchimp, api_key: abc-us6, audience: a1, tags: {vip: VIP}}
... ''').destinations
>>> k[0].segments, k[0].url, k[1].base_url(), k[1].tag("vip"), k[1].email
(['vip'], 'https://a.klaviyo.com', 'https://us6.api.mailchimp.com/3.0', 'VIP', True)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from features.specs import parse_duration

FIELDS = ("cart", "top_categories_7d", "intent_band", "cluster_words", "description")
PLATFORMS = ("klaviyo", "mailchimp")  # email platforms: consent, deletion requests, reconciliation
MAILCHIMP_CONNECTIONS = 10  # simultaneous connections Mailchimp allows


class DestinationError(ValueError):
    """A destinations file that cannot be used; the message names each problem."""


def _ms(value: object) -> int:
    if isinstance(value, int | float):
        return int(value * 1000)  # seconds
    return int(parse_duration(str(value)).total_seconds() * 1000)


class FrequencyCap(BaseModel):
    model_config = ConfigDict(extra="forbid")

    count: int = Field(ge=1)
    per_ms: int = Field(alias="per", gt=0)

    @field_validator("per_ms", mode="before")
    @classmethod
    def _duration(cls, value: object) -> int:
        return _ms(value)


def secret_of(value: SecretStr | None, env: str | None, what: str) -> str:
    """A secret given inline (tests) or, better, by the name of an environment variable."""
    if value is not None:
        return value.get_secret_value()
    found = os.environ.get(env or "")
    if not found:
        raise DestinationError(f"{what}: the environment has no {env}")
    return found


class Destination(BaseModel):
    """What every destination shares: which changes, and how they are delivered."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,63}$")
    segments: list[str] | None = None  # None: every segment
    transitions: list[Literal["enter", "exit"]] = ["enter", "exit"]
    fields: list[str] = []
    start: Literal["newest", "oldest"] = "newest"  # a new destination: changes from now on, or all the outbox holds
    batch_size: int = Field(default=100, ge=1, le=1000)
    concurrency: int = Field(default=4, ge=1, le=64)
    rate_per_s: float = Field(default=50.0, gt=0)  # requests a second
    timeout_s: float = Field(default=10.0, gt=0)
    max_attempts: int = Field(default=10, ge=1)
    max_age_ms: int = Field(default=86_400_000, alias="max_age", gt=0)
    backoff_initial_s: float = Field(default=0.5, gt=0)
    backoff_max_s: float = Field(default=60.0, gt=0)

    @property
    def email(self) -> bool:
        """Whether it sends email: suppressed users get no enters."""
        return True

    @field_validator("max_age_ms", mode="before")
    @classmethod
    def _durations(cls, value: object) -> int:
        return _ms(value)

    @field_validator("fields")
    @classmethod
    def _known_fields(cls, value: list[str]) -> list[str]:
        unknown = [f for f in value if f not in FIELDS]
        if unknown:
            raise ValueError(f"unknown fields {unknown}; known: {list(FIELDS)}")
        return value

    def wants(self, segment: str, kind: str) -> bool:
        return (self.segments is None or segment in self.segments) and kind in self.transitions


class WebhookDestination(Destination):
    """A signed JSON POST of each batch of changes; it may trigger an email,
    so it may take a frequency cap and a flap guard."""

    kind: Literal["webhook"] = "webhook"
    url: str = Field(pattern=r"^https?://")
    secret: SecretStr | None = None
    secret_env: str | None = None
    sends_email: bool = Field(default=False, alias="email")  # true: suppressed users get no enters
    frequency_cap: FrequencyCap | None = None
    flap_guard_ms: int = Field(default=0, alias="flap_guard", ge=0)

    @property
    def email(self) -> bool:
        return self.sends_email

    @field_validator("flap_guard_ms", mode="before")
    @classmethod
    def _guard(cls, value: object) -> int:
        return _ms(value)

    @model_validator(mode="after")
    def _signed(self) -> WebhookDestination:
        if self.secret is None and self.secret_env is None:
            raise ValueError("a webhook needs a signing secret: secret_env (or secret)")
        return self

    def signing_secret(self) -> str:
        return secret_of(self.secret, self.secret_env, f"destination {self.name}")


class PlatformDestination(Destination):
    """An email platform, reached with an API key; it mirrors memberships
    (no frequency cap, no flap guard: a list is kept exact)."""

    api_key: SecretStr | None = None
    api_key_env: str | None = None

    @model_validator(mode="after")
    def _keyed(self) -> PlatformDestination:
        if self.api_key is None and self.api_key_env is None:
            raise ValueError(
                f"a {getattr(self, 'kind', 'platform')} destination needs an API key: api_key_env (or api_key)"
            )
        return self

    def key(self) -> str:
        return secret_of(self.api_key, self.api_key_env, f"destination {self.name}")


class KlaviyoDestination(PlatformDestination):
    """Klaviyo: each segment is a list (``lists``: segment to list id); an
    enter may also create an event a flow triggers on (``events``)."""

    kind: Literal["klaviyo"] = "klaviyo"
    url: str = Field(default="https://a.klaviyo.com", pattern=r"^https?://")
    revision: str = Field(default="2026-10-15", pattern=r"^\d{4}-\d{2}-\d{2}(\.\w+)?$")
    lists: dict[str, str] = Field(min_length=1)
    events: list[str] = []  # segments whose enters create an event
    metric: str = "Entered segment {segment}"  # the event's metric name

    @model_validator(mode="after")
    def _mapped(self) -> KlaviyoDestination:
        if self.segments is None:
            self.segments = list(self.lists)
        unmapped = [s for s in [*self.segments, *self.events] if s not in self.lists]
        if unmapped:
            raise ValueError(f"segments with no list in lists: {unmapped}")
        if "{segment}" not in self.metric:
            raise ValueError("metric must name the segment: put {segment} in it")
        return self


class MailchimpDestination(PlatformDestination):
    """Mailchimp: each segment is a tag (``tags``: segment to tag name,
    default the segment's name) on the members of one audience."""

    kind: Literal["mailchimp"] = "mailchimp"
    url: str | None = Field(default=None, pattern=r"^https?://")  # default: the data center in the API key
    audience: str = Field(min_length=1)
    tags: dict[str, str] = {}
    concurrency: int = Field(default=4, ge=1, le=MAILCHIMP_CONNECTIONS)
    is_syncing: bool = False  # true: tag changes start no Mailchimp automation

    def tag(self, segment: str) -> str:
        return self.tags.get(segment, segment)

    def base_url(self) -> str:
        if self.url is not None:
            return self.url.rstrip("/")
        _, _, dc = self.key().rpartition("-")
        if not dc.isalnum():
            raise DestinationError(f"destination {self.name}: the API key names no data center (…-us6); give url")
        return f"https://{dc}.api.mailchimp.com/3.0"


AnyDestination = Annotated[
    Annotated[WebhookDestination, Tag("webhook")]
    | Annotated[KlaviyoDestination, Tag("klaviyo")]
    | Annotated[MailchimpDestination, Tag("mailchimp")],
    Discriminator(lambda d: _kind_of(d)),
]


def _kind_of(value: object) -> str:
    kind = value.get("kind", "webhook") if isinstance(value, dict) else getattr(value, "kind", "webhook")
    return str(kind)


class Destinations(BaseModel):
    model_config = ConfigDict(extra="forbid")

    destinations: list[AnyDestination] = []

    @model_validator(mode="after")
    def _unique(self) -> Destinations:
        names = [d.name for d in self.destinations]
        if len(names) != len(set(names)):
            raise ValueError(f"destination names repeat: {sorted(names)}")
        return self

    @classmethod
    def loads(cls, text: str, source: str = "destinations.yaml") -> Destinations:
        try:
            data = yaml.safe_load(text) or {}
            return cls.model_validate(data)
        except yaml.YAMLError as exc:
            raise DestinationError(f"{source}: not YAML: {exc}") from None
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
            raise DestinationError(f"{source}: {problems}") from None

    @classmethod
    def load(cls, path: Path) -> Destinations:
        """The destinations in ``path``; none when there is no such file."""
        if not path.exists():
            return cls()
        return cls.loads(path.read_text(), str(path))
