"""Service settings: one pydantic-settings class, from ``SEGFLOW_*`` env and
``config/segflow.yaml`` (env wins).

Keys come as comma-separated lists (``SEGFLOW_WRITE_KEYS=k1,k2``); with none
given, ``segflow serve`` creates a write and a read key in
``$SEGFLOW_HOME/keys.json`` (mode 0600) and says where, never what.
"""

from __future__ import annotations

import json
import os
import secrets
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

YAML_FILE = Path("config/segflow.yaml")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SEGFLOW_", yaml_file=YAML_FILE, extra="ignore")

    state_dir: Path = Field(default_factory=lambda: segflow_home() / "state")
    segments: Path = Path("config/segments.yaml")
    clock: Literal["wall", "event"] = "wall"
    durability: Literal["process", "power"] = "process"
    store: str = Field(default="memory", pattern=r"^(memory|rediss?://.+|unix://.+)$")  # where profiles live
    store_prefix: str = Field(default="segflow:profile:", min_length=1)  # Redis keys of this service's profiles
    write_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    read_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    tracking_uri: str | None = None
    model_alias: str = "champion"
    snapshot_every_s: float = Field(default=300.0, gt=0)
    retention_days: int = Field(default=30, ge=1)
    dedup_hours: float = Field(default=24.0, gt=0)
    max_event_bytes: int = 32 * 1024
    max_batch_bytes: int = 500 * 1024
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)

    @field_validator("write_keys", "read_keys", mode="before")
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


def with_keys(settings: Settings) -> tuple[Settings, Path | None]:
    """Settings with keys: the configured ones, else a write and a read key
    kept in ``keys.json`` beside the state (created once, mode 0600). The
    path is returned when the file is used, so it can be named (never the keys)."""
    if settings.write_keys and settings.read_keys:
        return settings, None
    path = settings.state_dir.parent / "keys.json"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        keys = {"write": "sfw_" + secrets.token_urlsafe(24), "read": "sfr_" + secrets.token_urlsafe(24)}
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(keys, f)
    keys = json.loads(path.read_text())
    update = {
        "write_keys": settings.write_keys or [SecretStr(keys["write"])],
        "read_keys": settings.read_keys or [SecretStr(keys["read"])],
    }
    return settings.model_copy(update=update), path
