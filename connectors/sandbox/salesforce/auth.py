"""OAuth 2.0 token endpoint and session tokens, as Salesforce answers them.

Rules this module keeps:
- Grants: client_credentials (client id + secret, in the form or HTTP Basic), password
  (username + password [+ security token], client id + secret) and
  urn:ietf:params:oauth:grant-type:jwt-bearer (iss = client id, sub = username, aud = a login
  host or the sandbox URL, exp in the future by the sandbox clock; RS256 signature checked when a
  public key is configured).
- Answers `{"access_token", "instance_url", "id", "token_type": "Bearer", "issued_at",
  "signature", "scope"}`; no refresh token. Errors are 400 `{"error", "error_description"}`.
- A token lives `ttl` seconds of sandbox-clock time; an expired, revoked or unknown token is
  refused by `valid` (the side answers 401 INVALID_SESSION_ID). Tokens are never logged.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass

import jwt
from werkzeug.wrappers import Request, Response

from ..core import SandboxClock
from .ids import INTEGRATION_USER, make_id
from .wire import json_response, oauth_error

JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ORG_ID = make_id("00D", 1)
USER_ID = INTEGRATION_USER


@dataclass
class Credentials:
    """What the sandbox org accepts (test values, printed by `serve_forever`)."""

    client_id: str = "ledgerbridge-sandbox-client"
    client_secret: str = "ledgerbridge-sandbox-secret"
    username: str = "integration@ledgerbridge.sandbox"
    password: str = "sandbox-password"
    security_token: str = "SANDBOXTOKEN"
    jwt_public_key: str | None = None  # PEM; when None, JWT claims are checked but not signatures


class Tokens:
    """Issued access tokens and their expiry (sandbox-clock time)."""

    def __init__(self, clock: SandboxClock, ttl: Callable[[], float]) -> None:
        self._clock = clock
        self._ttl = ttl
        self._lock = threading.Lock()
        self._expiry: dict[str, dt.datetime] = {}

    def issue(self) -> str:
        token = f"{ORG_ID[:15]}!AQ{secrets.token_urlsafe(48)}"
        with self._lock:
            self._expiry[token] = self._clock.now() + dt.timedelta(seconds=self._ttl())
        return token

    def valid(self, token: str | None) -> bool:
        with self._lock:
            expiry = self._expiry.get(token or "")
        return expiry is not None and self._clock.now() < expiry

    def revoke(self, token: str | None = None) -> None:
        """Invalidate one token, or every token when `token` is None."""
        with self._lock:
            if token is None:
                self._expiry.clear()
            else:
                self._expiry.pop(token, None)


class TokenEndpoint:
    def __init__(self, creds: Credentials, tokens: Tokens, clock: SandboxClock,
                 base_url: str) -> None:
        self.creds = creds
        self.tokens = tokens
        self.clock = clock
        self.base_url = base_url

    def handle(self, request: Request) -> Response:
        if request.method != "POST":
            return oauth_error("invalid_request", "must use HTTP POST")
        form = request.form
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        if request.authorization and request.authorization.type == "basic":
            client_id = client_id or request.authorization.username
            client_secret = client_secret or request.authorization.password
        grant = form.get("grant_type", "")
        if grant == "client_credentials":
            error = self._client(client_id, client_secret)
        elif grant == "password":
            error = self._client(client_id, client_secret) or self._password(
                form.get("username", ""), form.get("password", ""))
        elif grant == JWT_GRANT:
            error = self._jwt(form.get("assertion", ""))
        else:
            return oauth_error("unsupported_grant_type", "grant type not supported")
        return error or self._answer()

    def _client(self, client_id: str | None, secret: str | None) -> Response | None:
        if client_id != self.creds.client_id:
            return oauth_error("invalid_client_id", "client identifier invalid")
        if not secret or not hmac.compare_digest(secret, self.creds.client_secret):
            return oauth_error("invalid_client", "invalid client credentials")
        return None

    def _password(self, username: str, password: str) -> Response | None:
        accepted = (self.creds.password, self.creds.password + self.creds.security_token)
        if username != self.creds.username or password not in accepted:
            return oauth_error("invalid_grant", "authentication failure")
        return None

    def _jwt(self, assertion: str) -> Response | None:
        key = self.creds.jwt_public_key
        try:
            if key:
                claims = jwt.decode(assertion, key, algorithms=["RS256"],
                                    options={"verify_exp": False, "verify_aud": False})
            else:
                claims = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            return oauth_error("invalid_grant", f"invalid assertion: {type(exc).__name__}")
        audiences = {"https://login.salesforce.com", "https://test.salesforce.com", self.base_url}
        aud = claims.get("aud")
        aud_ok = aud in audiences if isinstance(aud, str) else bool(set(aud or ()) & audiences)
        if claims.get("iss") != self.creds.client_id:
            return oauth_error("invalid_client_id", "client identifier invalid")
        if claims.get("sub") != self.creds.username:
            return oauth_error("invalid_grant", "user hasn't approved this consumer")
        if not aud_ok:
            return oauth_error("invalid_grant", "audience is invalid")
        exp = claims.get("exp")
        if not isinstance(exp, (int, float)) or exp <= self.clock.now().timestamp():
            return oauth_error("invalid_grant", "expired authorization code")
        return None

    def _answer(self) -> Response:
        token = self.tokens.issue()
        identity = f"{self.base_url}/id/{ORG_ID}/{USER_ID}"
        issued_at = str(int(self.clock.now().timestamp() * 1000))
        digest = hmac.new(self.creds.client_secret.encode(), (identity + issued_at).encode(),
                          hashlib.sha256).digest()
        return json_response({
            "access_token": token, "instance_url": self.base_url, "id": identity,
            "token_type": "Bearer", "issued_at": issued_at,
            "signature": base64.b64encode(digest).decode(), "scope": "api",
        })
