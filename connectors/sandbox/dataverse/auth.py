"""The Microsoft identity platform as msal sees it: OpenID discovery and client credentials.

Rules kept:
- Only the configured tenant exists; only registered clients get a token, by client secret or by
  a certificate-signed client assertion (RS256, checked against the registered certificate).
- The scope must be `<sandbox base URL>/.default`, as Dataverse's resource is its org URL.
- Errors have AAD's shape: `error`, `error_description` ("AADSTSnnn: ..."), `error_codes`,
  `timestamp`, `trace_id`, `correlation_id`, `error_uri`.
- Tokens live `ttl` seconds on the sandbox clock; an expired or unknown token is a 401 carrying
  `WWW-Authenticate: Bearer authorization_uri=..., resource_id=...` as Dataverse sends it.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
import uuid
from collections.abc import Callable
from typing import Any

from werkzeug.wrappers import Request, Response

from .wire import AUTH_FAILED, DataverseError

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def _b64(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class Authority:
    """Issues and checks bearer tokens for one tenant."""

    def __init__(self, base_url: str, tenant: str, clients: dict[str, str],
                 certificates: dict[str, str], ttl: float, now: Callable[[], float]) -> None:
        self.base_url = base_url.rstrip("/")
        self.tenant = tenant
        self.clients = dict(clients)
        self.certificates = dict(certificates)
        self.ttl = ttl
        self._now = now
        self._tokens: dict[str, tuple[str, float]] = {}

    # --- the identity platform's endpoints -------------------------------------------------
    def openid_configuration(self) -> dict[str, Any]:
        root = f"{self.base_url}/{self.tenant}"
        return {
            "token_endpoint": f"{root}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt",
                                                      "client_secret_basic"],
            "jwks_uri": f"{self.base_url}/{self.tenant}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{self.base_url}/{self.tenant}/v2.0",
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": f"{self.base_url}/oidc/userinfo",
            "authorization_endpoint": f"{root}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{root}/oauth2/v2.0/devicecode",
            "http_logout_supported": True, "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{root}/oauth2/v2.0/logout",
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "tid", "ver"],
            "tenant_region_scope": "EU", "cloud_instance_name": "microsoftonline.com",
        }

    def aad_error(self, status: int, error: str, code: int, text: str) -> Response:
        trace = str(uuid.uuid4())
        body = {
            "error": error, "error_description": f"AADSTS{code}: {text} Trace ID: {trace} "
            f"Correlation ID: {trace} Timestamp: {self._stamp()}",
            "error_codes": [code], "timestamp": self._stamp(), "trace_id": trace,
            "correlation_id": trace, "error_uri": f"{self.base_url}/error?code={code}",
        }
        return Response(json.dumps(body), status=status, content_type="application/json")

    def _stamp(self) -> str:
        return dt.datetime.fromtimestamp(self._now(), dt.UTC).strftime(
            "%Y-%m-%d %H:%M:%SZ")

    def token(self, request: Request, tenant: str) -> Response:
        form = request.form
        if tenant != self.tenant:
            return self.aad_error(400, "invalid_request", 90002,
                                  f"Tenant '{tenant}' not found. Check to make sure you have the "
                                  "correct tenant ID and are signing into the correct cloud.")
        if form.get("grant_type") != "client_credentials":
            return self.aad_error(400, "unsupported_grant_type", 70003,
                                  "The app requested an unsupported grant type "
                                  f"'{form.get('grant_type')}'.")
        client_id = form.get("client_id", "")
        if client_id not in self.clients and client_id not in self.certificates:
            return self.aad_error(400, "unauthorized_client", 700016,
                                  f"Application with identifier '{client_id}' was not found in "
                                  f"the directory '{self.tenant}'.")
        failure = self._check_credential(form, client_id)
        if failure is not None:
            return failure
        scope = form.get("scope", "")
        scopes = scope.split()
        resource = f"{self.base_url}/.default"
        if not scopes or any(not s.endswith("/.default") for s in scopes):
            return self.aad_error(400, "invalid_scope", 1002012,
                                  f"The provided value for scope {scope} is not valid. Client "
                                  "credential flows must have a scope value with /.default "
                                  "suffixed to the resource identifier (application ID URI).")
        if any(s.rstrip("/") != resource and s != resource for s in scopes):
            return self.aad_error(400, "invalid_resource", 500011,
                                  f"The resource principal named {scopes[0][:-9]} was not found "
                                  f"in the tenant named {self.tenant}.")
        return Response(json.dumps(self.issue(client_id)), content_type="application/json")

    def _check_credential(self, form: Any, client_id: str) -> Response | None:
        if form.get("client_assertion_type") == ASSERTION_TYPE:
            if self._assertion_ok(form.get("client_assertion", ""), client_id):
                return None
            return self.aad_error(401, "invalid_client", 700027,
                                  "The certificate with identifier used to sign the client "
                                  "assertion is not registered on application, or the client "
                                  "assertion failed signature validation.")
        if self.clients.get(client_id) is not None and secrets.compare_digest(
                form.get("client_secret", ""), self.clients[client_id]):
            return None
        return self.aad_error(401, "invalid_client", 7000215,
                              "Invalid client secret provided. Ensure the secret being sent in "
                              "the request is the client secret value, not the client secret "
                              f"ID, for a secret added to app '{client_id}'.")

    def _assertion_ok(self, assertion: str, client_id: str) -> bool:
        pem = self.certificates.get(client_id)
        if not pem or not assertion:
            return False
        import jwt  # PyJWT[crypto]: a declared dependency, imported only when needed
        from cryptography import x509
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = x509.load_pem_x509_certificate(pem.encode()).public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            return False
        try:
            claims = jwt.decode(assertion, key, algorithms=["RS256", "PS256"],
                                audience=f"{self.base_url}/{self.tenant}/oauth2/v2.0/token",
                                options={"verify_exp": False})
        except jwt.PyJWTError:
            return False
        return (claims.get("iss") == client_id and claims.get("sub") == client_id
                and float(claims.get("exp", 0)) > self._now())

    def issue(self, client_id: str) -> dict[str, Any]:
        now = self._now()
        claims = {"aud": self.base_url, "iss": f"https://sts.windows.net/{self.tenant}/",
                  "iat": int(now), "nbf": int(now), "exp": int(now + self.ttl),
                  "appid": client_id, "tid": self.tenant, "ver": "1.0",
                  "oid": str(uuid.uuid5(uuid.NAMESPACE_URL, client_id))}
        token = ".".join((_b64({"typ": "JWT", "alg": "RS256", "x5t": "sandbox"}), _b64(claims),
                          secrets.token_urlsafe(32)))
        self._tokens[token] = (client_id, now + self.ttl)
        expires = max(1, int(self.ttl) - 1)  # AAD reports a one-hour token as 3599
        return {"token_type": "Bearer", "expires_in": expires, "ext_expires_in": expires,
                "access_token": token}

    # --- Dataverse's side of it ------------------------------------------------------------
    def check(self, request: Request) -> str:
        """The client id behind the request's bearer token, or a 401 DataverseError."""
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        entry = self._tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if entry is None or entry[1] <= self._now():
            raise self.unauthorized()
        return entry[0]

    def unauthorized(self) -> DataverseError:
        challenge = (f"Bearer authorization_uri={self.base_url}/{self.tenant}/oauth2/authorize, "
                     f"resource_id={self.base_url}/")
        return DataverseError(401, AUTH_FAILED, "The access token is missing, invalid or has "
                              "expired. Acquire a new token.", {"WWW-Authenticate": challenge})

    def expire_all(self) -> None:
        """Every issued token stops working now (the "expire_session" fault, or an admin)."""
        self._tokens.clear()
