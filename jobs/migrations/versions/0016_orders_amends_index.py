"""orders.amends_order_id indexed: a deal's newest order is found forward

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06 17:15:00

The hand-off amends or renews a deal's newest order (``billing_core.service.deals.deal_head``):
from the order a CRM quote points at, the order amending it, then the one amending that. Each
step looks orders up by ``amends_order_id``, which had no index (a full scan of ``orders`` per
step, per CPQ amendment or renewal handed off).
"""
from alembic import op

revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_orders_amends', 'orders', ['amends_order_id'])


def downgrade() -> None:
    op.drop_index('ix_orders_amends', table_name='orders')
