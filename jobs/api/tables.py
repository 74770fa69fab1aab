"""The HTTP API's own tables: bearer tokens and stored idempotent answers.

Rules kept here
- A token's secret is never stored: only ``sha256(token)`` (the token carries 256 bits of
  randomness, so a plain hash is enough; no slow KDF is needed for high-entropy secrets). The
  public ``prefix`` finds the row; the hash is then compared in constant time.
- A token is revoked by setting ``revoked_at``; rows are never deleted (``tokens list`` shows them).
- One stored answer per (token, Idempotency-Key): the unique constraint is what makes replay
  race-safe. The row is written in the same transaction as the ledger change it answers.
"""
from __future__ import annotations

from sqlalchemy import (
    Column,
    ForeignKey,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from billing_core.adapters.types import Id, UTCDateTime, id_column, new_metadata

metadata = new_metadata()


api_tokens = Table(
    "api_tokens", metadata,
    id_column(),
    Column("name", String(128), nullable=False),
    Column("prefix", String(16), nullable=False, unique=True),   # public part, shown in lists
    Column("secret_hash", String(64), nullable=False),             # sha256 hex of the whole token
    Column("scopes", String(128), nullable=False),                 # space-separated
    Column("created_at", UTCDateTime(), nullable=False),
    Column("revoked_at", UTCDateTime()),
)

api_idempotency = Table(
    "api_idempotency", metadata,
    id_column(),
    Column("key", String(255), nullable=False),
    Column("token_id", Id, ForeignKey("api_tokens.id"), nullable=False),
    Column("method_path", String(512), nullable=False),            # "POST /billing/payments"
    Column("body_hash", String(64), nullable=False),
    Column("status_code", Integer, nullable=False),
    Column("response_body", Text, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    UniqueConstraint("token_id", "key", name="uq_api_idempotency_token_key"),
)
