"""Dataverse tokens: one long-lived msal `ConfidentialClientApplication` per connection.

Methods (settings.auth): `client_secret` (credentials client_id + client_secret) or
`certificate` (client_id + private_key_file + thumbprint). Authority is tenant-specific
(`{authority_host}/{tenant_id}`), scope `{org url}/.default`.

Rules kept here: the app is built once, lazily, and kept, so msal's in-memory cache serves the
token and msal refreshes it before expiry; msal's HTTP goes through the connection's `Transport`
(timeouts, CA bundle, retries). `invalidate()` drops the cached token after a 401 so the next
`token()` fetches a fresh one (the connector allows this once per call). `validate_authority =
false` (local sandbox only) turns off msal's instance discovery and authority validation.
Errors become `AuthError` with msal's `error` code; tokens and secrets are never logged.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msal

from connectors.base import AuthError
from connectors.credentials import Secret
from connectors.settings import ConnectionSettings
from connectors.transport import Transport


class TokenProvider:
    def __init__(self, settings: ConnectionSettings, credentials: Callable[[], dict[str, Any]],
                 http: Transport):
        self.settings = settings
        self._credentials = credentials
        self._http = http
        self._app: msal.ConfidentialClientApplication | None = None
        self._build_lock = threading.Lock()     # readers side by side build one application
        self.scope = f"{settings.url}/.default"

    def _build(self) -> msal.ConfidentialClientApplication:
        creds = self._credentials()
        client_id = creds.get("client_id")
        if not client_id:
            raise AuthError("missing credentials: client_id")
        if self.settings.auth == "certificate":
            key_file, thumbprint = creds.get("private_key_file"), creds.get("thumbprint")
            if not key_file or not thumbprint:
                raise AuthError("missing credentials: private_key_file and thumbprint")
            try:
                key = Path(str(key_file)).read_text(encoding="utf-8")
            except OSError as exc:
                raise AuthError(f"cannot read private key file: {exc.strerror}") from None
            credential: Any = {"private_key": key, "thumbprint": str(thumbprint)}
        else:
            secret = creds.get("client_secret")
            if not isinstance(secret, Secret):
                raise AuthError("missing credentials: client_secret")
            credential = secret.reveal()
        extra: dict[str, Any] = {}
        if not self.settings.validate_authority:
            extra = {"instance_discovery": False, "validate_authority": False}
        try:
            return msal.ConfidentialClientApplication(
                str(client_id), client_credential=credential,
                authority=f"{self.settings.authority_host.rstrip('/')}/{self.settings.tenant_id}",
                http_client=self._http, **extra)
        except ValueError as exc:
            raise AuthError(f"msal refused the configuration: {exc}") from None

    def token(self) -> str:
        with self._build_lock:
            if self._app is None:
                self._app = self._build()
            app = self._app
        result = app.acquire_token_for_client(scopes=[self.scope])
        if "access_token" not in result:
            raise AuthError(
                f"token refused: {result.get('error')}: "
                f"{str(result.get('error_description', '')).splitlines()[0:1]}",
                code=result.get("error"))
        return str(result["access_token"])

    def invalidate(self) -> None:
        if self._app is not None:
            self._app.remove_tokens_for_client()
