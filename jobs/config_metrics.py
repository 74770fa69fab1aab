"""The main config's ``[metrics.CODE]`` tables, set in the ledger.

Billable metrics live in the ledger (``usage_metrics``, versions by date; the CLI and the API set
them too). Those written in the config file are set from it: by ``ledgerbridge run`` when it
starts, by each ``bill-run`` that writes (a dry run writes nothing, so it rates with what the
ledger holds) and by ``usage metrics load`` without a file. Setting a version identical to the
ledger's changes nothing, so doing it at each of those is free; a table the ledger refuses (a
product that does not exist, an unknown aggregation) stops the command with the field and the
value, nothing set (one transaction).
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import Engine

from billing_core.service import ledger_uow
from billing_core.service.usage_metrics import load_metric_tables
from config.settings import Settings


def apply_config_metrics(engine: Engine, settings: Settings, *,
                         actor: str = "system") -> list[dict[str, Any]]:
    """Set every ``[metrics.CODE]`` of ``settings`` (none: nothing); each metric's result."""
    if not settings.metrics:
        return []
    with ledger_uow(engine, actor=actor) as uow:
        results = load_metric_tables(uow, settings.metrics)
        uow.commit()
    return results
