"""provisioning_requests.change_kind and effective_date: a request per change, dated

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06 17:10:00

Provisioning follows every change of a subscription, not only its order: ``change_kind`` says
what a request does (``provision`` an order's item, ``increase`` or ``decrease`` its quantity,
``deprovision`` it at its end) and ``effective_date`` when (NULL: at once; a request dated in
the future is not dispatched before that day). Existing requests are the orders' items and
the quantity changes made before: ``provision`` / ``increase`` is not known for the latter,
so every existing row is ``provision``, at once, as it was dispatched.
"""
import sqlalchemy as sa
from alembic import op

revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # plain ADD COLUMN (no batch copy of a table with foreign keys on SQLite)
    op.add_column('provisioning_requests', sa.Column(
        'change_kind', sa.String(16), nullable=False, server_default='provision'))
    op.add_column('provisioning_requests', sa.Column('effective_date', sa.Date(),
                                                     nullable=True))
    op.create_index('ix_provisioning_subscription', 'provisioning_requests',
                    ['subscription_id', 'id'])


def downgrade() -> None:
    op.drop_index('ix_provisioning_subscription', table_name='provisioning_requests')
    op.drop_column('provisioning_requests', 'effective_date')
    op.drop_column('provisioning_requests', 'change_kind')
