"""Connector rules that read the user's files: field-map overrides, the secrets file, a
certificate's private key (each written to a temporary directory)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import responses
from conn_support import ENV, NOW, d365_settings
from fake_dv import FakeDataverse, guid

from connectors import fieldmap
from connectors.credentials import CredentialError, resolve
from connectors.registry import build_connector


@pytest.fixture
def fake() -> Any:
    dv = FakeDataverse()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        dv.register(rsps)
        yield dv


def connector(**over: Any) -> Any:
    return build_connector(d365_settings(**over), sleep=lambda s: None, clock=lambda: NOW,
                           environ=ENV)


def test_user_map_overrides_one_entry_and_keeps_the_rest(tmp_path: Path) -> None:
    mine = tmp_path / "mine.toml"
    mine.write_text('[objects.account.fields]\ncredit_limit = { field = "Kreditlimit__c", '
                    'type = "decimal" }\n[objects.quote]\naccepted_states = ["Accepted", "Won"]\n')
    fmap = fieldmap.load("salesforce", str(mine))
    account = fmap.object("account")
    assert account.fields["credit_limit"].crm == "Kreditlimit__c"
    assert account.fields["credit_hold"].crm == "Credit_Hold__c"
    assert fmap.object("quote").accepted_states == {"Accepted", "Won"}
    assert fmap.object("quote").crm_object == "Quote"


def test_credentials_from_env_and_secrets_file(tmp_path: Path) -> None:
    path = tmp_path / "secrets.toml"
    path.write_text('client_secret = "top"\n[conn]\npassword = "scoped"\n')
    got = resolve("conn", {"client_id": "id", "client_secret": "file:client_secret",
                           "password": "file:password", "security_token": "env:TOK"},
                  str(path), {"TOK": "tok"})
    assert got["client_id"] == "id"
    assert [got[k].reveal() for k in ("client_secret", "password", "security_token")] == [
        "top", "scoped", "tok"]
    with pytest.raises(CredentialError, match=r"MISSING \(for password\) is not set"):
        resolve("conn", {"password": "env:MISSING"}, None, {})


def test_certificate_credential_signs_a_client_assertion(fake: FakeDataverse,
                                                          tmp_path: Any) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path / "d365.pem"
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    conn = connector(auth="certificate", credentials={
        "client_id": "cid", "private_key_file": str(pem), "thumbprint": "AB" * 20})
    fake.put("accounts", 1, (NOW - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ"))
    assert conn.read_one("account", guid(1)) is not None
    assert fake.token_bodies and "client_assertion=" in fake.token_bodies[0]
    assert "client_secret" not in fake.token_bodies[0]
