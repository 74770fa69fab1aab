"""sync_runs.objects and sync_runs.api_calls: a run with nothing to do writes one row

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 17:10:00

A run now records the objects it covered (with their API calls) in its own row and writes a
``sync_run_objects`` row only for an object something happened to; ``status`` takes an
object's last run from either. Runs recorded before have a row per object and no list.
"""
import sqlalchemy as sa
from alembic import op

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # plain ADD COLUMN on both databases (no batch copy of a table that may hold many runs)
    op.add_column('sync_runs', sa.Column('objects', sa.Text(), nullable=True))
    op.add_column('sync_runs', sa.Column('api_calls', sa.Integer(), nullable=False,
                                         server_default='0'))


def downgrade() -> None:
    with op.batch_alter_table('sync_runs', schema=None) as batch_op:
        batch_op.drop_column('api_calls')
        batch_op.drop_column('objects')
