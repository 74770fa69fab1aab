"""Account classes: dunning schedule per class (issue 16)

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-06 20:15:00

``accounts.account_class``: the account's class (a lower-case name such as ``enterprise``),
set by finance (``accounts update --class``) or mapped from the CRM (canonical field
``account_class``); it chooses the account's dunning schedule (``[dunning.classes.NAME]``,
docs/DOCUMENTS.md, Dunning). Existing accounts have none: the ``[dunning]`` default schedule.
"""
import sqlalchemy as sa
from alembic import op

revision = '0023'
down_revision = '0022'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # a plain ADD COLUMN on both databases (a batch copy of accounts would trip its foreign keys)
    op.add_column('accounts', sa.Column('account_class', sa.String(length=64), nullable=True))


def downgrade() -> None:
    op.drop_column('accounts', 'account_class')
