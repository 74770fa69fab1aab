"""Push: send pending outbox rows to the CRM, only the fields that differ from what it acked.

Rules kept here:
- Claim (one short transaction; ``FOR UPDATE SKIP LOCKED`` on PostgreSQL): due ``pending`` rows,
  and ``sending`` rows whose pusher is known to be gone (``billing_core.adapters.owner``: at
  once on this host) or whose lease ran out, become ``sending`` with this process as
  ``claimed_by`` and a lease. The CRM call runs outside any transaction; each record's result
  is recorded in a second transaction, which clears the claim.
- What is sent: the fields whose value differs from ``acked_payload`` (everything the first
  time). The connector batches to the CRM's limit (200 per Salesforce collection call, a
  Dataverse ``$batch``); we hand it ``batch_size`` records per call.
- A record refused by the CRM: attempts + 1, retried after an exponential backoff, ``dead``
  after ``max_attempts`` (listed by ``status``). A transport failure or an exhausted API budget
  puts the claimed rows back unchanged (no attempt counted for the budget) and stops the push
  (``stopped``: ``failed: ...`` with the ``error``, or ``stopped: API budget``); so does a
  shutdown, between two calls (``stopped: shutdown``).
- A row whose payload changed while it was being sent stays ``pending`` (the new value goes
  next time); otherwise it becomes ``acked``.
- Documents (``sync.outbox.DOCUMENT_OBJECTS``): a ``document_file`` update carries the PDF bytes
  as ``_pdf``, from ``files(kind, doc_id)`` (the kept file a customer was given); a document
  whose file cannot be had (a template error) fails alone with ``RENDER_ERROR`` and its
  message, like a refusal by the CRM (retried, then dead-lettered naming the document). An
  acknowledged file's ``acked_payload`` also keeps the CRM's id of it (``crm_file_id``).
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, bindparam, case, or_, select, update

from billing_core.adapters import owner
from connectors.base import BudgetExhausted, Connector, ConnectorError
from sync.outbox import decode
from sync.runs import current_run
from sync.states import OutboxState
from sync.tables import outbox, sync_records

log = logging.getLogger(__name__)
LEASE = timedelta(minutes=5)


@dataclass
class PushReport:
    pushed: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    dead: int = 0
    skipped: int = 0
    stopped: str | None = None
    #: The failure that stopped the push (``stopped`` is then ``failed: ...``).
    error: ConnectorError | None = None


def backoff(attempts: int) -> timedelta:
    return timedelta(seconds=min(30 * 2 ** max(attempts - 1, 0), 3600))


def _claim(engine: Engine, connection: str, obj: str, now: datetime, limit: int) -> list[Any]:
    mine = and_(outbox.c.connection == connection, outbox.c.object == obj)
    with engine.begin() as conn:
        gone = owner.gone_among(conn.execute(
            select(outbox.c.claimed_by).where(mine, outbox.c.state == OutboxState.SENDING)
            .distinct()).scalars())
        stale = or_(outbox.c.next_attempt_at <= now, outbox.c.claimed_by.in_(gone)) if gone \
            else outbox.c.next_attempt_at <= now
        due = or_(and_(outbox.c.state == OutboxState.PENDING, outbox.c.next_attempt_at <= now),
                  and_(outbox.c.state == OutboxState.SENDING, stale))
        stmt = select(outbox).where(mine, due).order_by(outbox.c.id).limit(limit)
        if engine.dialect.name == "postgresql":
            stmt = stmt.with_for_update(skip_locked=True)
        rows = list(conn.execute(stmt).mappings())
        if rows:
            conn.execute(update(outbox).where(outbox.c.id.in_([r["id"] for r in rows]))
                         .values(state=OutboxState.SENDING, next_attempt_at=now + LEASE,
                                 claimed_by=owner.current()))
    return rows


def _update(row: Any) -> dict[str, Any]:
    payload = json.loads(row["payload"])
    acked = json.loads(row["acked_payload"]) if row["acked_payload"] else {}
    fields = {k: decode(k, v) for k, v in payload.items()
              if row["acked_payload"] is None or acked.get(k, object()) != v}
    return {"crm_id": row["crm_id"], **fields}


@dataclass(frozen=True)
class _Failed:
    code: str
    message: str
    ok: bool = False


def _attach_files(rows: list[Any], updates: list[dict[str, Any]],
                  files: Callable[[str, int], bytes] | None) -> dict[int, _Failed]:
    """Put each file's bytes on its update; the ones that cannot be had, by position."""
    failed: dict[int, _Failed] = {}
    for i, (row, upd) in enumerate(zip(rows, updates, strict=True)):
        payload = json.loads(row["payload"])
        upd.update({k: decode(k, v) for k, v in payload.items()})   # a file is sent whole
        if files is None:
            failed[i] = _Failed("NO_FILES", "no document renderer given to the push")
            continue
        try:
            upd["_pdf"] = files(str(payload["kind"]), int(payload["doc_id"]))
        except Exception as exc:  # noqa: BLE001 - one document's file fails alone
            failed[i] = _Failed("RENDER_ERROR", f"{payload.get('title')}: {exc}")
    return failed


