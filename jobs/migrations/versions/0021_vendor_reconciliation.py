"""Vendor reconciliation: mappings and imported vendor lines (issue 19)

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-06 20:15:00

Reserved: filled in by the change that builds it.
"""

revision = '0021'
down_revision = '0020'
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
