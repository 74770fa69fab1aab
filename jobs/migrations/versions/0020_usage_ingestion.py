"""Usage events ingestion and billable metrics (issue 19)

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-06 20:15:00

- ``usage_metrics``: billable metrics, one row per (code, effective_from).
- ``metered_events``: raw metered events, append-only (``invoice_id`` is the bill run's mark);
  ``event_id`` unique (idempotent ingestion), ``replaces`` unique where set (an event is
  corrected once).
- ``usage_ratings``: what each metered usage line billed, per (account, metric, group value,
  usage period): the base of a later adjustment.
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import billing_core.adapters.types

revision = '0020'
down_revision = '0019'
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
_TS = billing_core.adapters.types.UTCDateTime(timezone=True)
_DEC = billing_core.adapters.types.ExactDecimal(length=40)


def upgrade() -> None:
    op.create_table(
        'usage_metrics',
        sa.Column('id', _ID, autoincrement=True, nullable=False),
        sa.Column('code', sa.String(length=64), nullable=False),
        sa.Column('effective_from', sa.Date(), nullable=False),
        sa.Column('aggregation', sa.String(length=16), nullable=False),
        sa.Column('property', sa.String(length=64), nullable=True),
        sa.Column('filters', sa.Text(), nullable=True),
        sa.Column('group_by', sa.String(length=64), nullable=True),
        sa.Column('product_id', _ID, nullable=False),
        sa.Column('description', sa.String(length=255), nullable=True),
        sa.Column('created_at', _TS, nullable=False),
        sa.CheckConstraint("aggregation IN ('count', 'sum', 'max', 'unique_count', 'latest')",
                           name=op.f('ck_usage_metrics_aggregation')),
        sa.ForeignKeyConstraint(['product_id'], ['products.id'],
                                name=op.f('fk_usage_metrics_product_id_products')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_usage_metrics')),
        sa.UniqueConstraint('code', 'effective_from', name='uq_usage_metrics_code_from'),
    )
    op.create_index(op.f('ix_usage_metrics_product_id'), 'usage_metrics', ['product_id'],
                    unique=False)
    op.create_table(
        'metered_events',
        sa.Column('id', _ID, autoincrement=True, nullable=False),
        sa.Column('event_id', sa.String(length=128), nullable=False),
        sa.Column('account_id', _ID, nullable=False),
        sa.Column('metric_code', sa.String(length=64), nullable=False),
        sa.Column('occurred_at', _TS, nullable=False),
        sa.Column('value', _DEC, nullable=False),
        sa.Column('value_e6', sa.BigInteger(), nullable=False),
        sa.Column('properties', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'),
                  nullable=True),
        sa.Column('replaces', sa.String(length=128), nullable=True),
        sa.Column('received_at', _TS, nullable=False),
        sa.Column('invoice_id', _ID, nullable=True),
        sa.ForeignKeyConstraint(['account_id'], ['accounts.id'],
                                name=op.f('fk_metered_events_account_id_accounts')),
        sa.ForeignKeyConstraint(['invoice_id'], ['invoices.id'],
                                name=op.f('fk_metered_events_invoice_id_invoices')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_metered_events')),
        sa.UniqueConstraint('event_id', name='uq_metered_events_event_id'),
    )
    op.create_index('ix_metered_events_account', 'metered_events', ['account_id', 'occurred_at'],
                    unique=False)
    op.create_index('ix_metered_events_invoice', 'metered_events', ['invoice_id'], unique=False)
    op.create_index('uq_metered_events_replaces', 'metered_events', ['replaces'], unique=True,
                    sqlite_where=sa.text('replaces IS NOT NULL'),
                    postgresql_where=sa.text('replaces IS NOT NULL'))
    op.create_table(
        'usage_ratings',
        sa.Column('id', _ID, autoincrement=True, nullable=False),
        sa.Column('invoice_id', _ID, nullable=False),
        sa.Column('line_no', sa.Integer(), nullable=False),
        sa.Column('account_id', _ID, nullable=False),
        sa.Column('metric_code', sa.String(length=64), nullable=False),
        sa.Column('group_value', sa.String(length=255), nullable=True),
        sa.Column('period_start', sa.Date(), nullable=False),
        sa.Column('period_end', sa.Date(), nullable=False),
        sa.Column('quantity', _DEC, nullable=False),
        sa.Column('events', sa.Integer(), nullable=False),
        sa.Column('amount_minor', sa.BigInteger(), nullable=False),
        sa.Column('adjustment', sa.Boolean(), server_default=sa.text('false'), nullable=False),
        sa.ForeignKeyConstraint(['account_id'], ['accounts.id'],
                                name=op.f('fk_usage_ratings_account_id_accounts')),
        sa.ForeignKeyConstraint(['invoice_id'], ['invoices.id'],
                                name=op.f('fk_usage_ratings_invoice_id_invoices')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_usage_ratings')),
    )
    op.create_index('ix_usage_ratings_key', 'usage_ratings',
                    ['account_id', 'metric_code', 'period_start'], unique=False)
    op.create_index('ix_usage_ratings_invoice', 'usage_ratings', ['invoice_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_usage_ratings_invoice', table_name='usage_ratings')
    op.drop_index('ix_usage_ratings_key', table_name='usage_ratings')
    op.drop_table('usage_ratings')
    op.drop_index('uq_metered_events_replaces', table_name='metered_events')
    op.drop_index('ix_metered_events_invoice', table_name='metered_events')
    op.drop_index('ix_metered_events_account', table_name='metered_events')
    op.drop_table('metered_events')
    op.drop_index(op.f('ix_usage_metrics_product_id'), table_name='usage_metrics')
    op.drop_table('usage_metrics')
