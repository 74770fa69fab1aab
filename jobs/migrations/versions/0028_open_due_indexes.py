"""The open invoices and debit memos by due date

Revision ID: 0028
Revises: 0027
Create Date: 2026-12-07 09:00:00

What is past due is asked of every document ever issued: credit control's hourly re-evaluation
(``open_debts(due_before=...)``), the outbox refresh's first run of a day
(``accounts_with_overdue``) and the dunning run. None had an index to use, so each walked the
whole invoice table, a cost that grows with every month billed while the open documents stay
about one month's worth.

One partial index per table on ``due_date``, holding only the open documents (an invoice
``posted`` or ``partially_paid``, a debit memo ``active`` or ``partially_paid``): a payment
that settles one takes it out. Those queries write the statuses into their SQL, so SQLite
sees that the index applies.
"""
import sqlalchemy as sa
from alembic import op

revision = '0028'
down_revision = '0027'
branch_labels = None
depends_on = None

#: (index, table, the open statuses)
INDEXES = (
    ('ix_invoices_open_due', 'invoices', "status IN ('posted', 'partially_paid')"),
    ('ix_debit_memos_open_due', 'debit_memos', "status IN ('active', 'partially_paid')"),
)


def upgrade() -> None:
    for name, table, where in INDEXES:
        op.create_index(name, table, ['due_date'], sqlite_where=sa.text(where),
                        postgresql_where=sa.text(where))


def downgrade() -> None:
    for name, table, where in INDEXES:
        op.drop_index(name, table_name=table, sqlite_where=sa.text(where),
                      postgresql_where=sa.text(where))
