"""amendment_items: what each amendment order changed in its deal

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 14:25:00

A new revision of a handed-off quote becomes an amendment order that bills only the
difference against what the deal ordered (``billing_core/service/amendments.py``). Each
quantity change, added item and removed subscription it makes is one row here, so which
revision produced which change stays known.
"""
import sqlalchemy as sa
from alembic import op

import billing_core.adapters.types

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
_FKS = (('order_id', 'orders'), ('product_id', 'products'), ('subscription_id', 'subscriptions'),
        ('one_time_charge_id', 'one_time_charges'), ('change_id', 'subscription_changes'))


def upgrade() -> None:
    op.create_table(
        'amendment_items',
        sa.Column('id', _ID, autoincrement=True, nullable=False),
        sa.Column('order_id', _ID, nullable=False),
        sa.Column('action', sa.String(length=16), nullable=False),
        sa.Column('product_id', _ID, nullable=False),
        sa.Column('subscription_id', _ID, nullable=True),
        sa.Column('one_time_charge_id', _ID, nullable=True),
        sa.Column('change_id', _ID, nullable=True),
        sa.Column('old_quantity', billing_core.adapters.types.ExactDecimal(length=40), nullable=True),
        sa.Column('new_quantity', billing_core.adapters.types.ExactDecimal(length=40), nullable=True),
        sa.Column('effective_date', sa.Date(), nullable=False),
        sa.Column('created_at', billing_core.adapters.types.UTCDateTime(timezone=True),
                  nullable=False),
        sa.CheckConstraint("action IN ('quantity', 'added', 'removed', 'one_time')",
                           name=op.f('ck_amendment_items_action')),
        *(sa.ForeignKeyConstraint([col], [f'{target}.id'],
                                  name=op.f(f'fk_amendment_items_{col}_{target}'))
          for col, target in _FKS),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_amendment_items')),
    )
    with op.batch_alter_table('amendment_items', schema=None) as batch_op:
        for col, _ in _FKS:
            batch_op.create_index(batch_op.f(f'ix_amendment_items_{col}'), [col], unique=False)


def downgrade() -> None:
    op.drop_table('amendment_items')
