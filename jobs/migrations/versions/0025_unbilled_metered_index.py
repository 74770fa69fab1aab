"""The metered events' unbilled index puts the equality first

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-07 03:20:00

Usage rating reads a group of accounts' unbilled metered events with ``account_id IN (...)
AND invoice_id IS NULL AND occurred_at < cutoff``. Without statistics (SQLite never gathers
them by itself) the planner took the equality on ``invoice_id`` (``ix_metered_events_invoice``)
over the IN list on ``account_id``, so each group walked every unbilled event of the table:
a rating run's reads grew with the table, not with the group (the same class as 0024). With the
equality column first, ``ix_metered_events_unbilled`` (invoice_id, account_id, occurred_at)
seeks straight to the group's accounts; the plain ``ix_metered_events_invoice`` is its prefix
(voiding still finds an invoice's events through it) and goes.
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


def downgrade() -> None:
    op.drop_index('ix_metered_events_unbilled', table_name='metered_events')
    op.create_index('ix_metered_events_invoice', 'metered_events', ['invoice_id'], unique=False)
