"""The service layer: the only way into the ledger.

Entry points (CLI, API, sync, jobs) open a unit of work with :func:`ledger_uow`, call service
functions with it, and commit. ``ledger_uow`` wires the commit hooks (credit control's hold
re-evaluation), so every entry point gets the same rules.
"""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import Engine

from billing_core.adapters.db import UnitOfWork
from billing_core.service.credit_control import reevaluate_touched_hook


def ledger_uow(engine: Engine, *, read_only: bool = False, policy: object | None = None,
               clock: Callable[[], datetime] | None = None, actor: str = "system",
               run_id: str | None = None) -> UnitOfWork:
    """``actor`` (who the changes are recorded as in the audit trail) and ``run_id`` (a request
    or run id, optional) travel on the unit of work."""
    hooks = [reevaluate_touched_hook(policy)]
    return UnitOfWork(engine, read_only=read_only, before_commit=hooks, clock=clock,
                      policy=policy, actor=actor, run_id=run_id)
