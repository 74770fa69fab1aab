"""Account classes: dunning schedule per class (issue 16)

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-06 20:15:00

Reserved: filled in by the change that builds it.
"""

revision = '0023'
down_revision = '0022'
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
