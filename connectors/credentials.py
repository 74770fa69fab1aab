"""Secrets for a connection: from environment variables or a secrets file, never from config.

Rules kept here:
- The connection config only names where a secret lives: `"env:VAR_NAME"` or `"file:key"` (a key
  of the TOML secrets file named by `secrets_file`, looked up first in a table named after the
  connection, then at top level). A literal value for a secret key is refused at load time.
- A `Secret` never shows its value in `repr`/`str`/logs; call `.reveal()` at the point of use.
- Resolution happens when a connector logs in, not at import or config-load time.
"""

from __future__ import annotations

import logging
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from connectors.base import FatalError

log = logging.getLogger(__name__)

#: Credential keys that hold secrets: they must be references, never literals.
SECRET_KEYS = frozenset(
    {"client_secret", "password", "security_token", "private_key", "consumer_secret"}
)


class CredentialError(FatalError):
    """A credential is missing or was written into the config file itself."""


class Secret:
    """A string that hides itself from repr, str, format and logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def validate_refs(connection: str, refs: Mapping[str, Any]) -> None:
    """Refuse literal secrets in config: each secret key must be `env:` or `file:`."""
    for key, value in refs.items():
        if key in SECRET_KEYS and not (
            isinstance(value, str) and value.startswith(("env:", "file:"))
        ):
            raise CredentialError(
                f"connection {connection!r}: credential {key!r} must be 'env:VAR' or 'file:key'; "
                "secrets are never written in the config file"
            )


def resolve(
    connection: str,
    refs: Mapping[str, Any],
    secrets_file: str | None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Turn credential references into values; secret keys come back as `Secret`."""
    env = os.environ if environ is None else environ
    file_values: dict[str, Any] | None = None
    out: dict[str, Any] = {}
    for key, ref in refs.items():
        if isinstance(ref, str) and ref.startswith("env:"):
            var = ref[4:]
            if var not in env or env[var] == "":
                raise CredentialError(
                    f"connection {connection!r}: environment variable {var} (for {key}) is not set"
                )
            value: Any = env[var]
        elif isinstance(ref, str) and ref.startswith("file:"):
            if file_values is None:
                file_values = _read_secrets_file(connection, secrets_file)
            name = ref[5:]
            if name not in file_values:
                raise CredentialError(
                    f"connection {connection!r}: key {name!r} (for {key}) not in secrets file"
                )
            value = file_values[name]
        else:
            value = ref
        out[key] = Secret(str(value)) if key in SECRET_KEYS else value
    return out


def _read_secrets_file(connection: str, path: str | None) -> dict[str, Any]:
    if not path:
        raise CredentialError(f"connection {connection!r}: 'file:' secret but no secrets_file")
    try:
        if Path(path).stat().st_mode & 0o077:
            log.warning("connection %s: secrets file %s is readable by group or others",
                        connection, path)
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise CredentialError(
            f"connection {connection!r}: cannot read secrets file {path}: {exc.strerror}"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise CredentialError(
            f"connection {connection!r}: secrets file {path} is not valid TOML: {exc}"
        ) from None
    scoped = data.get(connection)
    merged = {k: v for k, v in data.items() if not isinstance(v, dict)}
    if isinstance(scoped, dict):
        merged.update(scoped)
    return merged
