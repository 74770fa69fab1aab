"""A billed ledger to render: the billing demo's accounts (USD with California tax, EUR with a
prepaid credit drawn, JPY), billed on 10 March 2026, on SQLite and PostgreSQL."""
from __future__ import annotations

from collections.abc import Iterator
from datetime import date

import pytest
from documents_helpers import BILL_DATE, SELLER, at
from sqlalchemy import Engine

from billing_core.adapters.db import UnitOfWork
from billing_core.documents.render import Renderer, RenderOptions
from billing_core.service import ledger_uow
from billing_core.service.bill_run import run_bill_run
from jobs.cli.demo import seed_demo_ledger


@pytest.fixture
def ledger(engine: Engine) -> dict[str, int]:
    """Account ids by name, every invoice posted (INV-000001..3)."""
    with ledger_uow(engine, clock=lambda: at(BILL_DATE)) as uow:
        ids = seed_demo_ledger(uow, BILL_DATE)
        uow.commit()
    run_bill_run(engine, BILL_DATE, uow_factory=lambda: ledger_uow(engine))
    return ids


@pytest.fixture
def renderer() -> Renderer:
    return Renderer(RenderOptions(seller=SELLER))


@pytest.fixture
def writer(engine: Engine) -> Iterator[UnitOfWork]:
    with ledger_uow(engine, clock=lambda: at(date(2026, 3, 15))) as uow:
        yield uow
