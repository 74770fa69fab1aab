"""OAuth grants, session expiry, and the org's API allowance."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import jwt
import pytest
from conftest import sf_json
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceExpiredSession

from connectors.sandbox.server import Sandbox


def _token(sf_http: Any, **form: str) -> Any:
    return sf_http.session.post(f"{sf_http.sandbox.url}/services/oauth2/token", data=form)


def _creds(sfbox: Sandbox) -> Any:
    assert sfbox.salesforce is not None
    return sfbox.salesforce.credentials


def test_client_credentials_and_password_grants(sf_http: Any, sfbox: Sandbox) -> None:
    creds = _creds(sfbox)
    answer = _token(sf_http, grant_type="client_credentials", client_id=creds.client_id,
                    client_secret=creds.client_secret)
    body = sf_json(answer)
    assert answer.status_code == 200 and body["token_type"] == "Bearer"
    assert body["instance_url"] == sfbox.url and "refresh_token" not in body
    sf = Salesforce(instance_url=body["instance_url"], session_id=body["access_token"],
                    session=sfbox.session())
    assert sf.query("SELECT COUNT() FROM Product2")["totalSize"] == 12
    password = _token(sf_http, grant_type="password", client_id=creds.client_id,
                      client_secret=creds.client_secret, username=creds.username,
                      password=creds.password + creds.security_token)
    assert password.status_code == 200


@pytest.mark.parametrize("form, error", [
    ({"grant_type": "client_credentials", "client_id": "nope", "client_secret": "x"},
     "invalid_client_id"),
    ({"grant_type": "client_credentials", "client_secret": "wrong"}, "invalid_client"),
    ({"grant_type": "password", "username": "integration@ledgerbridge.sandbox",
      "password": "wrong"}, "invalid_grant"),
    ({"grant_type": "authorization_code"}, "unsupported_grant_type"),
])
def test_token_errors(sf_http: Any, sfbox: Sandbox, form: dict, error: str) -> None:
    creds = _creds(sfbox)
    form = {"client_id": creds.client_id, "client_secret": creds.client_secret, **form}
    answer = _token(sf_http, **form)
    assert answer.status_code == 400
    assert set(sf_json(answer)) == {"error", "error_description"}
    assert sf_json(answer)["error"] == error


def test_jwt_bearer_claims_and_signature(sf_http: Any, sfbox: Sandbox) -> None:
    creds = _creds(sfbox)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    creds.jwt_public_key = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    try:
        def assertion(signer: Any = key, **claims: Any) -> str:
            base = {"iss": creds.client_id, "sub": creds.username,
                    "aud": "https://login.salesforce.com", "exp": int(time.time()) + 180}
            return jwt.encode({**base, **claims}, signer, algorithm="RS256")

        def grant(token: str) -> Any:
            return _token(sf_http, grant_type="urn:ietf:params:oauth:grant-type:jwt-bearer",
                          assertion=token)

        assert grant(assertion()).status_code == 200
        assert sf_json(grant(assertion(signer=other)))["error"] == "invalid_grant"
        assert sf_json(grant(assertion(exp=int(time.time()) - 10)))["error"] == "invalid_grant"
        assert sf_json(grant(assertion(aud="https://evil.example")))["error"] == "invalid_grant"
        assert sf_json(grant(assertion(sub="someone@else")))["error"] == "invalid_grant"
        assert sf_json(grant(assertion(iss="other-client")))["error"] == "invalid_client_id"
    finally:
        creds.jwt_public_key = None


def test_token_expiry_gives_invalid_session_id(sf: Any, sf_http: Any, sfbox: Sandbox) -> None:
    sf.query("SELECT Id FROM Account LIMIT 1")
    sfbox.clock.advance(sfbox.token_ttl + 1)
    with pytest.raises(SalesforceExpiredSession):
        sf.query("SELECT Id FROM Account LIMIT 1")
    expired = sf_http.query("SELECT Id FROM Account LIMIT 1")
    assert expired.status_code == 401
    assert sf_json(expired) == [{"message": "Session expired or invalid",
                                 "errorCode": "INVALID_SESSION_ID"}]
    unknown = sf_http.query("SELECT Id FROM Account LIMIT 1", token="forged")
    assert unknown.status_code == 401 and "Sforce-Limit-Info" in unknown.headers


def test_api_allowance_header_and_limit_exceeded(sf: Any, sf_http: Any, sfbox: Sandbox) -> None:
    assert sfbox.salesforce is not None
    sfbox.salesforce.admin("set_api_usage", {"used": 98, "limit": 100})
    first = sf_http.query("SELECT Id FROM Account LIMIT 1")
    assert first.headers["Sforce-Limit-Info"] == "api-usage=99/100"
    sf.query("SELECT Id FROM Account LIMIT 1")
    assert sf.api_usage["api-usage"].used == 100 and sf.api_usage["api-usage"].total == 100
    refused = sf_http.query("SELECT Id FROM Account LIMIT 1")
    assert refused.status_code == 403
    assert sf_json(refused)[0]["errorCode"] == "REQUEST_LIMIT_EXCEEDED"
    assert refused.headers["Sforce-Limit-Info"] == "api-usage=100/100"
    limits = sf_http.call("GET", "/limits")
    assert limits.status_code == 403
    sfbox.salesforce.admin("set_api_usage", {"used": 0})
    assert sf_json(sf_http.call("GET", "/limits"))["DailyApiRequests"] == {"Max": 100,
                                                                          "Remaining": 99}


def test_ttl_is_configurable(sfbox: Sandbox) -> None:
    side = sfbox.salesforce
    assert side is not None
    side.token_ttl = 5
    try:
        token = side.issue_token()
        assert side.tokens.valid(token)
        sfbox.clock.advance(6)
        assert not side.tokens.valid(token)
    finally:
        side.token_ttl = None
    assert dt.timedelta(seconds=sfbox.token_ttl) == dt.timedelta(hours=1)
