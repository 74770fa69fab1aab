"""claims record their owner: provisioning requests, outbox rows and bill runs

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 14:15:00

A ``dispatching`` provisioning request, a ``sending`` outbox row and a ``running`` bill run now
name the process that holds them (``claimed_by``: ``pid@host/start``), so that a claim whose
process is gone on this host is taken back at once instead of when its lease ends. Rows claimed
before this revision have no owner and keep the lease rule.
"""
import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

_TABLES = ('provisioning_requests', 'outbox', 'bill_runs')


def upgrade() -> None:
    for table in _TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column('claimed_by', sa.String(length=160), nullable=True))


def downgrade() -> None:
    for table in _TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column('claimed_by')