class _Nothing:
    ok = True
    code = message = None


_NOTHING = _Nothing()


def _add_etags(engine: Engine, connection: str, updates: list[dict[str, Any]]) -> None:
    """A guarded write (the CRM's own hold flag) carries the etag billing last read."""
    ids = [u["crm_id"] for u in updates if "credit_hold" in u]
    with engine.connect() as conn:
        found = {r[0]: json.loads(r[1]).get("etag") for r in conn.execute(
            select(sync_records.c.crm_id, sync_records.c.data).where(
                sync_records.c.connection == connection, sync_records.c.object == "account",
                sync_records.c.crm_id.in_(ids))) if r[1]}
    for u in updates:
        if "credit_hold" in u and found.get(u["crm_id"]):
            u["_etag"] = found[u["crm_id"]]


def _redecide(current: dict[str, Any], update: dict[str, Any]) -> dict[str, Any] | None:
    """After a version conflict: the flag already shows what billing wants → drop it."""
    again = dict(update)
    if "credit_hold" in again and current.get("credit_hold") == again["credit_hold"]:
        again.pop("credit_hold")
    again.pop("_etag", None)
    return again if len(again) > 1 else None


def _release(engine: Engine, rows: list[Any], now: datetime) -> None:
    with engine.begin() as conn:
        conn.execute(update(outbox).where(outbox.c.id.in_([r["id"] for r in rows]),
                                          outbox.c.state == OutboxState.SENDING)
                     .values(state=OutboxState.PENDING, next_attempt_at=now, claimed_by=None))


def push(engine: Engine, connector: Connector, connection: str, *,
         objects: tuple[str, ...] = ("account", "quote"), batch_size: int = 1000,
         max_attempts: int = 8, clock: Callable[[], datetime],
         should_stop: Callable[[], bool] = lambda: False,
         files: Callable[[str, int], bytes] | None = None) -> PushReport:
    report = PushReport()
    for obj in objects:
        while True:
            if should_stop():       # what is claimed is recorded; the rest waits, pending
                report.stopped = "stopped: shutdown"
                return report
            now = clock()
            rows = _claim(engine, connection, obj, now, batch_size)
            if not rows:
                break
            updates = [_update(r) for r in rows]
            if any("credit_hold" in u for u in updates):
                _add_etags(engine, connection, updates)
            if obj == "document_file":
                failed = _attach_files(rows, updates, files)
                if failed:
                    _record(engine, connection, obj, [rows[i] for i in failed],
                            list(failed.values()), clock(), max_attempts, report)
                    keep = [i for i in range(len(rows)) if i not in failed]
                    rows, updates = [rows[i] for i in keep], [updates[i] for i in keep]
                    if not rows:
                        continue
            empty = [i for i, u in enumerate(updates) if len(u) == 1]
            if empty:
                _record(engine, connection, obj, [rows[i] for i in empty],
                        [_NOTHING] * len(empty), clock(), max_attempts, report)
                keep = [i for i in range(len(rows)) if i not in set(empty)]
                rows, updates = [rows[i] for i in keep], [updates[i] for i in keep]
                if not rows:
                    continue
            try:
                results = connector.write(obj, updates, redecide=_redecide)
            except BudgetExhausted as exc:
                _release(engine, rows, now)
                report.stopped = "stopped: API budget"
                log.warning("push stopped connection=%s object=%s: %s", connection, obj, exc)
                return report
            except ConnectorError as exc:
                _release(engine, rows, now)
                report.stopped, report.error = f"failed: {exc}", exc
                log.warning("push failed connection=%s object=%s rows=%s error=%s",
                            connection, obj, len(rows), exc)
                return report
            _record(engine, connection, obj, rows, results, clock(), max_attempts, report)
            if len(rows) < batch_size:
                break
    return report


