"""event_inbox: the CRM's change events, stored before they are acknowledged

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-06 18:10:00

One row per event a CRM posted (Dataverse webhook, Salesforce outbound message or JSON
callout), committed before the CRM is answered; (connection, event_id) unique, so a re-sent
event is acknowledged and stored once. The targeted resync claims ``new`` rows with a lease
(``claimed_by``/``claimed_at``) and marks them ``done`` or ``failed`` (``sync/inbox.py``).
"""
import sqlalchemy as sa
from alembic import op

import billing_core.adapters.types

revision = '0019'
down_revision = '0018'
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
_TS = billing_core.adapters.types.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        'event_inbox',
        sa.Column('id', _ID, autoincrement=True, nullable=False),
        sa.Column('connection', sa.String(length=64), nullable=False),
        sa.Column('source', sa.String(length=24), nullable=False),
        sa.Column('event_id', sa.String(length=160), nullable=False),
        sa.Column('object', sa.String(length=32), nullable=False),
        sa.Column('crm_id', sa.String(length=64), nullable=False),
        sa.Column('action', sa.String(length=32), nullable=False),
        sa.Column('received_at', _TS, nullable=False),
        sa.Column('state', sa.String(length=12), nullable=False),
        sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
        sa.Column('claimed_by', sa.String(length=160), nullable=True),
        sa.Column('claimed_at', _TS, nullable=True),
        sa.Column('processed_at', _TS, nullable=True),
        sa.Column('error', sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_event_inbox')),
        sa.UniqueConstraint('connection', 'event_id', name='uq_event_inbox_event'),
    )
    op.create_index('ix_event_inbox_state', 'event_inbox', ['state', 'connection', 'id'],
                    unique=False)
    op.create_index('ix_event_inbox_record', 'event_inbox',
                    ['connection', 'object', 'crm_id', 'state'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_event_inbox_record', table_name='event_inbox')
    op.drop_index('ix_event_inbox_state', table_name='event_inbox')
    op.drop_table('event_inbox')
