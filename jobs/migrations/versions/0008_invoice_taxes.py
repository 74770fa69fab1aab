"""invoice_taxes: the tax of an invoice per rate, with its taxable base

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 14:40:00

Tax is now computed once per rate on the base that remains after credits (issue 14), and the
invoice shows that base. Invoices written before this revision get one row per non-zero rate
from their lines: base = the sum of the lines at that rate (the credit-memo carry excluded, it
is never taxed), tax = the sum of the lines' taxes, which is what those invoices charged.
"""
from decimal import Decimal

import sqlalchemy as sa
from alembic import op

import billing_core.adapters.types

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table(
        'invoice_taxes',
        sa.Column('id', _ID, autoincrement=True, nullable=False),
        sa.Column('invoice_id', _ID, nullable=False),
        sa.Column('tax_rate', billing_core.adapters.types.ExactDecimal(length=40), nullable=False),
        sa.Column('base_minor', sa.BigInteger(), nullable=False),
        sa.Column('tax_minor', sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(['invoice_id'], ['invoices.id'],
                                name=op.f('fk_invoice_taxes_invoice_id_invoices')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_invoice_taxes')),
        sa.UniqueConstraint('invoice_id', 'tax_rate', name='uq_invoice_taxes_rate'),
    )
    lines = sa.table('invoice_lines', sa.column('invoice_id', _ID),
                     sa.column('kind', sa.String(16)), sa.column('amount_minor', sa.BigInteger()),
                     sa.column('tax_minor', sa.BigInteger()),
                     sa.column('tax_rate', billing_core.adapters.types.ExactDecimal()))
    taxes = sa.table('invoice_taxes', sa.column('invoice_id', _ID),
                     sa.column('tax_rate', billing_core.adapters.types.ExactDecimal()),
                     sa.column('base_minor', sa.BigInteger()),
                     sa.column('tax_minor', sa.BigInteger()))
    # the rate column is text on SQLite ("0") and numeric on PostgreSQL: bind zero by its type
    zero = sa.bindparam('zero', Decimal(0), type_=billing_core.adapters.types.ExactDecimal())
    per_rate = (sa.select(lines.c.invoice_id, lines.c.tax_rate, sa.func.sum(lines.c.amount_minor),
                          sa.func.sum(lines.c.tax_minor))
                .where(lines.c.tax_rate.is_not(None), lines.c.tax_rate != zero,
                       lines.c.kind != 'credit_memo')
                .group_by(lines.c.invoice_id, lines.c.tax_rate))
    op.get_bind().execute(
        taxes.insert().from_select(['invoice_id', 'tax_rate', 'base_minor', 'tax_minor'],
                                   per_rate))


def downgrade() -> None:
    op.drop_table('invoice_taxes')
