"""Service settings: one pydantic-settings class, from ``SEGFLOW_*`` env and
``config/segflow.yaml`` (env wins).

Keys come as comma-separated lists (``SEGFLOW_WRITE_KEYS=k1,k2``); with none
given, ``segflow serve`` creates a write and a read key in
``$SEGFLOW_HOME/keys.json`` (mode 0600) and says where, never what.
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

YAML_FILE = Path("config/segflow.yaml")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SEGFLOW_", yaml_file=YAML_FILE, extra="ignore")

    state_dir: Path = Field(default_factory=lambda: segflow_home() / "state")
    segments: Path = Path("config/segments.yaml")
    clock: Literal["wall", "event"] = "wall"
    durability: Literal["process", "power"] = "process"
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
