"""Both connectors against injected sandbox faults over real HTTPS: 429 with Retry-After, 503,
dropped connections, expired sessions, Salesforce's two REQUEST_LIMIT_EXCEEDED meanings; and
the other Salesforce login methods."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from connectors.base import AuthError, BudgetExhausted
from connectors.registry import build_connector
from connectors.settings import parse_connection
from jobs.cli import exits
from sync.engine import SyncOptions, run_cycle
from sync.states import OutboxState
from sync.tables import outbox

sandbox_server = pytest.importorskip("connectors.sandbox.server",
                                     reason="sandbox CRM (connectors/sandbox) not available")


class Sleeper:
    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture(scope="module")
def sandbox() -> Any:
    with sandbox_server.Sandbox(accounts=30) as sbx:
        yield sbx


@pytest.fixture(autouse=True)
def _clean(sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/nonexistent/elsewhere.pem")
    sandbox.reset()


def salesforce(sandbox: Any, sleeper: Sleeper, auth: str = "client_credentials",
               **creds: Any) -> Any:
    c = sandbox.salesforce.credentials
    settings = parse_connection("sf", {
        "crm": "salesforce", "url": sandbox.url, "auth": auth, "ca_bundle": sandbox.ca_bundle,
        "max_attempts": 4,
        "credentials": creds or {"client_id": c.client_id, "client_secret": "env:S"}})
    env = {"S": c.client_secret, "P": c.password, "T": c.security_token}
    return build_connector(settings, sleep=sleeper, environ=env)


def dataverse(sandbox: Any, sleeper: Sleeper) -> Any:
    dv = sandbox.dataverse
    settings = parse_connection("dv", {
        "crm": "dynamics", "url": sandbox.url, "tenant_id": dv.tenant,
        "authority_host": sandbox.url, "validate_authority": False,
        "ca_bundle": sandbox.ca_bundle, "max_attempts": 4,
        "credentials": {"client_id": dv.client_id, "client_secret": "env:S"}})
    return build_connector(settings, sleep=sleeper, environ={"S": dv.client_secret})


def count(pages: Any) -> int:
    return sum(len(p.records) for p in pages)


def test_sf_503_and_dropped_connections_are_retried(sandbox: Any) -> None:
    sleeper = Sleeper()
    sandbox.faults.add("salesforce", "query*", "503", count=1)
    sandbox.faults.add("salesforce", "query*", "drop", count=1)
    assert count(salesforce(sandbox, sleeper).read_changes("account", None)) == 30
    assert len(sleeper.calls) == 2


def test_sf_429_retry_after_is_honoured(sandbox: Any) -> None:
    sleeper = Sleeper()
    sandbox.faults.add("salesforce", "query*", "429", count=1, retry_after=4)
    assert count(salesforce(sandbox, sleeper).read_changes("account", None)) == 30
    assert sleeper.calls == [4.0]


def test_sf_concurrent_request_limit_is_retried_with_backoff(sandbox: Any) -> None:
    """403 REQUEST_LIMIT_EXCEEDED "ConcurrentRequests ...": transient, not the daily budget."""
    sleeper = Sleeper()
    sandbox.faults.add("salesforce", "query*", "concurrent_limit", count=1)
    assert count(salesforce(sandbox, sleeper).read_changes("account", None)) == 30
    assert len(sleeper.calls) == 1 and sleeper.calls[0] > 0


def test_sf_total_requests_limit_stops_the_read_at_once(sandbox: Any) -> None:
    sleeper = Sleeper()
    sandbox.salesforce.admin("set_api_usage", {"used": 1000, "limit": 1000})
    with pytest.raises(BudgetExhausted, match="TotalRequests"):
        list(salesforce(sandbox, sleeper).read_changes("account", None))
    assert sleeper.calls == []
    assert sandbox.counters.get("salesforce", "query") == 1  # never retried


def test_sf_total_requests_limit_stops_the_run_with_the_budget_outcome(
        sandbox: Any, engine: Engine) -> None:
    sleeper = Sleeper()
    sandbox.salesforce.admin("set_api_usage", {"used": 1000, "limit": 1000})
    report = run_cycle(engine, salesforce(sandbox, sleeper), SyncOptions(push=False))
    assert report.outcome == "stopped: API budget" and "TotalRequests" in str(report.error)
    assert sleeper.calls == []
    assert sandbox.counters.get("salesforce", "query") + sandbox.counters.get(
        "salesforce", "queryAll") <= 1


def test_sf_one_concurrent_limit_does_not_stop_the_run(sandbox: Any, engine: Engine) -> None:
    sleeper = Sleeper()
    sandbox.faults.add("salesforce", "query*", "concurrent_limit", count=1)
    report = run_cycle(engine, salesforce(sandbox, sleeper), SyncOptions(push=False))
    assert not report.outcome.startswith(("stopped", "failed")), report
    assert report.objects["account"].read == 30 and len(sleeper.calls) == 1


def test_sf_expired_session_relogs_in_once(sandbox: Any) -> None:
    sleeper = Sleeper()
    conn = salesforce(sandbox, sleeper)
    assert conn.read_one("account", "001000000000000AAA") is None  # logs in
    sandbox.faults.add("salesforce", "query*", "expire_session", count=1)
    assert count(conn.read_changes("account", None)) == 30
    assert sandbox.counters.get("salesforce", "token") == 2


def test_sf_password_login(sandbox: Any) -> None:
    c = sandbox.salesforce.credentials
    conn = salesforce(sandbox, Sleeper(), "password", username=c.username, password="env:P",
                      security_token="env:T", client_id=c.client_id, client_secret="env:S")
    assert count(conn.read_changes("account", None)) == 30


def test_sf_jwt_login(sandbox: Any, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_file = tmp_path / "jwt.key"
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    c = sandbox.salesforce.credentials
    conn = salesforce(sandbox, Sleeper(), "jwt", client_id=c.client_id, username=c.username,
                      private_key_file=str(key_file), audience=sandbox.url)
    assert count(conn.read_changes("account", None)) == 30


def test_sf_wrong_secret_is_an_auth_error(sandbox: Any) -> None:
    conn = salesforce(sandbox, Sleeper(), client_id="nope", client_secret="env:S")
    with pytest.raises(AuthError, match="login refused"):
        list(conn.read_changes("account", None))
    assert sandbox.counters.get("salesforce", "token") == 1  # a refused login is not retried


def test_dv_429_and_503_are_retried(sandbox: Any) -> None:
    sleeper = Sleeper()
    sandbox.faults.add("dataverse", "accounts", "429", count=1, retry_after=3)
    sandbox.faults.add("dataverse", "accounts", "503", count=1)
    assert count(dataverse(sandbox, sleeper).read_changes("account", None)) == 30
    assert sleeper.calls[0] == 3.0 and len(sleeper.calls) == 2


def test_dv_expired_token_is_refreshed_once(sandbox: Any) -> None:
    conn = dataverse(sandbox, Sleeper())
    assert count(conn.read_changes("account", None)) == 30
    sandbox.faults.add("dataverse", "accounts", "expire_session", count=1)
    assert count(conn.read_changes("account", None)) == 30
    assert sandbox.counters.get("dataverse", "token") == 2


@pytest.mark.parametrize("crm", ["salesforce", "dataverse"])
def test_a_whole_sync_through_faults_reads_what_a_clean_one_reads_with_its_calls_counted(
        sandbox: Any, engine: Engine, crm: str) -> None:
    """Quote lines and accounts are read side by side over one connection: retries, a
    dropped connection and an expired session on both readers still read every record once,
    and the objects' call counts add up to the meter's."""
    build = salesforce if crm == "salesforce" else dataverse
    if crm == "salesforce":     # one query per object: products, prices, quotes pass first
        sandbox.faults.add(crm, "query*", "slow", count=3, delay=0.01)
        for kind in ("expire_session", "503", "drop", "429"):
            sandbox.faults.add(crm, "query*", kind, count=1, retry_after=1)
    else:
        for entity_set, kinds in (("accounts", ("expire_session", "503")),
                                  ("quotedetails", ("expire_session", "429", "drop"))):
            for kind in kinds:
                sandbox.faults.add(crm, entity_set, kind, count=1, retry_after=1)
    conn = build(sandbox, Sleeper())
    report = run_cycle(engine, conn, SyncOptions(push=False))
    assert report.outcome == "ok", report.error
    assert [r["remaining"] for r in sandbox.faults.as_json()] == [0] * len(
        sandbox.faults.as_json())                           # every fault was met
    assert sum(s.api_calls for s in report.objects.values()) == conn.api_budget().calls
    clean = run_cycle(engine, build(sandbox, Sleeper()), SyncOptions(push=False, full=True))
    assert clean.outcome == "ok"
    assert {o: s.read for o, s in report.objects.items()} == {
        o: s.read for o, s in clean.objects.items()}
    assert report.objects["account"].read == 30


@pytest.mark.parametrize(("crm", "writes"), [("salesforce", "composite*"),
                                             ("dataverse", "$batch")])
def test_a_push_the_crm_never_answers_makes_the_run_unreachable_and_the_next_sends_it(
        sandbox: Any, engine: Engine, crm: str, writes: str) -> None:
    """Every write call fails (503 after the transport's bounded retries): the run is not
    ``ok`` (it was, with exit 0, though nothing reached the CRM), its cause is
    ``unreachable`` (exit 3), the rows stay pending, and the next run sends them."""
    build = salesforce if crm == "salesforce" else dataverse
    sandbox.faults.add(crm, writes, "503")
    report = run_cycle(engine, build(sandbox, Sleeper()), SyncOptions())
    assert (report.outcome, report.cause, exits.for_run(report)) == (
        "partial", "unreachable", exits.UNREACHABLE)
    assert "push account" in str(report.error) and report.total("pushed") == 0
    with engine.connect() as conn:
        pending = conn.execute(select(func.count()).select_from(outbox).where(
            outbox.c.state == OutboxState.PENDING)).scalar_one()
    assert pending >= 30
    sandbox.faults.clear()
    again = run_cycle(engine, build(sandbox, Sleeper()), SyncOptions())
    assert (again.outcome, exits.for_run(again)) == ("ok", exits.OK)
    assert again.total("pushed") == pending


def test_a_shutdown_during_the_push_stops_the_run_and_leaves_the_rest_pending(
        sandbox: Any, engine: Engine) -> None:
    """A stop asked for while the push runs: the run says ``stopped: shutdown`` (it said
    ``ok`` with rows unsent), what was not claimed stays pending for the next run."""
    calls = {"n": 0}

    def stop_once_pushing() -> bool:
        calls["n"] += 1
        return sandbox.counters.get("salesforce", "composite/sobjects") > 0

    report = run_cycle(engine, salesforce(sandbox, Sleeper()),
                       SyncOptions(push_batch_size=10), should_stop=stop_once_pushing)
    assert report.outcome == "stopped: shutdown", report
    assert exits.for_run(report) == exits.ATTENTION
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(outbox).where(
            outbox.c.state == OutboxState.PENDING)).scalar_one() > 0
