"""Salesforce login through simple-salesforce, against the configured My Domain URL.

Methods (settings.auth): `client_credentials` (credentials client_id + client_secret; needs a My
Domain host), `jwt` (client_id + username + private_key_file, optional `audience`, default
https://login.salesforce.com; `test` sandboxes set https://test.salesforce.com), `password`
(username + password + security_token: the OAuth password grant when client_id and
client_secret are also given, else SOAP `login()`).

Rules kept here: every login goes through the connection's `Transport` (timeouts, CA bundle,
retries); the token URL is built from `settings.url` (simple-salesforce's own helpers assume a
`*.salesforce.com` host, so we call its `token_login` / SOAP login with a full URL); a refused
login is an `AuthError` carrying Salesforce's error code, never the secret; secrets are revealed
only inside the request being made. A `private_key_file` that cannot be read or is not an RSA
private key refuses the login naming the file, before any request.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import jwt
from simple_salesforce.api import Salesforce
from simple_salesforce.exceptions import SalesforceAuthenticationFailed
from simple_salesforce.login import SalesforceLogin, token_login

from connectors.base import AuthError, FatalError
from connectors.credentials import Secret
from connectors.settings import ConnectionSettings
from connectors.transport import Transport


@dataclass(frozen=True)
class SalesforceSession:
    session_id: Secret
    instance: str  # host[:port]

    def client(self, settings: ConnectionSettings, transport: Transport) -> Salesforce:
        return Salesforce(
            instance_url=f"https://{self.instance}",
            session_id=self.session_id.reveal(),
            session=transport,
            version=settings.api_version,
            parse_float=Decimal,
            object_pairs_hook=None,   # plain dicts, built by the C parser (a hook runs per object)
        )


class LoginRefused(AuthError):
    """The login itself was refused: logging in again will not help."""


def _need(creds: dict[str, Any], *keys: str) -> list[Any]:
    missing = [k for k in keys if not creds.get(k)]
    if missing:
        raise LoginRefused(f"missing credentials: {', '.join(missing)}")
    return [creds[k] for k in keys]


def _reveal(value: Any) -> str:
    return value.reveal() if isinstance(value, Secret) else str(value)


def _signed(claims: dict[str, Any], key_file: Any) -> str:
    """The JWT bearer assertion, signed RS256 with the key in ``key_file``; a file that is not
    an RSA private key (PEM) refuses the login naming it (``OSError``: it cannot be read)."""
    key = Path(key_file).read_bytes()
    try:
        return jwt.encode(claims, key, algorithm="RS256")
    except (jwt.PyJWTError, ValueError, TypeError):
        raise LoginRefused(f"private_key_file={key_file}: is not an RSA private key (PEM)",
                           code="invalid_private_key") from None


def login(settings: ConnectionSettings, creds: dict[str, Any], transport: Transport
          ) -> SalesforceSession:
    token_url = f"{settings.url}/services/oauth2/token"
    try:
        if settings.auth == "client_credentials":
            client_id, secret = _need(creds, "client_id", "client_secret")
            basic = base64.b64encode(f"{client_id}:{_reveal(secret)}".encode()).decode()
            token, instance = token_login(
                token_url, {"grant_type": "client_credentials"}, "", str(client_id),
                {"Authorization": f"Basic {basic}"}, None, transport)
        elif settings.auth == "jwt":
            client_id, username, key_file = _need(creds, "client_id", "username",
                                                  "private_key_file")
            claims = {"iss": client_id, "sub": username,
                      "aud": creds.get("audience", "https://login.salesforce.com"),
                      "exp": int(time.time()) + 180}
            assertion = _signed(claims, key_file)
            token, instance = token_login(
                token_url,
                {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                 "assertion": assertion},
                "", str(client_id), None, None, transport)
        elif creds.get("client_id") and creds.get("client_secret"):  # OAuth password grant
            username, password, security, client_id, secret = _need(
                creds, "username", "password", "security_token", "client_id", "client_secret")
            token, instance = token_login(
                token_url,
                {"grant_type": "password", "client_id": str(client_id),
                 "client_secret": _reveal(secret), "username": str(username),
                 "password": _reveal(password) + _reveal(security)},
                "", str(client_id), None, None, transport)
        else:  # SOAP login()
            username, password, security = _need(creds, "username", "password",
                                                 "security_token")
            token, instance = SalesforceLogin(
                username=username, password=_reveal(password),
                security_token=_reveal(security), sf_version=settings.api_version,
                session=transport, scratch_url=settings.url)
    except SalesforceAuthenticationFailed as exc:
        raise LoginRefused(f"Salesforce login refused: {exc.code}: {exc.message}",
                           code=str(exc.code)) from None
    except FatalError as exc:
        raise LoginRefused(f"Salesforce login refused: {exc.message}", code=exc.code,
                           status=exc.status) from None
    except OSError as exc:
        raise LoginRefused(f"cannot read private key file: {exc.strerror}") from None
    return SalesforceSession(Secret(str(token)), str(instance))
