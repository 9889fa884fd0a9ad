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

A webhook *triggers* (an email, a flow): it may take a frequency cap and a
flap guard. A list or tag sync mirrors memberships, so it never does.
Secrets come from the environment (``secret_env``), or inline for tests.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from features.specs import parse_duration

FIELDS = ("cart", "top_categories_7d", "intent_band", "cluster_words", "description")
TRIGGERING = ("webhook",)


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


class Destination(BaseModel):
    """One destination and how segflow delivers to it."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,63}$")
    kind: Literal["webhook"] = "webhook"
    url: str = Field(pattern=r"^https?://")
    secret: SecretStr | None = None
    secret_env: str | None = None
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
    frequency_cap: FrequencyCap | None = None
    flap_guard_ms: int = Field(default=0, alias="flap_guard", ge=0)

    @field_validator("max_age_ms", "flap_guard_ms", mode="before")
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

    @model_validator(mode="after")
    def _consistent(self) -> Destination:
        if self.kind not in TRIGGERING and (self.frequency_cap is not None or self.flap_guard_ms):
            raise ValueError(f"a {self.kind} mirrors memberships: no frequency cap or flap guard")
        if self.kind == "webhook" and self.secret is None and self.secret_env is None:
            raise ValueError("a webhook needs a signing secret: secret_env (or secret)")
        return self

    def signing_secret(self) -> str:
        if self.secret is not None:
            return self.secret.get_secret_value()
        assert self.secret_env is not None
        value = os.environ.get(self.secret_env)
        if not value:
            raise DestinationError(f"destination {self.name}: the environment has no {self.secret_env}")
        return value

    def wants(self, segment: str, kind: str) -> bool:
        return (self.segments is None or segment in self.segments) and kind in self.transitions


class Destinations(BaseModel):
    model_config = ConfigDict(extra="forbid")

    destinations: list[Destination] = []

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
