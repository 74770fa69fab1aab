"""Which provisioner runs: ``[provisioner] kind`` turned into a provisioner object.

``log`` (default: one log line per request), ``webhook`` (signed JSON POST) or ``crm`` (a
callback provisioner around the callable the worker passes in, which updates a CRM field).
Nothing is built at import time; a missing setting is a ``ConfigError`` naming the key.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import TextIO

import requests

from billing_core.adapters.provisioners import (
    CallbackProvisioner,
    LogProvisioner,
    Provisioner,
    ProvisioningTask,
    WebhookProvisioner,
)
from config.settings import ConfigError, ProvisionerSettings


def build_provisioner(settings: ProvisionerSettings, *, env: Mapping[str, str] | None = None,
                      callback: Callable[[ProvisioningTask], str | None] | None = None,
                      session: requests.Session | None = None,
                      sleep: Callable[[float], None] = time.sleep,
                      log_stream: TextIO | None = None) -> Provisioner:
    env = os.environ if env is None else env
    if settings.kind == "log":
        return LogProvisioner(log_stream)
    if settings.kind == "webhook":
        if not settings.url:
            raise ConfigError("[provisioner] kind='webhook' needs url")
        if not settings.secret_env:
            raise ConfigError("[provisioner] kind='webhook' needs secret_env (the name of the "
                              "environment variable holding the HMAC secret)")
        secret = env.get(settings.secret_env)
        if not secret:
            raise ConfigError(f"[provisioner] secret_env={settings.secret_env!r}: that "
                              "environment variable is not set")
        try:
            return WebhookProvisioner(settings.url, secret, max_attempts=settings.max_attempts,
                                      timeout_seconds=settings.timeout_seconds,
                                      session=session, sleep=sleep)
        except ValueError as exc:
            raise ConfigError(f"[provisioner] {exc}") from None
    if settings.kind == "crm":
        if callback is None:
            raise ConfigError("[provisioner] kind='crm' is wired by the sync (it passes the "
                              "CRM-field callback); it cannot run on its own")
        return CallbackProvisioner(callback)
    raise ConfigError(f"[provisioner] kind={settings.kind!r} must be log, webhook or crm")
