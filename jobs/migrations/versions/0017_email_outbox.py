"""accounts.billing_email and email_outbox: documents emailed to billing contacts

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06 17:40:00

An account's billing contacts (addresses joined by ", ", mapped from the CRM or set by
finance); the durable outbox of document emails with one row per (document, recipients, kind)
(docs/DOCUMENTS.md, Email). Existing accounts have no billing email.
"""
import sqlalchemy as sa
from alembic import op

import billing_core.adapters.types

revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
_TS = billing_core.adapters.types.UTCDateTime(timezone=True)


def upgrade() -> None:
    # a plain ADD COLUMN on both databases (a batch copy of accounts would trip its foreign keys)
    op.add_column('accounts', sa.Column('billing_email', sa.String(length=512), nullable=True))
    op.create_table(
        'email_outbox',
        sa.Column('id', _ID, autoincrement=True, nullable=False),
        sa.Column('doc_type', sa.String(length=16), nullable=False),
        sa.Column('doc_id', _ID, nullable=False),
        sa.Column('account_id', _ID, nullable=False),
        sa.Column('recipient', sa.String(length=512), nullable=True),
        sa.Column('kind', sa.String(length=24), nullable=False),
        sa.Column('idempotency_key', sa.String(length=64), nullable=False),
        sa.Column('state', sa.String(length=8), nullable=False),
        sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
        sa.Column('next_attempt_at', _TS, nullable=True),
        sa.Column('last_error', sa.Text(), nullable=True),
        sa.Column('claimed_by', sa.String(length=160), nullable=True),
        sa.Column('claimed_at', _TS, nullable=True),
        sa.Column('sent_at', _TS, nullable=True),
        sa.Column('message_id', sa.String(length=255), nullable=False),
        sa.Column('created_at', _TS, nullable=False),
        sa.Column('updated_at', _TS, nullable=False),
        sa.CheckConstraint("state IN ('queued', 'sending', 'sent', 'failed', 'dead', 'skipped')",
                           name=op.f('ck_email_outbox_state')),
        sa.ForeignKeyConstraint(['account_id'], ['accounts.id'],
                                name=op.f('fk_email_outbox_account_id_accounts')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_email_outbox')),
        sa.UniqueConstraint('idempotency_key', name=op.f('uq_email_outbox_idempotency_key')),
    )
    op.create_index('ix_email_outbox_account_id', 'email_outbox', ['account_id'], unique=False)
    op.create_index('ix_email_outbox_state', 'email_outbox',
                    ['state', 'next_attempt_at', 'id'], unique=False)
    op.create_index('ix_email_outbox_doc', 'email_outbox', ['doc_type', 'doc_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_email_outbox_doc', table_name='email_outbox')
    op.drop_index('ix_email_outbox_state', table_name='email_outbox')
    op.drop_index('ix_email_outbox_account_id', table_name='email_outbox')
    op.drop_table('email_outbox')
    op.drop_column('accounts', 'billing_email')
