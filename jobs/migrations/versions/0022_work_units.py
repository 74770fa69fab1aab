"""Work units: partitioned work claimed with SKIP LOCKED and leases (issue 18)

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-06 20:15:00

``work_units``: one row per unit of a partitioned job (``job`` names it, e.g. ``bill_run:42``;
``unit_no`` orders its units; ``lo``..``hi`` is the unit's key range). Workers claim
``pending`` units (or ``claimed`` ones whose ``lease_until`` has passed) with ``FOR UPDATE
SKIP LOCKED`` on PostgreSQL, set ``claimed_by``/``lease_until``, count ``claims``, and mark
them ``done`` with their ``result`` (JSON totals) in the transaction that did the work
(``billing_core/adapters/work_units.py``).
"""
import sqlalchemy as sa
from alembic import op

import billing_core.adapters.types

revision = '0022'
down_revision = '0021'
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
_TS = billing_core.adapters.types.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        'work_units',
        sa.Column('id', _ID, autoincrement=True, nullable=False),
        sa.Column('job', sa.String(length=120), nullable=False),
        sa.Column('unit_no', sa.Integer(), nullable=False),
        sa.Column('lo', sa.BigInteger(), nullable=False),
        sa.Column('hi', sa.BigInteger(), nullable=False),
        sa.Column('state', sa.String(length=12), nullable=False),
        sa.Column('claimed_by', sa.String(length=160), nullable=True),
        sa.Column('lease_until', _TS, nullable=True),
        sa.Column('claims', sa.Integer(), server_default='0', nullable=False),
        sa.Column('result', sa.Text(), nullable=True),
        sa.Column('created_at', _TS, nullable=False),
        sa.Column('finished_at', _TS, nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_work_units')),
        sa.UniqueConstraint('job', 'unit_no', name='uq_work_units_job_unit'),
        sa.CheckConstraint("state IN ('pending', 'claimed', 'done')",
                           name=op.f('ck_work_units_state')),
    )
    op.create_index('ix_work_units_job_state', 'work_units', ['job', 'state', 'unit_no'],
                    unique=False)


def downgrade() -> None:
    op.drop_index('ix_work_units_job_state', table_name='work_units')
    op.drop_table('work_units')
