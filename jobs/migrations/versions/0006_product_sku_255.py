"""products.sku widened to 255 characters (Salesforce's ProductCode allows 255)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 13:10:00

A product whose ProductCode was longer than 80 characters failed its whole page on PostgreSQL
(and was kept whole on SQLite, which does not enforce the length). The sync's boundary now
refuses an SKU beyond 255 with the field named; the column holds every SKU it lets through.

On SQLite the declared length is only a name (the stored text is the same), so the table's
declaration is edited in place instead of the batch mode's copy, drop and rename: dropping
``products`` under ``PRAGMA foreign_keys=ON`` (always on here, and not switchable inside the
migration's transaction) would fail on every database whose prices, orders or invoices name a
product. The schema version is bumped so every connection re-reads the declaration.
"""
import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def _sqlite_declare(old: str, new: str) -> None:
    conn = op.get_bind()
    version = conn.exec_driver_sql("PRAGMA schema_version").scalar()
    conn.exec_driver_sql("PRAGMA writable_schema=ON")
    conn.exec_driver_sql(
        "UPDATE sqlite_master SET sql = replace(sql, ?, ?) WHERE type = 'table' "
        "AND name = 'products'", (f"sku VARCHAR({old}) NOT NULL", f"sku VARCHAR({new}) NOT NULL"))
    conn.exec_driver_sql(f"PRAGMA schema_version={int(version) + 1}")
    conn.exec_driver_sql("PRAGMA writable_schema=OFF")


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _sqlite_declare("80", "255")
        return
    op.alter_column('products', 'sku', existing_type=sa.String(80), type_=sa.String(255),
                    existing_nullable=False)


def downgrade() -> None:
    """Refused while a product's SKU is longer than 80 characters (PostgreSQL says so)."""
    if op.get_bind().dialect.name == "sqlite":
        _sqlite_declare("255", "80")
        return
    op.alter_column('products', 'sku', existing_type=sa.String(255), type_=sa.String(80),
                    existing_nullable=False)
