"""The migrations build exactly the tables the code declares, on both databases."""
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from jobs.migrate import current, head, upgrade
from jobs.schema import target_metadata


def test_migrations_match_the_declared_tables(engine):
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), target_metadata())
    assert diff == []


def test_upgrade_is_idempotent(engine):
    assert current(engine) == head()
    assert upgrade(engine) == head()
