"""Database fixtures shared by every test layer.

``engine`` is parametrised over SQLite and PostgreSQL, so every test that uses it runs on both.
- SQLite: the migrations run once into a template file; each test gets a fresh copy.
- PostgreSQL (``LEDGERBRIDGE_TEST_PG_URL``, default the machine's ``test`` database): one
  schema per pytest process (so parallel runs never meet), migrated once; each test starts
  from empty tables (TRUNCATE ... RESTART IDENTITY).
Without PostgreSQL the PostgreSQL half skips with a reason, unless CI=true, where it fails:
a check that CI never runs is a defect.
"""
from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from billing_core.adapters.db import UnitOfWork, make_engine
from jobs.migrate import upgrade

PG_URL = os.environ.get("LEDGERBRIDGE_TEST_PG_URL",
                        "postgresql://postgres@127.0.0.1:5432/test")


def _pg_reachable() -> str | None:
    try:
        engine = make_engine(PG_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
        return None
    except (SQLAlchemyError, OSError) as exc:  # cannot connect: not available here
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "ledger.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture(scope="session")
def pg_schema_url() -> Iterator[str]:
    problem = _pg_reachable()
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL at {PG_URL} is required on CI and unreachable: {problem}")
        pytest.skip(f"PostgreSQL not reachable at {PG_URL} ({problem}); set CI=true to fail")
    schema = f"lbtest_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = make_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = make_engine(PG_URL, connect_args={"options": f"-csearch_path={schema}"})
    upgrade(engine)
    engine.dispose()
    try:
        yield schema
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def pg_engine_for(schema: str) -> Engine:
    return make_engine(PG_URL, connect_args={"options": f"-csearch_path={schema}",
                                             "connect_timeout": 10})


def _truncate_all(engine: Engine) -> None:
    with engine.begin() as conn:
        names = [r[0] for r in conn.execute(text(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
            "AND tablename != 'alembic_version'"))]
        if names:
            conn.execute(text("TRUNCATE " + ", ".join(f'"{n}"' for n in names)
                              + " RESTART IDENTITY CASCADE"))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A migrated, empty ledger database: SQLite, then PostgreSQL."""
    if request.param == "sqlite":
        path = tmp_path / "ledger.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        eng = make_engine(f"sqlite:///{path}")
    else:
        eng = pg_engine_for(request.getfixturevalue("pg_schema_url"))
        _truncate_all(eng)
    try:
        yield eng
    finally:
        eng.dispose()


@pytest.fixture
def sqlite_engine(tmp_path: Path, sqlite_template: Path) -> Iterator[Engine]:
    """SQLite only, for tests about SQLite behaviour or too slow to double."""
    path = tmp_path / "ledger.db"
    shutil.copy(sqlite_template, path)
    eng = make_engine(f"sqlite:///{path}")
    yield eng
    eng.dispose()


@pytest.fixture
def pg_engine(pg_schema_url: str) -> Iterator[Engine]:
    """PostgreSQL only (concurrency tests)."""
    eng = pg_engine_for(pg_schema_url)
    _truncate_all(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def uow(engine: Engine) -> Iterator[UnitOfWork]:
    with UnitOfWork(engine) as unit:
        yield unit


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def blank_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An empty, unmigrated database of each kind (for migration tests: upgrade it to the
    revision before the one under test, fill it, then upgrade)."""
    if request.param == "sqlite":
        eng = make_engine(f"sqlite:///{tmp_path / 'blank.db'}")
        try:
            yield eng
        finally:
            eng.dispose()
        return
    schema = f"{request.getfixturevalue('pg_schema_url')}_blank"
    admin = make_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    eng = pg_engine_for(schema)
    try:
        yield eng
    finally:
        eng.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()
