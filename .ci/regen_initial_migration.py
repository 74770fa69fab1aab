"""Dev tool for the first release only: rewrite the initial migration from the table
definitions (nothing has been released, so no database holds the old one). Once a release
exists, schema changes get new Alembic revisions instead and this tool goes away."""
from __future__ import annotations

import pathlib
import tempfile

from alembic import command

from billing_core.adapters.db import make_engine
from jobs.migrate import alembic_config

versions = pathlib.Path(__file__).resolve().parents[1] / "jobs" / "migrations" / "versions"
for old in versions.glob("*.py"):
    old.unlink()
with tempfile.TemporaryDirectory() as tmp:
    engine = make_engine(f"sqlite:///{tmp}/empty.db")
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.revision(cfg, message="initial schema", autogenerate=True, rev_id="0001")
print("regenerated", *sorted(p.name for p in versions.glob("*.py")))
