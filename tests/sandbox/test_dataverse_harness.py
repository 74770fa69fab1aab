"""Shared harness for the Dataverse sandbox tests (this module holds fixtures, no tests).

Two `Sandbox`es (connectors.sandbox.server) per session, a small org (600 accounts: `dv`) and
one of 10,000 accounts for the paging tests (`dv_big`), serve the Dataverse side over real TLS
with a throw-away CA on an ephemeral loopback port, so msal and requests talk to it exactly as
to Dataverse, except for URLs. Rules kept: every HTTP call has a timeout; the session's CA bundle
wins over REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE (CRM_WIRE.md, "Trap"); each test starts from a
reset sandbox (rows, counters, faults, clock).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import msal
import requests

from connectors.sandbox.core import SandboxContext
from connectors.sandbox.dataverse.side import DataverseSide
from connectors.sandbox.server import Sandbox
from connectors.sandbox.tls import CABundleSession

TIMEOUT = (5, 30)
FIXTURES = Path(__file__).parent / "fixtures"
ACCOUNTS = 10_000
SMALL = 600


@dataclass
class Dataverse:
    side: DataverseSide
    ctx: SandboxContext
    ca_bundle: str
    info: dict[str, Any] = field(default_factory=dict)
    token: str = ""

    @property
    def api(self) -> str:
        return str(self.info["api_url"])

    def session(self) -> CABundleSession:
        return CABundleSession(self.ca_bundle, timeout=TIMEOUT)

    def msal_app(self, session: requests.Session | None = None,
                 credential: Any = None, client_id: str | None = None
                 ) -> msal.ConfidentialClientApplication:
        return msal.ConfidentialClientApplication(
            client_id or self.info["client_id"],
            client_credential=credential or self.info["client_secret"],
            authority=self.info["authority"], http_client=session or self.session(),
            instance_discovery=False, validate_authority=False)

    def headers(self, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "Accept": "application/json",
                "OData-MaxVersion": "4.0", "OData-Version": "4.0", **extra}

    def get(self, session: requests.Session, path: str, **headers: str) -> requests.Response:
        url = path if path.startswith("https://") else f"{self.api}/{path}"
        return session.get(url, headers=self.headers(**headers))


def load_json(text: str | bytes) -> Any:
    return json.loads(text, parse_float=Decimal)


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"), parse_float=Decimal)


def _kind(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, Decimal)):
        return "number"
    return {str: "string", list: "array", dict: "object"}.get(type(value), type(value).__name__)


def assert_shape(actual: Any, expected: Any, where: str = "$") -> None:
    """Same keys, and the same JSON type for every value (null matches any type)."""
    kinds = (_kind(actual), _kind(expected))
    if None in kinds:
        return
    assert kinds[0] == kinds[1], f"{where}: {actual!r} is a {kinds[0]}, expected a {kinds[1]}"
    if isinstance(expected, dict):
        assert set(actual) == set(expected), (
            f"{where}: missing {sorted(set(expected) - set(actual))}, "
            f"extra {sorted(set(actual) - set(expected))}")
        for key, value in expected.items():
            assert_shape(actual[key], value, f"{where}.{key}")
    elif isinstance(expected, list) and expected:
        for n, item in enumerate(actual):
            assert_shape(item, expected[min(n, len(expected) - 1)], f"{where}[{n}]")


def harness_for(sandbox: Sandbox) -> Dataverse:
    """Reset the sandbox, then get a bearer token from msal over verified TLS."""
    sandbox.reset()
    if sandbox.context is None or sandbox.dataverse is None:
        raise RuntimeError("the sandbox does not serve Dataverse")
    harness = Dataverse(sandbox.dataverse, sandbox.context, sandbox.ca_bundle)
    harness.info = sandbox.dataverse.admin("info", {})
    result = harness.msal_app().acquire_token_for_client(scopes=[harness.info["scope"]])
    assert "access_token" in result, result
    harness.token = result["access_token"]
    sandbox.counters.reset()
    return harness
