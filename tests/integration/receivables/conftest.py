"""Fixtures for the receivables tests (helpers live in ``receivables_helpers``)."""
from __future__ import annotations

import pytest
from receivables_helpers import make_account

from billing_core.adapters.db import UnitOfWork


@pytest.fixture
def account(uow: UnitOfWork) -> int:
    return make_account(uow)
