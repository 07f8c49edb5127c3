"""The settings every backend shares, and strict parsing with errors that name the key.

Each backend declares its own settings model, a subclass of `BackendSettings`; the provider
and the CLI turn a whole `config:` block into a backend with `synapse_objstore.config`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from synapse_objstore.errors import ConfigError

SettingsT = TypeVar("SettingsT", bound=BaseModel)

# `check_on_startup`: log the outcome (true), stop Synapse when the check fails ("required"),
# or skip the check (false). synapse_objstore/health.py has the reasons.
StartupCheck = Literal[True, False, "required"]


class BackendSettings(BaseModel):
    """Keys every backend accepts.

    Models are strict (a string is not an int), reject unknown keys, and never echo an
    input value in an error, since the value may be a secret.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, hide_input_in_errors=True)

    prefix: str = Field(
        "",
        description="Prepended as-is to every media path to make the object key, exactly as "
        "synapse-s3-storage-provider does ('media/' gives 'media/local_content/...').",
    )
    threadpool_size: int = Field(
        40,
        ge=1,
        le=4096,
        description="How much runs at once against the store: threads for blocking backends, "
        "and the default size of the connection pool.",
    )
    check_on_startup: StartupCheck = Field(
        True,
        description="Check once the homeserver runs that the store answers with these credentials: "
        "true logs the outcome, \"required\" also stops Synapse when the check fails, false skips it.",
    )
    fetch_deadline: float = Field(
        30.0,
        gt=0,
        le=600,
        description="Seconds a download waits for the store, all retries included, from Synapse "
        "asking for the media to the object being open; then it fails with an error. Deletes and "
        "the provider's probes of a store that is down are held to it too.",
    )
    store_deadline: float = Field(
        300.0,
        gt=0,
        le=86400,
        description="Seconds an upload (store_file) may take, all retries included, from the call "
        "to the store's last answer; then it fails with an error. It moves the whole file, so raise "
        "it for large media over a slow link.",
    )

    @field_validator("prefix")
    @classmethod
    def _check_prefix(cls, prefix: str) -> str:
        if prefix.startswith("/"):
            raise ValueError("must not start with '/'")
        if "//" in prefix:
            raise ValueError("must not contain an empty segment ('//')")
        if any(segment in (".", "..") for segment in prefix.split("/")):
            raise ValueError("must not contain '.' or '..' segments")
        return prefix

    @field_validator("check_on_startup", mode="before")
    @classmethod
    def _check_startup_check(cls, value: object) -> object:
        if value is True or value is False or value == "required":
            return value
        raise ValueError('must be true, false or "required"')

    def secret_values(self) -> Iterator[str]:
        """Every secret this block holds, for log redaction."""
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr) and value.get_secret_value():
                yield value.get_secret_value()


def parse_settings(model: type[SettingsT], data: Mapping[str, Any]) -> SettingsT:
    """Validate `data` against `model`, turning pydantic's errors into one ConfigError."""
    try:
        return model.model_validate(dict(data))
    except ValidationError as error:
        raise ConfigError(describe_validation_error(error)) from None


def describe_validation_error(error: ValidationError) -> str:
    """One line per problem, each naming the key; never the value."""
    problems = []
    for item in error.errors(include_input=False, include_url=False):
        key = ".".join(str(part) for part in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        if not key:  # a check across keys; its message names them
            problems.append(message)
        elif item["type"] == "extra_forbidden":
            problems.append(f"unknown key '{key}'")
        elif item["type"] == "missing":
            problems.append(f"'{key}' is required")
        else:
            problems.append(f"'{key}': {message}")
    return "; ".join(problems)
