"""The ledger's table definitions as one ``MetaData``, for whoever builds the database schema
(the migrations in ``jobs``), so that nothing outside billing imports its table module.

Rules kept here: a read of what ``billing_core.adapters.tables`` declares; nothing is created,
connected or changed.
"""
from __future__ import annotations

from sqlalchemy import MetaData

from billing_core.adapters import tables


def metadata() -> MetaData:
    """Every table of the ledger."""
    return tables.metadata
