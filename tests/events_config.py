"""The configuration the CRM events tests share (``[connections.NAME.events]`` of one
Salesforce and one Dataverse connection), instead of a copy in each events test module.

``events_settings`` writes it to ``tmp_path``, sets the secrets' environment variables with
``monkeypatch`` and loads it. The CRM URLs never answer: the tests give the worker their own
connector, or only post events."""
from __future__ import annotations

from pathlib import Path

import pytest

from config.settings import Settings, load_settings

ORG = "00D5g000004XyZaEAK"
HMAC_SECRET = "s3cret-hmac"
DV_KEY = "dv-webhook-key"
HMAC_ENV, KEY_ENV = "LB_TEST_EVENTS_HMAC", "LB_TEST_EVENTS_DVKEY"


def events_config(*, organization_id: str = ORG, dataverse: str = "dv",
                  crm_url: str = "https://127.0.0.1:1") -> str:
    """A config of connection ``sf`` (Salesforce: outbound messages of ``organization_id``,
    JSON callouts signed with ``$LB_TEST_EVENTS_HMAC``) and connection ``dataverse``
    (webhooks with the key ``$LB_TEST_EVENTS_DVKEY``), the log provisioner."""
    return f"""
[provisioner]
kind = "log"
[connections.sf]
crm = "salesforce"
url = "{crm_url}"
[connections.sf.credentials]
client_id = "id"
client_secret = "env:NOPE"
[connections.sf.events]
organization_id = "{organization_id}"
hmac_secret = "env:{HMAC_ENV}"
[connections.{dataverse}]
crm = "dynamics"
url = "{crm_url}"
tenant_id = "t"
[connections.{dataverse}.credentials]
client_id = "id"
client_secret = "env:NOPE"
[connections.{dataverse}.events]
auth = "webhook_key"
key = "env:{KEY_ENV}"
"""


def events_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *,
                    organization_id: str = ORG, dataverse: str = "dv",
                    hmac_secret: str = HMAC_SECRET, dataverse_key: str = DV_KEY) -> Settings:
    """:func:`events_config` written, its secrets in the environment, loaded."""
    monkeypatch.setenv(HMAC_ENV, hmac_secret)
    monkeypatch.setenv(KEY_ENV, dataverse_key)
    cfg = tmp_path / "events.toml"
    cfg.write_text(events_config(organization_id=organization_id, dataverse=dataverse),
                   encoding="utf-8")
    return load_settings(cfg)
