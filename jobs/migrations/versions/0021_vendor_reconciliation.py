"""Vendor reconciliation: mappings and imported vendor lines (issue 19)

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-06 20:15:00

Three tables (design: ``billing_core/service/vendor_reconciliation.py``):
- ``vendor_mappings``: a vendor's customer, subscription or product id -> a ledger account,
  subscription or product, set by finance (one row per (vendor, kind, vendor key));
- ``vendor_imports``: one row per imported reconciliation file and period; the period's
  current import has ``status = 'current'`` (a partial unique index keeps one per vendor and
  period), the ones it replaced ``superseded``; the report is stored as JSON, its
  summary apart (``/metrics`` reads it);
- ``vendor_lines``: the file's accepted rows, money in minor units, quantities exact.
"""
import sqlalchemy as sa
from alembic import op

import billing_core.adapters.types

revision = '0021'
down_revision = '0020'
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
_TS = billing_core.adapters.types.UTCDateTime(timezone=True)
_DEC = billing_core.adapters.types.ExactDecimal(length=40)
_CURRENT = "status = 'current'"


def upgrade() -> None:
    op.create_table(
        'vendor_mappings',
        sa.Column('id', _ID, autoincrement=True, nullable=False),
        sa.Column('vendor', sa.String(length=32), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('vendor_key', sa.String(length=128), nullable=False),
        sa.Column('account_id', _ID, nullable=True),
        sa.Column('subscription_id', _ID, nullable=True),
        sa.Column('product_id', _ID, nullable=True),
        sa.Column('created_at', _TS, nullable=False),
        sa.Column('updated_at', _TS, nullable=False),
        sa.CheckConstraint("kind IN ('customer', 'subscription', 'product')",
                           name=op.f('ck_vendor_mappings_kind')),
        sa.ForeignKeyConstraint(['account_id'], ['accounts.id'],
                                name=op.f('fk_vendor_mappings_account_id_accounts')),
        sa.ForeignKeyConstraint(['subscription_id'], ['subscriptions.id'],
                                name=op.f('fk_vendor_mappings_subscription_id_subscriptions')),
        sa.ForeignKeyConstraint(['product_id'], ['products.id'],
                                name=op.f('fk_vendor_mappings_product_id_products')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_vendor_mappings')),
        sa.UniqueConstraint('vendor', 'kind', 'vendor_key', name='uq_vendor_mappings_key'),
    )
    op.create_table(
        'vendor_imports',
        sa.Column('id', _ID, autoincrement=True, nullable=False),
        sa.Column('vendor', sa.String(length=32), nullable=False),
        sa.Column('period', sa.String(length=7), nullable=False),
        sa.Column('file_name', sa.String(length=255), nullable=False),
        sa.Column('file_sha256', sa.String(length=64), nullable=False),
        sa.Column('status', sa.String(length=12), nullable=False),
        sa.Column('rows_read', sa.Integer(), nullable=False),
        sa.Column('rows_refused', sa.Integer(), nullable=False),
        sa.Column('errors', sa.Text(), nullable=False),
        sa.Column('report', sa.Text(), nullable=True),
        sa.Column('summary', sa.Text(), nullable=True),
        sa.Column('imported_at', _TS, nullable=False),
        sa.Column('reconciled_at', _TS, nullable=True),
        sa.Column('superseded_at', _TS, nullable=True),
        sa.CheckConstraint("status IN ('current', 'superseded')",
                           name=op.f('ck_vendor_imports_status')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_vendor_imports')),
    )
    op.create_index('uq_vendor_imports_current', 'vendor_imports', ['vendor', 'period'],
                    unique=True, sqlite_where=sa.text(_CURRENT),
                    postgresql_where=sa.text(_CURRENT))
    op.create_table(
        'vendor_lines',
        sa.Column('id', _ID, autoincrement=True, nullable=False),
        sa.Column('import_id', _ID, nullable=False),
        sa.Column('row_no', sa.Integer(), nullable=False),
        sa.Column('vendor_customer_id', sa.String(length=64), nullable=False),
        sa.Column('customer_name', sa.String(length=255), nullable=True),
        sa.Column('customer_domain', sa.String(length=255), nullable=True),
        sa.Column('vendor_subscription_id', sa.String(length=64), nullable=True),
        sa.Column('vendor_product_id', sa.String(length=64), nullable=False),
        sa.Column('vendor_sku_id', sa.String(length=64), nullable=False),
        sa.Column('sku_name', sa.String(length=255), nullable=True),
        sa.Column('product_name', sa.String(length=255), nullable=True),
        sa.Column('charge_type', sa.String(length=64), nullable=True),
        sa.Column('charge_start', sa.Date(), nullable=True),
        sa.Column('charge_end', sa.Date(), nullable=True),
        sa.Column('quantity', _DEC, nullable=False),
        sa.Column('unit_price', _DEC, nullable=True),
        sa.Column('effective_unit_price', _DEC, nullable=True),
        sa.Column('currency', sa.String(length=3), nullable=False),
        sa.Column('subtotal_minor', sa.BigInteger(), nullable=False),
        sa.Column('invoice_number', sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(['import_id'], ['vendor_imports.id'],
                                name=op.f('fk_vendor_lines_import_id_vendor_imports')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_vendor_lines')),
        sa.UniqueConstraint('import_id', 'row_no', name='uq_vendor_lines_row'),
    )


def downgrade() -> None:
    op.drop_table('vendor_lines')
    op.drop_index('uq_vendor_imports_current', table_name='vendor_imports',
                  sqlite_where=sa.text(_CURRENT), postgresql_where=sa.text(_CURRENT))
    op.drop_table('vendor_imports')
    op.drop_table('vendor_mappings')
