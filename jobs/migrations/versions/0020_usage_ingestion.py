"""Usage events ingestion and billable metrics (issue 19)

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-06 20:15:00

Reserved: filled in by the change that builds it.
"""

revision = '0020'
down_revision = '0019'
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
