"""Fixtures for the credit-control tests (helpers live in ``credit_helpers``)."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
from credit_helpers import Clock, Ledger, RecordingProvisioner
from sqlalchemy import Engine


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ledger(engine: Engine, clock: Clock) -> Ledger:
    return Ledger(engine, clock)


@pytest.fixture
def provisioner() -> Iterator[RecordingProvisioner]:
    yield RecordingProvisioner()
