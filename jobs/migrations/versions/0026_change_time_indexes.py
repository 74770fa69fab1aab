"""Indexes on the times the outbox refresh asks "what changed since?" by

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-07 05:50:00

Every sync cycle's outbox refresh asks which accounts' billing figures or holds may have moved
since its watermark (``billing_core.service.accounts.changed_since``): one range per time
column of nine tables. None of those columns had an index, so each cycle walked every account,
invoice, payment, application, memo, hold change, order and provisioning request ever written,
a cost that grew with the ledger for the same few changes.

One index per time column. Where the column is empty for most rows (an invoice not voided, an
application not reversed, a memo not cancelled) or for rows no refresh asks about (a draft
invoice has no ``posted_at``), the index is partial, ``IS NOT NULL``: a range on the column
implies it, on SQLite and PostgreSQL alike, and the rows that never match cost no entry (the
bill run inserts its invoices with ``voided_at`` empty).
"""
import sqlalchemy as sa
from alembic import op

revision = '0026'
down_revision = '0025'
branch_labels = None
depends_on = None

#: (index, table, column, partial)
INDEXES = (
    ('ix_accounts_updated', 'accounts', 'updated_at', False),
    ('ix_invoices_posted', 'invoices', 'posted_at', True),
    ('ix_invoices_voided', 'invoices', 'voided_at', True),
    ('ix_payments_created', 'payments', 'created_at', False),
    ('ix_applications_applied', 'applications', 'applied_at', False),
    ('ix_applications_reversed', 'applications', 'reversed_at', True),
    ('ix_credit_memos_activated', 'credit_memos', 'activated_at', True),
    ('ix_credit_memos_cancelled', 'credit_memos', 'cancelled_at', True),
    ('ix_debit_memos_activated', 'debit_memos', 'activated_at', True),
    ('ix_debit_memos_cancelled', 'debit_memos', 'cancelled_at', True),
    ('ix_hold_history_at', 'hold_history', 'at', False),
    ('ix_orders_created', 'orders', 'created_at', False),
    ('ix_orders_activated', 'orders', 'activated_at', True),
    ('ix_provisioning_updated', 'provisioning_requests', 'updated_at', False),
)


def upgrade() -> None:
    for name, table, column, partial in INDEXES:
        where = sa.text(f"{column} IS NOT NULL") if partial else None
        op.create_index(name, table, [column], sqlite_where=where, postgresql_where=where)


def downgrade() -> None:
    for name, table, _column, _partial in reversed(INDEXES):
        op.drop_index(name, table_name=table)
