"""Identity platform + bearer checks, driven by msal and requests over verified TLS."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from test_dataverse_harness import Dataverse, assert_shape, fixture, load_json


def test_msal_gets_a_token_then_serves_it_from_its_cache(dv: Dataverse) -> None:
    session = dv.session()
    app = dv.msal_app(session)
    first = app.acquire_token_for_client(scopes=[dv.info["scope"]])
    second = app.acquire_token_for_client(scopes=[dv.info["scope"]])
    assert first["token_source"] == "identity_provider"
    assert second["token_source"] == "cache"
    assert second["access_token"] == first["access_token"]
    assert dv.ctx.counters.get("dataverse", "token", "POST") == 1
    assert dv.ctx.counters.get("dataverse", "openid-configuration", "GET") == 1


def test_token_answer_has_aad_shape(dv: Dataverse, dv_http: requests.Session) -> None:
    url = f"{dv.info['authority']}/oauth2/v2.0/token"
    resp = dv_http.post(url, data={"grant_type": "client_credentials",
                                "client_id": dv.info["client_id"],
                                "client_secret": dv.info["client_secret"],
                                "scope": dv.info["scope"]})
    assert resp.status_code == 200
    assert_shape(load_json(resp.text), fixture("dataverse_answers.json")["token"])
    assert load_json(resp.text)["expires_in"] == 3599


def test_discovery_document_names_the_endpoints(dv: Dataverse, dv_http: requests.Session) -> None:
    body = dv_http.get(f"{dv.info['authority']}/v2.0/.well-known/openid-configuration").json()
    assert body["token_endpoint"] == f"{dv.info['authority']}/oauth2/v2.0/token"
    assert body["authorization_endpoint"].startswith(dv.info["authority"])
    assert body["issuer"].startswith(dv.info["authority"])


@pytest.mark.parametrize(("form", "status", "error", "code"), [
    ({"client_secret": "wrong"}, 401, "invalid_client", 7000215),
    ({"client_id": "00000000-0000-0000-0000-000000000001"}, 400, "unauthorized_client", 700016),
    ({"scope": "https://org.crm.dynamics.com/.default"}, 400, "invalid_resource", 500011),
    ({"scope": "user.read"}, 400, "invalid_scope", 1002012),
    ({"grant_type": "password"}, 400, "unsupported_grant_type", 70003),
])
def test_token_errors_have_aad_shape(dv: Dataverse, dv_http: requests.Session, form: dict[str, str],
                                     status: int, error: str, code: int) -> None:
    data = {"grant_type": "client_credentials", "client_id": dv.info["client_id"],
            "client_secret": dv.info["client_secret"], "scope": dv.info["scope"], **form}
    resp = dv_http.post(f"{dv.info['authority']}/oauth2/v2.0/token", data=data)
    assert resp.status_code == status
    body = load_json(resp.text)
    assert_shape(body, fixture("dataverse_answers.json")["aad_error"])
    assert body["error"] == error and body["error_codes"] == [code]
    assert body["error_description"].startswith(f"AADSTS{code}: ")


def test_msal_reports_a_wrong_secret(dv: Dataverse) -> None:
    result = dv.msal_app(credential="not-the-secret").acquire_token_for_client(
        scopes=[dv.info["scope"]])
    assert result["error"] == "invalid_client"
    assert 7000215 in result["error_codes"]


def test_unknown_tenant_is_refused(dv: Dataverse, dv_http: requests.Session) -> None:
    resp = dv_http.get(dv.info["authority"].rsplit("/", 1)[0]
                    + "/not-my-tenant/v2.0/.well-known/openid-configuration")
    assert resp.status_code == 400
    assert resp.json()["error_codes"] == [90002]


def _certificate() -> tuple[str, str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ledgerbridge-test")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30)).sign(key, hashes.SHA256()))
    pem_key = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    pem_cert = cert.public_bytes(serialization.Encoding.PEM).decode()
    thumbprint = hashlib.sha1(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    return pem_key, pem_cert, thumbprint


def test_certificate_assertion_is_accepted_and_a_wrong_key_refused(dv: Dataverse) -> None:
    key, cert, thumbprint = _certificate()
    other_key, _other_cert, _t = _certificate()
    dv.side.admin("add_client", {"client_id": "cert-client", "certificate": cert})
    good = dv.msal_app(credential={"private_key": key, "thumbprint": thumbprint},
                       client_id="cert-client").acquire_token_for_client(
        scopes=[dv.info["scope"]])
    assert "access_token" in good, good
    bad = dv.msal_app(credential={"private_key": other_key, "thumbprint": thumbprint},
                      client_id="cert-client").acquire_token_for_client(
        scopes=[dv.info["scope"]])
    assert bad["error"] == "invalid_client" and 700027 in bad["error_codes"]


def test_expired_token_answers_401_with_challenge(dv: Dataverse, dv_http: requests.Session) -> None:
    assert dv.get(dv_http, "WhoAmI").status_code == 200
    dv.ctx.clock.advance(3601)
    resp = dv.get(dv_http, "WhoAmI")
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"].startswith(
        f"Bearer authorization_uri={dv.info['authority']}/oauth2/authorize")
    assert_shape(load_json(resp.text), fixture("dataverse_answers.json")["error"])


def test_missing_token_answers_401(dv: Dataverse, dv_http: requests.Session) -> None:
    resp = dv_http.get(f"{dv.api}/accounts")
    assert resp.status_code == 401
    assert dv.ctx.counters.get("dataverse", "accounts", "GET") == 1


def test_expire_session_fault_forces_a_new_token(dv: Dataverse, dv_http: requests.Session) -> None:
    dv.ctx.faults.add("dataverse", "accounts", "expire_session", count=1)
    assert dv.get(dv_http, "accounts?$top=1").status_code == 401
    assert dv.get(dv_http, "accounts?$top=1").status_code == 401  # the old token stays dead
    fresh = dv.msal_app().acquire_token_for_client(scopes=[dv.info["scope"]])
    dv.token = fresh["access_token"]
    assert dv.get(dv_http, "accounts?$top=1").status_code == 200


def test_whoami_shape(dv: Dataverse, dv_http: requests.Session) -> None:
    resp = dv.get(dv_http, "WhoAmI")
    assert resp.status_code == 200
    assert_shape(load_json(resp.text), fixture("dataverse_answers.json")["whoami"])


def test_ca_bundle_env_vars_do_not_override_the_sandbox_ca(
        dv: Dataverse, monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    # The trap from CRM_WIRE.md: requests lets these variables beat Session.verify.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    monkeypatch.setenv("CURL_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    plain = requests.Session()
    plain.verify = dv.ca_bundle
    with pytest.raises(requests.exceptions.SSLError):
        plain.get(f"{dv.api}/WhoAmI", timeout=5)
    pinned = dv.session()
    result = dv.msal_app(pinned).acquire_token_for_client(scopes=[dv.info["scope"]])
    assert "access_token" in result
    resp = pinned.get(f"{dv.api}/WhoAmI",
                      headers={"Authorization": f"Bearer {result['access_token']}"})
    assert resp.status_code == 200


def test_token_is_a_jwt_for_the_org(dv: Dataverse) -> None:
    payload = dv.token.split(".")[1]
    claims = load_json(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["aud"] == dv.info["scope"].removesuffix("/.default")
    assert claims["tid"] == dv.info["tenant"] and claims["appid"] == dv.info["client_id"]
