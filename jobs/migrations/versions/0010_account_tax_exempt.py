"""accounts.tax_exempt: an account finance marks as exempt from tax

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 14:55:00

The bill run refuses an invoice whose account's country has no tax rate, instead of billing
it without tax; an account that is exempt (finance's decision, the CRM does not send it) is
billed without tax whatever its country. Existing accounts are not exempt.
"""
import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # a plain ADD COLUMN on both databases (a batch copy of accounts would trip its foreign keys)
    op.add_column('accounts', sa.Column('tax_exempt', sa.Boolean(), nullable=False,
                                        server_default=sa.text('false')))


def downgrade() -> None:
    op.drop_column('accounts', 'tax_exempt')
