"""Every table of the one database, for Alembic: the ledger's, then the sync engine's."""
from __future__ import annotations

from sqlalchemy import MetaData


def target_metadata() -> list[MetaData]:
    from billing_core.adapters.tables import metadata as ledger

    found = [ledger]
    found.append(__import__("jobs.api.tables", fromlist=["metadata"]).metadata)
    try:
        from sync.tables import metadata as sync_metadata
    except ModuleNotFoundError:
        pass
    else:
        found.append(sync_metadata)
    return found
