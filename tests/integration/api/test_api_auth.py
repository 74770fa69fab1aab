"""Tokens: every endpoint but /healthz needs one (401 without, with WWW-Authenticate); a token
without the scope is 403; revoked tokens stop working; only hashes are stored; the CLI creates,
lists and revokes them."""
from __future__ import annotations

import json

from api_helpers import TestClient
from click.testing import CliRunner
from sqlalchemy import select

from config.settings import Settings
from jobs.api.app import build_app
from jobs.api.tables import api_tokens
from jobs.cli import main

# (method, path, scope needed) for every operation of the OpenAPI document
NEEDS = {"GET": "billing:read", "POST": "billing:write"}
ADMIN = {"/accounts/{account}/hold:place", "/accounts/{account}/hold:release", "/sync:run",
         "/sync/runs/{run_id}", "/status", "/provisioning/{request_id}:retry",
         "/sync/quarantine"}


def _operations(api):
    paths = api.get("/openapi.json").json()["paths"]
    for path, ops in sorted(paths.items()):
        if path.startswith("/events/"):     # the CRM's change events: their own authentication
            continue                        # (tests/integration/sync/test_events.py)
        for method in ops:
            scope = "admin" if path in ADMIN else NEEDS[method.upper()]
            concrete = path.replace("{account}", "1").replace("{ref}", "1").replace(
                "{run_id}", "1").replace("{request_id}", "1")
            yield method.upper(), path, concrete, scope


def test_every_endpoint_but_healthz_needs_a_token(api):
    r = api.client.get("/openapi.json")
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
    assert api.client.get("/docs").status_code == 404
    operations = list(_operations(api))
    assert len(operations) >= 25
    for path in ("/events/dataverse/d365", "/events/salesforce/sf", "/events/salesforce/sf/json"):
        assert api.client.post(path, content=b"{}").status_code == 404   # no such connection
    for method, path, concrete, _ in operations:
        r = api.client.request(method, concrete, json={})
        if path == "/healthz":
            assert r.status_code == 200
            continue
        assert r.status_code == 401, (method, path, r.status_code)
        assert r.headers["WWW-Authenticate"].startswith('Bearer realm="ledgerbridge"')
        assert r.json()["error"]["code"] == "unauthenticated"


def test_a_token_without_the_scope_is_403(api):
    checked = 0
    for method, path, concrete, scope in _operations(api):
        weaker = {"billing:write": "billing:read", "admin": "billing:write"}.get(scope)
        if weaker is None:
            continue
        r = api.client.request(method, concrete, json={}, headers=api.headers(weaker))
        assert r.status_code == 403, (method, path, r.status_code)
        assert r.headers["WWW-Authenticate"] == (
            f'Bearer realm="ledgerbridge", error="insufficient_scope", scope="{scope}"')
        assert r.json()["error"]["code"] == "insufficient_scope"
        checked += 1
    assert checked >= 15


def test_bad_tokens_are_401(api):
    wrong_secret = api.tokens["admin"][:-4] + "AAAA"
    for header in ("Bearer nope", "Bearer lbk_000000000000_x", "Basic abc", "Bearer ",
                   "lbk_only", f"Bearer {wrong_secret}"):
        r = api.client.get("/billing/credit-memos", headers={"Authorization": header})
        assert r.status_code == 401, header
        assert "error=" in r.headers["WWW-Authenticate"], header


def test_a_wider_scope_includes_the_narrower(api, account):
    assert api.get("/billing/credit-memos", scope="billing:write").status_code == 200
    assert api.get("/billing/credit-memos", scope="admin").status_code == 200
    assert api.post("/billing/credit-memos", {"account_id": account, "amount": "1.00",
                                              "reason": "x"}, scope="admin").status_code == 201


def test_cli_creates_lists_and_revokes_tokens(sqlite_engine):
    """SQLite only: the CLI opens its own engine from a URL, which the per-test PostgreSQL
    schema has none of (the token functions it calls run on both in the other tests)."""
    engine = sqlite_engine
    url = engine.url.render_as_string(hide_password=False)
    client = TestClient(build_app(engine, Settings()))
    runner = CliRunner()
    out = runner.invoke(main, ["--database-url", url, "tokens", "create", "--name", "portal",
                               "--scope", "billing:write", "--json"])
    assert out.exit_code == 0, out.output
    created = json.loads(out.output)
    token = created["token"]
    assert token.startswith("lbk_")
    with engine.connect() as conn:
        stored = conn.execute(select(api_tokens).where(
            api_tokens.c.id == created["id"])).mappings().one()
    assert token not in json.dumps({k: str(v) for k, v in stored.items()})
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/billing/credit-memos", headers=headers).status_code == 200

    listed = runner.invoke(main, ["--database-url", url, "tokens", "list", "--json"])
    assert token not in listed.output and "portal" in listed.output

    out = runner.invoke(main, ["--database-url", url, "tokens", "revoke", "portal"])
    assert out.exit_code == 0, out.output
    assert client.get("/billing/credit-memos", headers=headers).status_code == 401
    again = runner.invoke(main, ["--database-url", url, "tokens", "revoke", "portal"])
    assert again.exit_code == 2 and "already revoked" in again.output
    bad = runner.invoke(main, ["--database-url", url, "tokens", "create", "--name", "x",
                               "--scope", "root"])
    assert bad.exit_code == 2


def test_request_log_names_the_token_id_never_the_token(api, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="jobs.api.metrics"):
        api.get("/billing/credit-memos")
    line = next(r.getMessage() for r in caplog.records if "/billing/credit-memos" in
                r.getMessage())
    assert "status=200" in line and "token=1" in line
    assert api.tokens["billing:read"] not in caplog.text
