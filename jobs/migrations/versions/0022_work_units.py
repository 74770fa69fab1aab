"""Work units: partitioned work claimed with SKIP LOCKED and leases (issue 18)

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-06 20:15:00

Reserved: filled in by the change that builds it.
"""

revision = '0022'
down_revision = '0021'
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
