"""products pulled again once: their stored content hashes are cleared

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 12:00:00

Before 0004 a product renamed or deactivated in the CRM never reached billing, yet its new
content hash was saved, so later pulls skipped it as unchanged. Clearing the hashes of product
records and forgetting the product cursors makes the next pull read every product (catalogs
are small) and apply each one through ``pricing.update_product``; nothing else is touched.
"""
from alembic import op


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("UPDATE sync_records SET content_hash = '' WHERE object = 'product'")
    op.execute("DELETE FROM sync_cursors WHERE object = 'product'")


def downgrade() -> None:
    """Nothing to undo: an empty hash and a missing cursor only mean 'read and apply again'."""