def _record(engine: Engine, connection: str, obj: str, rows: list[Any], results: list[Any],
            now: datetime, max_attempts: int, report: PushReport) -> None:
    ok = fail = 0
    acked: list[dict[str, Any]] = []
    with engine.begin() as conn:
        for row, result in zip(rows, results, strict=False):
            if result.ok:
                ok += 1
                acked.append({"_id": row["id"], "_payload": _acked_text(obj, row, result),
                              "_hash": row["hash"]})
                continue
            fail += 1
            attempts = row["attempts"] + 1
            error = f"{result.code or 'ERROR'}: {result.message or ''}"[:2000]
            dead = attempts >= max_attempts
            conn.execute(update(outbox).where(outbox.c.id == row["id"]).values(
                attempts=attempts, last_error=error, updated_at=now,
                state=OutboxState.DEAD if dead else OutboxState.PENDING,
                dead_at=now if dead else None, claimed_by=None,
                next_attempt_at=None if dead else now + backoff(attempts)))
            report.dead += dead
            log.warning("push refused run=%s connection=%s object=%s crm_id=%s attempt=%s%s "
                        "error=%s", current_run.get(), connection, obj, row["crm_id"], attempts,
                        " (dead-lettered)" if dead else "", error)
        if acked:
            # One statement for the batch; a row whose payload changed while it was being
            # sent goes back to pending (its new value is sent next time).
            conn.execute(update(outbox).where(outbox.c.id == bindparam("_id")).values(
                acked_payload=bindparam("_payload"), acked_hash=bindparam("_hash"),
                acked_at=now, attempts=0, last_error=None, updated_at=now,
                next_attempt_at=now, claimed_by=None,
                state=case((outbox.c.hash == bindparam("_hash"), OutboxState.ACKED),
                           else_=OutboxState.PENDING)),
                acked)
        missing = rows[len(results):]
        if missing:
            conn.execute(update(outbox).where(outbox.c.id.in_([r["id"] for r in missing]))
                         .values(state=OutboxState.PENDING, next_attempt_at=now, claimed_by=None))
    report.pushed[obj] = report.pushed.get(obj, 0) + ok
    report.failed[obj] = report.failed.get(obj, 0) + fail


def _acked_text(obj: str, row: Any, result: Any) -> str:
    """What the CRM acknowledged: the payload sent, and for a file the CRM's id of it (the
    ContentVersion / annotation), remembered in ``acked_payload`` as ``crm_file_id``."""
    text: str = row["payload"]
    if obj != "document_file" or not result.crm_id or result.crm_id == row["crm_id"]:
        return text
    return json.dumps({**json.loads(text), "crm_file_id": result.crm_id}, sort_keys=True)


def dead_letters(engine: Engine, connection: str | None = None) -> list[dict[str, Any]]:
    stmt = select(outbox).where(outbox.c.state == OutboxState.DEAD).order_by(outbox.c.id)
    if connection:
        stmt = stmt.where(outbox.c.connection == connection)
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(stmt).mappings()]
