"""Fixtures for the HTTP API tests: the app over the ``engine`` fixture (SQLite, then
PostgreSQL), a token per scope, an account and a posted invoice (helpers in ``api_helpers``)."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
from api_helpers import Api, FakeSyncRunner, SchedulerState, TestClient, make_account, post_invoice
from sqlalchemy import Engine

from billing_core.service import ledger_uow
from config.settings import Settings
from jobs.api.app import build_app
from jobs.api.auth import create_token


@pytest.fixture
def api(engine: Engine) -> Iterator[Api]:
    sync = FakeSyncRunner()
    scheduler = SchedulerState()
    with ledger_uow(engine) as uow:
        tokens = {scope: create_token(uow, f"test-{scope}", [scope])[1]
                  for scope in ("billing:read", "billing:write", "admin")}
        uow.commit()
    app = build_app(engine, Settings(), sync_runner=sync, scheduler_state=scheduler)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Api(client, engine, tokens, sync, scheduler)


@pytest.fixture
def account(api: Api) -> int:
    return int(api.run(make_account))


@pytest.fixture
def invoice(api: Api, account: int) -> int:
    """INV-000001: 100.00 USD posted to ``account``."""
    return int(api.run(lambda uow: post_invoice(uow, account, 10000)))
