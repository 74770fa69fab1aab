"""accounts.credit_limit_override_minor: finance's credit limit, over the CRM's

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 15:00:00

The CRM sends the credit limit (``credit_limit_minor``) and every CRM update of the account
writes it again; finance's override lives beside it, never written by the sync: when set, credit
control and the account's figures use it instead. Existing accounts have none.
"""
import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # plain ADD COLUMN (a batch copy of accounts would trip its foreign keys on SQLite); the
    # >= 0 rule is kept by billing_core.service.accounts.update_terms
    op.add_column('accounts', sa.Column('credit_limit_override_minor', sa.BigInteger(),
                                        nullable=True))


def downgrade() -> None:
    op.drop_column('accounts', 'credit_limit_override_minor')
