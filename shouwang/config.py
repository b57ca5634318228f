"""Strict configuration: pydantic models, YAML loading, and errors that name the file and key."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

M = TypeVar("M", bound=BaseModel)


class ConfigError(Exception):
    """A configuration file is unreadable or does not match its schema."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TlsConfig(Strict):
    ca_file: Path = Field(description="CA certificate that signed the broker's certificate")
    cert_file: Path | None = Field(None, description="Client certificate, for mutual TLS")
    key_file: Path | None = Field(None, description="Client private key, for mutual TLS")

    @model_validator(mode="after")
    def _pair(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self


class BrokerConfig(Strict):
    host: str = Field("127.0.0.1", description="Broker host name or address")
    port: int = Field(1883, ge=1, le=65535, description="Broker TCP port")
    username: str | None = Field(None, description="MQTT user name (per device or per site)")
    password_env: str | None = Field(
        None, description="Name of the environment variable that holds the password"
    )
    password_file: Path | None = Field(None, description="File whose content is the password")
    client_id: str | None = Field(None, description="MQTT client id; derived when not set")
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keepalive in seconds")
    reconnect_max_s: int = Field(
        4, ge=1, le=300,
        description="Reconnect backoff cap: doubling from 1–2 s (jittered), never more than "
        "this between attempts (an SOS waits at most this long after the broker is back)",
    )
    tls: TlsConfig | None = Field(None, description="TLS settings; plain TCP when absent")

    def password(self) -> str | None:
        """The secret, read at connect time so it never sits in a config dump or a log."""
        if self.password_env:
            value = os.environ.get(self.password_env)
            if value is None:
                raise ConfigError(f"environment variable {self.password_env} is not set")
            return value
        if self.password_file:
            try:
                return self.password_file.read_text().strip()
            except OSError as err:
                raise ConfigError(
                    f"password_file {self.password_file}: cannot read: {err.strerror}"
                ) from err
        return None


class HttpConfig(Strict):
    host: str = Field("127.0.0.1", description="Address the HTTP server listens on")
    port: int = Field(8080, ge=0, le=65535, description="TCP port (0 picks a free one)")


def load_yaml(path: Path, model: type[M]) -> M:
    """Load `path` into `model`; any problem raises ConfigError naming the file and key."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror}") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    return validate(raw if raw is not None else {}, model, source=str(path))


def validate(data: Any, model: type[M], *, source: str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"{source}: {describe(err)}") from err


def describe(err: ValidationError) -> str:
    """One line per problem: `key.path: message`."""
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        lines.append(f"{key}: {msg}")
    return "; ".join(lines)
