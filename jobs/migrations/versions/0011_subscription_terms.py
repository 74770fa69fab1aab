"""committed terms: products' term defaults and policies, subscriptions' terms, renewal orders

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 15:00:00

A subscription's commitment (term) is independent of its billing frequency
(``billing_core/domain/terms.py``). Products carry the defaults (``term_months``,
``auto_renew``) and the policy for a decrease or an end inside a committed term
(``term_decrease``: refuse | at_term_end; ``early_termination``: refuse | at_term_end |
allowed); a subscription keeps its own ``term_months``, first ``term_end`` and ``auto_renew``;
a renewal order names the order it renews (``renews_order_id``). Existing rows get no term:
they bill and cancel exactly as before.
"""
import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    # plain ADD COLUMNs on both databases (a batch copy would trip the tables' foreign keys);
    # hence no CHECK on the policies (the service checks them) and no FK on renews_order_id
    op.add_column('products', sa.Column('term_months', sa.Integer(), nullable=True))
    op.add_column('products', sa.Column('auto_renew', sa.Boolean(), nullable=False,
                                        server_default=sa.text('false')))
    op.add_column('products', sa.Column('term_decrease', sa.String(length=16), nullable=False,
                                        server_default='at_term_end'))
    op.add_column('products', sa.Column('early_termination', sa.String(length=16),
                                        nullable=False, server_default='at_term_end'))
    op.add_column('subscriptions', sa.Column('term_months', sa.Integer(), nullable=True))
    op.add_column('subscriptions', sa.Column('term_end', sa.Date(), nullable=True))
    op.add_column('subscriptions', sa.Column('auto_renew', sa.Boolean(), nullable=False,
                                             server_default=sa.text('false')))
    op.add_column('orders', sa.Column('renews_order_id', _ID, nullable=True))


def downgrade() -> None:
    for table, column in (('orders', 'renews_order_id'), ('subscriptions', 'auto_renew'),
                          ('subscriptions', 'term_end'), ('subscriptions', 'term_months'),
                          ('products', 'early_termination'), ('products', 'term_decrease'),
                          ('products', 'auto_renew'), ('products', 'term_months')):
        op.drop_column(table, column)
