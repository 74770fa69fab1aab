"""quote lines indexed by quote (partial index); quotes no longer in the parent index

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 06:00:00

Only the hand-off looks records up by parent, and only quote lines by their quote. Quotes,
whose parents (accounts) arrive in random order, paid a random index insert each for nothing.
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

_LINES = "object = 'quote_line'"


def upgrade() -> None:
    with op.batch_alter_table('sync_records', schema=None) as batch_op:
        batch_op.drop_index('ix_sync_records_parent')
        batch_op.create_index('ix_sync_records_line_quote', ['connection', 'parent_crm_id'],
                              unique=False, sqlite_where=sa.text(_LINES),
                              postgresql_where=sa.text(_LINES))


def downgrade() -> None:
    with op.batch_alter_table('sync_records', schema=None) as batch_op:
        batch_op.drop_index('ix_sync_records_line_quote', sqlite_where=sa.text(_LINES),
                            postgresql_where=sa.text(_LINES))
        batch_op.create_index('ix_sync_records_parent',
                              ['connection', 'object', 'parent_crm_id'], unique=False)
