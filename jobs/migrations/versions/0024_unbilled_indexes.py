"""Indexes the bill run's range reads can use without statistics

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-07 02:30:00

The bill run reads a chunk's unbilled usage and one-time charges with ``invoice_id IS NULL
AND account_id BETWEEN lo AND hi``, and credit control reads waiting provisioning requests
with ``state = ? AND account_id IN (...)``. Without statistics (SQLite never gathers them by
itself) the planner prefers an equality on one column to a range on another, so it walked every
unbilled row of the table (``ix_usage_events_invoice_id``) or every waiting request
(``ix_provisioning_state``) for each chunk: a bill run's reads grew with the table, not with the
chunk. With the equality column first the same condition seeks straight to the chunk.

- ``usage_events``: ``ix_usage_unbilled`` becomes (invoice_id, account_id, occurred_at); the
  plain ``ix_usage_events_invoice_id`` is its prefix and goes.
- ``one_time_charges``: ``ix_one_time_charges_unbilled`` (invoice_id, account_id) replaces
  ``ix_one_time_charges_invoice_id``.
- ``provisioning_requests``: ``ix_provisioning_account_state`` (account_id, state) replaces
  ``ix_provisioning_requests_account_id``.
"""
from alembic import op

revision = '0024'
down_revision = '0023'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index('ix_usage_unbilled', table_name='usage_events')
    op.drop_index('ix_usage_events_invoice_id', table_name='usage_events')
    op.create_index('ix_usage_unbilled', 'usage_events',
                    ['invoice_id', 'account_id', 'occurred_at'])
    op.drop_index('ix_one_time_charges_invoice_id', table_name='one_time_charges')
    op.create_index('ix_one_time_charges_unbilled', 'one_time_charges',
                    ['invoice_id', 'account_id'])
    op.drop_index('ix_provisioning_requests_account_id', table_name='provisioning_requests')
    op.create_index('ix_provisioning_account_state', 'provisioning_requests',
                    ['account_id', 'state'])


def downgrade() -> None:
    op.drop_index('ix_provisioning_account_state', table_name='provisioning_requests')
    op.create_index('ix_provisioning_requests_account_id', 'provisioning_requests',
                    ['account_id'])
    op.drop_index('ix_one_time_charges_unbilled', table_name='one_time_charges')
    op.create_index('ix_one_time_charges_invoice_id', 'one_time_charges', ['invoice_id'])
    op.drop_index('ix_usage_unbilled', table_name='usage_events')
    op.create_index('ix_usage_events_invoice_id', 'usage_events', ['invoice_id'])
    op.create_index('ix_usage_unbilled', 'usage_events',
                    ['account_id', 'invoice_id', 'occurred_at'])
