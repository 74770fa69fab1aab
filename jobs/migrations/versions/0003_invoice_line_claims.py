"""invoice lines claim what they bill: one live line per subscription period and one-time charge

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 09:00:00

Two bill runs for adjacent periods, started together on PostgreSQL, billed the same charges
twice: nothing in the database tied a charge to one live invoice. Lines now say which charge
they bill (``one_time_charge_id``) and whether they are its live billing (``claims_charge``),
and partial unique indexes allow one claiming line per (subscription, period start) and per
one-time charge.

Existing live invoices keep their claims on recurring periods: per (subscription, period start)
the earliest line of a live invoice claims it (a later line with the same start is a catch-up
proration, or a duplicate the old race made, which stays visible and unclaimed). Old one-time
lines cannot be matched to their charge with certainty and claim nothing; their charges stay
marked billed by ``one_time_charges.invoice_id`` as before.
"""
import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

_CLAIMS = "claims_charge"
_EARLIEST_LIVE = sa.text(
    "UPDATE invoice_lines SET claims_charge = true WHERE id IN ("
    " SELECT min(l.id) FROM invoice_lines AS l JOIN invoices AS i ON i.id = l.invoice_id"
    " WHERE i.status != 'void' AND l.subscription_id IS NOT NULL"
    " AND l.kind IN ('recurring', 'proration')"
    " GROUP BY l.subscription_id, l.period_start)")


def upgrade() -> None:
    with op.batch_alter_table('invoice_lines', schema=None) as batch_op:
        batch_op.add_column(sa.Column(
            'one_time_charge_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'),
            nullable=True))
        batch_op.add_column(sa.Column('claims_charge', sa.Boolean(),
                                      server_default=sa.text('false'), nullable=False))
        batch_op.create_foreign_key(
            batch_op.f('fk_invoice_lines_one_time_charge_id_one_time_charges'),
            'one_time_charges', ['one_time_charge_id'], ['id'])
    op.execute(_EARLIEST_LIVE)
    with op.batch_alter_table('invoice_lines', schema=None) as batch_op:
        batch_op.create_index('uq_invoice_lines_period', ['subscription_id', 'period_start'],
                              unique=True, sqlite_where=sa.text(_CLAIMS),
                              postgresql_where=sa.text(_CLAIMS))
        batch_op.create_index('uq_invoice_lines_one_time', ['one_time_charge_id'], unique=True,
                              sqlite_where=sa.text(_CLAIMS), postgresql_where=sa.text(_CLAIMS))


def downgrade() -> None:
    with op.batch_alter_table('invoice_lines', schema=None) as batch_op:
        batch_op.drop_index('uq_invoice_lines_one_time', sqlite_where=sa.text(_CLAIMS),
                            postgresql_where=sa.text(_CLAIMS))
        batch_op.drop_index('uq_invoice_lines_period', sqlite_where=sa.text(_CLAIMS),
                            postgresql_where=sa.text(_CLAIMS))
        batch_op.drop_constraint(
            batch_op.f('fk_invoice_lines_one_time_charge_id_one_time_charges'),
            type_='foreignkey')
        batch_op.drop_column('claims_charge')
        batch_op.drop_column('one_time_charge_id')
