"""Indexes that the remaining chunk, record and cycle reads can use without statistics

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-07 03:20:00

The same class as 0024: SQLite never gathers statistics by itself, and without them its planner
prefers an equality on one column to an IN list or a range on another, or scans a table whose
selective column has no index at all.

- ``metered_events``: usage rating reads a group of accounts' unbilled events with
  ``account_id IN (...) AND invoice_id IS NULL AND occurred_at < cutoff``; it took
  ``ix_metered_events_invoice`` and walked every unbilled event of the table for each group.
  ``ix_metered_events_unbilled`` (invoice_id, account_id, occurred_at) puts the equality first;
  the plain invoice_id index is its prefix (voiding still finds an invoice's events) and goes.
- ``handoffs``: an incremental outbox refresh reads the done hand-offs of a page of accounts'
  orders by ``order_id``, which had no index: every hand-off of the connection for each page.
  ``ix_handoffs_order`` (order_id).
- ``accounts``: usage ingestion resolves each batch's account references by ``ext_id`` alone,
  and so does ``resolve_account`` (CLI, API): a scan of every account for each batch or call.
  ``ix_accounts_ext_id`` (ext_id); ``uq_accounts_ext`` starts with ext_source.
- ``payments``: ``find_payment`` looks a payment up by ``reference`` alone (the unique index
  starts with account_id): a scan of every payment for each call. ``ix_payments_reference``.
- ``credit_memos``: voiding an invoice checks and cancels its overflow memos by
  ``origin_invoice_id``, which had no index: every credit memo for each invoice voided.
  ``ix_credit_memos_origin_invoice``.
- ``sync_runs`` (one row per cycle, never pruned): each cycle reads its connection's runs still
  ``running`` and its latest API usage since a time; both scanned every run ever recorded.
  ``ix_sync_runs_outcome`` (outcome, connection) and ``ix_sync_runs_finished``
  (connection, finished_at).
"""
from alembic import op

revision = '0025'
down_revision = '0024'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index('ix_metered_events_invoice', table_name='metered_events')
    op.create_index('ix_metered_events_unbilled', 'metered_events',
                    ['invoice_id', 'account_id', 'occurred_at'])
    op.create_index('ix_handoffs_order', 'handoffs', ['order_id'])
    op.create_index('ix_accounts_ext_id', 'accounts', ['ext_id'])
    op.create_index('ix_payments_reference', 'payments', ['reference'])
    op.create_index('ix_credit_memos_origin_invoice', 'credit_memos', ['origin_invoice_id'])
    op.create_index('ix_sync_runs_outcome', 'sync_runs', ['outcome', 'connection'])
    op.create_index('ix_sync_runs_finished', 'sync_runs', ['connection', 'finished_at'])


def downgrade() -> None:
    op.drop_index('ix_sync_runs_finished', table_name='sync_runs')
    op.drop_index('ix_sync_runs_outcome', table_name='sync_runs')
    op.drop_index('ix_credit_memos_origin_invoice', table_name='credit_memos')
    op.drop_index('ix_payments_reference', table_name='payments')
    op.drop_index('ix_accounts_ext_id', table_name='accounts')
    op.drop_index('ix_handoffs_order', table_name='handoffs')
    op.drop_index('ix_metered_events_unbilled', table_name='metered_events')
    op.create_index('ix_metered_events_invoice', 'metered_events', ['invoice_id'], unique=False)
