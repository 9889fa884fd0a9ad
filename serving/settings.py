"""Service settings: one pydantic-settings class, from ``SEGFLOW_*`` env and
``config/segflow.yaml`` (env wins).

Keys come as comma-separated lists (``SEGFLOW_ADMIN_KEYS=k1,k2``; the older
``SEGFLOW_WRITE_KEYS`` are admin keys) and from the keys file
(``$SEGFLOW_HOME/keys.json``, mode 0600, created with an admin, a read and a
source key when absent, re-read when it changes); see :mod:`serving.keys`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from features.pseudonyms import segflow_home
from serving.keys import ensure_keys_file

INTENT_MODES = r"^(auto|batch|online|blend:(0(\.\d+)?|1(\.0*)?))$"  # how ``intent`` is made

YAML_FILE = Path("config/segflow.yaml")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SEGFLOW_", yaml_file=YAML_FILE, extra="ignore")

    state_dir: Path = Field(default_factory=lambda: segflow_home() / "state")
    segments: Path = Path("config/segments.yaml")
    destinations: Path = Path("config/destinations.yaml")  # where changes are delivered (none when absent)
    vault: bool = True  # keep identify's email and phone, sealed (off: only Mailchimp's subscriber hash)
    vault_key_file: Path | None = None  # default $SEGFLOW_HOME/vault.key ($SEGFLOW_VAULT_KEYS wins)
    clock: Literal["wall", "event"] = "wall"
    durability: Literal["process", "power"] = "process"
    store: str = Field(default="memory", pattern=r"^(memory|rediss?://.+|unix://.+)$")  # where profiles live
    store_prefix: str = Field(default="segflow:profile:", min_length=1)  # Redis keys of this service's profiles
    admin_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    write_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)  # the first name of admin keys
    read_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    source_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    source_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)  # origins the source keys are bound to
    keys_file: Path | None = None  # default: keys.json beside the state directory
    source_rate_per_s: float = Field(default=1000.0, gt=0)  # each source key, all clients together
    source_client_rate_per_s: float = Field(default=50.0, gt=0)  # each source key, one client address
    public_metrics: bool = False  # /metrics without a read key
    public_docs: bool = False  # /docs and /openapi.json without a read key
    max_future_skew_s: float = Field(default=600.0, ge=0)  # how far ahead of receipt an event may be dated
    request_deadline_s: float = Field(default=10.0, gt=0)  # to receive a request's headers and body
    max_pending_requests: int = Field(default=1000, ge=1)  # connections still sending a request at once
    quarantine_max: int = Field(default=100_000, ge=1)  # rejected events kept (oldest dropped first)
    tracking_uri: str | None = None
    model_alias: str = "champion"
    intent: str = Field(default="auto", pattern=INTENT_MODES)  # the primary score: auto, batch, online, blend:W
    snapshot_every_s: float = Field(default=300.0, gt=0)
    retention_days: int = Field(default=30, ge=1)
    dedup_hours: float = Field(default=24.0, gt=0)
    max_event_bytes: int = 32 * 1024
    max_batch_bytes: int = 500 * 1024
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)

    @field_validator("admin_keys", "write_keys", "read_keys", "source_keys", "source_origins", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, YamlConfigSettingsSource(settings_cls)


def keys_path(settings: Settings) -> Path:
    return settings.keys_file or settings.state_dir.parent / "keys.json"


def with_keys(settings: Settings) -> tuple[Settings, Path | None]:
    """Settings and the keys file to use: when settings give no admin or no
    read key, the keys file (created once with a key of each scope) supplies
    them. The path is returned when the file is in use, so it can be named
    (never the keys)."""
    if (settings.admin_keys or settings.write_keys) and settings.read_keys and settings.keys_file is None:
        return settings, None
    path = keys_path(settings)
    ensure_keys_file(path)
    return settings.model_copy(update={"keys_file": path}), path


def admin_key(settings: Settings) -> str:
    """An admin key for a client of this machine's service (``segflow replay``, the demo)."""
    given = settings.admin_keys or settings.write_keys
    if given:
        return given[0].get_secret_value()
    return next(k.secret for k in ensure_keys_file(keys_path(settings)) if k.scope == "admin")
