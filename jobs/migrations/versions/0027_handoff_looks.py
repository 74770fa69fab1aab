"""The quotes the hand-off must look at again, kept in the database

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-07 08:10:00

A handed-off quote that changes in the CRM (it leaves the accepted state or is deleted, a
cancellation date is set on it or a line, a line changes) owes no new revision, so it has no
``waiting`` hand-off row; the run that pulled the change kept it in memory until its hand-off.
A run stopped or killed between the pull and the hand-off lost it: the next run did not read
the unchanged record again, so the reversal was never reported and the cancellation never
ended the subscriptions. And a run held every such quote (with every owed one) in memory for
its whole hand-off.

``handoff_looks`` keeps them: one row per quote, written with the page that brought the change
and deleted by the hand-off chunk that looked at it. Existing deployments start with none (the
quotes of runs before this one were looked at by those runs).
"""
import sqlalchemy as sa
from alembic import op

import billing_core.adapters.types

revision = '0027'
down_revision = '0026'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'handoff_looks',
        sa.Column('connection', sa.String(length=64), nullable=False),
        sa.Column('quote_crm_id', sa.String(length=64), nullable=False),
        sa.Column('noted_at', billing_core.adapters.types.UTCDateTime(timezone=True),
                  nullable=False),
        sa.PrimaryKeyConstraint('connection', 'quote_crm_id', name=op.f('pk_handoff_looks')),
    )


def downgrade() -> None:
    op.drop_table('handoff_looks')
