"""Every table of the one database, for Alembic: the ledger's, the API's, then the sync
engine's."""
from __future__ import annotations

from sqlalchemy import MetaData

from billing_core.service.schema import metadata as ledger_metadata
from jobs.api.tables import metadata as api_metadata
from sync.tables import metadata as sync_metadata


def target_metadata() -> list[MetaData]:
    return [ledger_metadata(), api_metadata, sync_metadata]
