"""hand-offs owed are found through a partial index on waiting rows

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 13:00:00

Every accepted quote revision pulled without a hand-off row now gets a ``waiting`` row in the
page's transaction (what the hand-off owes outlives a stopped or killed run); each cycle looks
at every waiting row of its connection, through this index instead of every hand-off row.
Quotes lost before this revision (pulled by a run that stopped before its hand-off) get their
rows from the next ``sync --full``.
"""
import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

_WAITING = "state = 'waiting'"


def upgrade() -> None:
    with op.batch_alter_table('handoffs', schema=None) as batch_op:
        batch_op.create_index('ix_handoffs_waiting', ['connection', 'quote_crm_id'],
                              unique=False, sqlite_where=sa.text(_WAITING),
                              postgresql_where=sa.text(_WAITING))


def downgrade() -> None:
    with op.batch_alter_table('handoffs', schema=None) as batch_op:
        batch_op.drop_index('ix_handoffs_waiting', sqlite_where=sa.text(_WAITING),
                            postgresql_where=sa.text(_WAITING))
