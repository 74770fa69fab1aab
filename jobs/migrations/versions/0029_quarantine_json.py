"""Quarantined records stored as JSON the database reads

Revision ID: 0029
Revises: 0028
Create Date: 2026-12-07 23:50:00

A quarantined record whose value was the JSON token ``NaN`` or ``Infinity`` (a CRM number
parsed as a float) was stored with that bare token, which JSON does not have. The hand-off asks
the database for a refused line's quote (``json_extract`` on SQLite, a ``jsonb`` cast on
PostgreSQL), and the database refused the whole query: no quote of that connection was handed
off again. The sync now stores such a value as the text the CRM sent (``"NaN"``); this
rewrites the records stored before, the same way. Only rows holding one of those tokens are
read; a record Python cannot read either is stored as its text, quoted.
"""
import json
import math
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = '0029'
down_revision = '0028'
branch_labels = None
depends_on = None

_SPELLING = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return _SPELLING.get(repr(value), repr(value))
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _strict(text: str) -> bool:
    def refuse(token: str) -> None:
        raise ValueError(token)
    try:
        json.loads(text, parse_constant=refuse)
    except ValueError:
        return False
    return True


def upgrade() -> None:
    conn = op.get_bind()
    quarantine = sa.table('quarantine', sa.column('id', sa.BigInteger),
                          sa.column('record', sa.Text))
    rows = conn.execute(sa.select(quarantine.c.id, quarantine.c.record).where(sa.or_(
        quarantine.c.record.like('%NaN%'), quarantine.c.record.like('%Infinity%')))).all()
    for row_id, record in rows:
        if _strict(record):
            continue
        try:
            fixed = json.dumps(_finite(json.loads(record)), sort_keys=True, ensure_ascii=True,
                               allow_nan=False)
        except (ValueError, RecursionError):
            fixed = json.dumps({"record": record}, ensure_ascii=True)
        conn.execute(sa.update(quarantine).where(quarantine.c.id == row_id)
                     .values(record=fixed))


def downgrade() -> None:
    """Nothing to undo: the rewritten records are what the sync now stores."""
