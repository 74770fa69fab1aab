"""document_files: the rendered file of each posted document, as the customer got it

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06 17:10:00

The first render of a posted invoice or memo (PDF or HTML) is kept here and served from then
on, so what the customer received can be shown again after the templates, the seller's
details or the account change (docs/DOCUMENTS.md).
"""
import sqlalchemy as sa
from alembic import op

import billing_core.adapters.types

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table(
        'document_files',
        sa.Column('id', _ID, autoincrement=True, nullable=False),
        sa.Column('doc_type', sa.String(length=16), nullable=False),
        sa.Column('doc_id', _ID, nullable=False),
        sa.Column('format', sa.String(length=8), nullable=False),
        sa.Column('template_digest', sa.String(length=64), nullable=False),
        sa.Column('sha256', sa.String(length=64), nullable=False),
        sa.Column('body', sa.LargeBinary(), nullable=False),
        sa.Column('created_at', billing_core.adapters.types.UTCDateTime(timezone=True),
                  nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_document_files')),
        sa.UniqueConstraint('doc_type', 'doc_id', 'format', name=op.f('uq_document_files_doc')),
    )


def downgrade() -> None:
    op.drop_table('document_files')
