"""Shared harness for the Dataverse sandbox tests (this module holds fixtures, no tests).

It serves the Dataverse side over real TLS with a throw-away CA (trustme) on an ephemeral
loopback port, so msal and requests talk to it exactly as to Dataverse, except for URLs.
When `connectors.sandbox.server.Sandbox` is available it is used instead of the local server.
Rules kept: every HTTP call has a timeout; the CA bundle given to the session wins over
REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE (see CRM_WIRE.md, "Trap"); each test starts from a reset side.
"""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import msal
import pytest
import requests
import trustme
from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wrappers import Request, Response

from connectors.sandbox.core import DropConnection, SandboxContext
from connectors.sandbox.dataverse.side import DataverseSide

TIMEOUT = (5, 30)
FIXTURES = Path(__file__).parent / "fixtures"
ACCOUNTS = 10_000


class PinnedSession(requests.Session):
    """A session whose own `verify` (the sandbox CA bundle) beats the environment's bundle."""

    def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any,
                                   cert: Any) -> dict[str, Any]:
        merged = super().merge_environment_settings(url, proxies, stream, verify, cert)
        merged["verify"] = self.verify if verify in (None, True) else verify
        return merged

    def request(self, method: str | bytes, url: str | bytes, *args: Any,  # type: ignore[override]
                **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", TIMEOUT)
        return super().request(method, url, *args, **kwargs)


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

    def session(self) -> PinnedSession:
        session = PinnedSession()
        session.verify = self.ca_bundle
        return session

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


class _LocalServer:
    """The stand-in for the sandbox server until connectors.sandbox.server lands."""

    def __init__(self, side_kwargs: dict[str, Any], ca: trustme.CA, tmp: Path) -> None:
        cert = ca.issue_cert("127.0.0.1", "localhost")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        cert.configure_cert(context)
        self.server: BaseWSGIServer = make_server("127.0.0.1", 0, self._app, threaded=True,
                                                  ssl_context=context)
        self.server.timeout = 1
        self.ctx = SandboxContext(f"https://127.0.0.1:{self.server.server_port}", seed=7)
        self.side = DataverseSide(self.ctx, **side_kwargs)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _app(self, environ: dict[str, Any], start_response: Any) -> Any:
        try:
            response = self.side.handle(Request(environ))
        except DropConnection:
            response = Response(b"", status=500)
        return response(environ, start_response)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture(scope="session")
def dataverse_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_LocalServer]:
    tmp = tmp_path_factory.mktemp("dataverse")
    ca = trustme.CA()
    bundle = tmp / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    server = _LocalServer({"accounts": ACCOUNTS}, ca, tmp)
    server.bundle = str(bundle)  # type: ignore[attr-defined]
    yield server
    server.close()


@pytest.fixture
def dv(dataverse_server: _LocalServer) -> Dataverse:
    """A freshly reset Dataverse side, with a bearer token from msal over verified TLS."""
    server = dataverse_server
    server.ctx.clock.reset()
    server.ctx.faults.clear()
    server.side.reset()
    server.ctx.counters.reset()
    harness = Dataverse(server.side, server.ctx, server.bundle)  # type: ignore[attr-defined]
    harness.info = server.side.admin("info", {})
    result = harness.msal_app().acquire_token_for_client(scopes=[harness.info["scope"]])
    assert "access_token" in result, result
    harness.token = result["access_token"]
    server.ctx.counters.reset()
    return harness


@pytest.fixture
def http(dv: Dataverse) -> Iterator[PinnedSession]:
    session = dv.session()
    yield session
    session.close()
