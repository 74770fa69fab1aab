"""audit_log: the append-only audit trail of changes to the ledger

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06 18:05:00

One row per change a person or system made (who, when, what, the changed fields before and
after), written in the change's own transaction (``billing_core/service/audit.py``). A trigger
on each database refuses UPDATE and DELETE of a row, so the trail stays append-only even for a
hand-written statement (PostgreSQL: TRUNCATE, an owner's operation, is not a row change and
stays possible for retention by an administrator).
"""
import sqlalchemy as sa
from alembic import op

import billing_core.adapters.types

revision = '0018'
down_revision = '0017'
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
_TS = billing_core.adapters.types.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        'audit_log',
        sa.Column('id', _ID, autoincrement=True, nullable=False),
        sa.Column('at', _TS, nullable=False),
        sa.Column('actor', sa.String(length=160), nullable=False),
        sa.Column('action', sa.String(length=32), nullable=False),
        sa.Column('entity_type', sa.String(length=32), nullable=False),
        sa.Column('entity_id', sa.String(length=64), nullable=True),
        sa.Column('entity_ref', sa.String(length=255), nullable=True),
        sa.Column('account_id', _ID, nullable=True),
        sa.Column('changes', sa.Text(), nullable=False),
        sa.Column('run_id', sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_log')),
    )
    op.create_index('ix_audit_log_account_at', 'audit_log', ['account_id', 'at'], unique=False)
    op.create_index('ix_audit_log_at', 'audit_log', ['at'], unique=False)
    if op.get_bind().dialect.name == 'postgresql':
        op.execute("""
            CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP;
            END $$""")
        op.execute("""
            CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
            FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()""")
    else:
        for event in ('UPDATE', 'DELETE'):
            op.execute(f"""
                CREATE TRIGGER audit_log_no_{event.lower()} BEFORE {event} ON audit_log
                BEGIN SELECT RAISE(ABORT, 'audit_log is append-only: {event} refused'); END""")


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute("DROP TRIGGER IF EXISTS audit_log_append_only ON audit_log")
        op.execute("DROP FUNCTION IF EXISTS audit_log_append_only()")
    else:
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_update")
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_delete")
    op.drop_index('ix_audit_log_at', table_name='audit_log')
    op.drop_index('ix_audit_log_account_at', table_name='audit_log')
    op.drop_table('audit_log')
