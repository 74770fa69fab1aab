"""The sync engine's own tables (SQLAlchemy Core, own ``metadata``; one Alembic history).

Design (issue 6): one cycle per connection = pull → map → reconcile → hand off → push.

Tables
- ``sync_cursors`` (connection, object) → the connector's opaque cursor, ``updated_at``.
- ``sync_records`` (connection, object, crm_id) → ``ledger_id`` (accounts.id / products.id /
  prices.id; NULL for quotes and lines, which billing does not store), ``content_hash`` of the
  canonical record (modstamp excluded; for quotes and lines, of the stored ``data``),
  ``modstamp``, ``parent_crm_id`` (a line's quote, a quote's account), ``data`` (canonical
  JSON; kept for quotes and quote lines, which wait here until handed off), ``deleted_at``.
  Lines are indexed by quote (partial index: lines only).
- ``quarantine`` (connection, object, crm_id) unique → field, value, reason, the record as JSON,
  first/last seen, attempts, status (``open`` | ``resolved`` | ``dropped``).
- ``handoffs`` (connection, quote crm_id, revision) unique → ``source_ref`` (= the order's
  unique source reference ``<connection>:<quote id>:rev<revision>``), order id, state
  (``waiting`` for its account/lines | ``done`` | ``reversed_in_crm`` reported, never undone).
- ``handoff_looks`` (connection, quote crm_id) primary key → ``noted_at``: a quote the hand-off
  must look at again though it owes no revision (a handed-off quote that changed: its status,
  a deletion, a cancellation date, a line), written with the page that brought the change and
  deleted in the transaction of the hand-off chunk that looked at it. With the ``waiting``
  rows of ``handoffs`` it is everything a cycle's hand-off reads, page by page: nothing of it
  is held in a run's memory, and a run stopped or killed after its pull leaves it for the next.
- ``outbox`` (connection, object, crm_id) unique → what the CRM record should show: ``payload``
  JSON + ``hash``; ``acked_payload`` + ``acked_hash`` (last value the CRM confirmed); state
  (:class:`sync.states.OutboxState`), attempts, next_attempt_at, last_error, dead_at.
- ``sync_runs`` (id, trigger, connection, started/finished, outcome, error, the objects the run
  covered with their API calls) and ``sync_run_objects`` (run, object, read, upserted,
  unchanged, quarantined, deleted, pushed, failed, api_calls, outcome): an object gets its row
  only when something happened to it (a count other than API calls, or an outcome other than
  ``ok``), so a run with nothing to do writes its ``sync_runs`` row alone.

Invariants and transaction boundaries
- One transaction per page: the page's billing upserts, its ``sync_records``/``quarantine``
  rows and the object's cursor commit together (a crash re-reads at most one page, and
  re-applying a page is harmless: upserts are keyed and hashed).
- An unchanged record (same content hash) writes nothing.
- A handoff row and its order are written in one transaction; the order's ``source_ref`` is
  unique, so a quote becomes an order at most once per revision even across crashed runs.
- The outbox is filled after reconcile in its own transaction; push claims rows (``FOR UPDATE
  SKIP LOCKED`` on PostgreSQL), calls the CRM outside any transaction, then records each
  record's result. A crash between CRM write and result only causes one re-send of the same
  values (pushed fields are idempotent), never a lost update.
- ``event_inbox``: one row per CRM change event (``sync.inbox`` has its design), stored
  and committed before the CRM gets its acknowledgement; (connection, event_id) unique.
- A run row is written at start (``running``) and closed at the end with its outcome; a run
  left ``running`` by a killed process is shown as ``abandoned`` by ``status``.
"""
from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from billing_core.adapters.types import Id, UTCDateTime, id_column, new_metadata

metadata = new_metadata()





sync_cursors = Table(
    "sync_cursors", metadata,
    Column("connection", String(64), primary_key=True),
    Column("object", String(32), primary_key=True),
    Column("cursor", Text),
    Column("updated_at", UTCDateTime(), nullable=False),
)

sync_records = Table(
    "sync_records", metadata, id_column(),
    Column("connection", String(64), nullable=False),
    Column("object", String(32), nullable=False),
    Column("crm_id", String(64), nullable=False),
    Column("ledger_id", Id),
    Column("parent_crm_id", String(64)),
    Column("content_hash", String(64), nullable=False),
    Column("modstamp", UTCDateTime()),
    Column("data", Text),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("deleted_at", UTCDateTime()),
    UniqueConstraint("connection", "object", "crm_id", name="uq_sync_records_key"),
    # A quote's lines are looked up by quote (the hand-off); nothing is looked up by a quote's
    # account, so quotes stay out of the index: their parents (accounts) arrive in random order
    # and cost a random index insert each (about 2 s of a 100,000-quote full pull on SQLite).
    Index("ix_sync_records_line_quote", "connection", "parent_crm_id",
          sqlite_where=text("object = 'quote_line'"),
          postgresql_where=text("object = 'quote_line'")),
)

quarantine = Table(
    "quarantine", metadata, id_column(),
    Column("connection", String(64), nullable=False),
    Column("object", String(32), nullable=False),
    Column("crm_id", String(64), nullable=False),
    Column("field", String(64), nullable=False),
    Column("value", Text),
    Column("reason", Text, nullable=False),
    Column("record", Text, nullable=False),
    Column("first_seen", UTCDateTime(), nullable=False),
    Column("last_seen", UTCDateTime(), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="1"),
    Column("status", String(16), nullable=False, server_default="open"),
    UniqueConstraint("connection", "object", "crm_id", name="uq_quarantine_key"),
    Index("ix_quarantine_status", "status"),
)

handoffs = Table(
    "handoffs", metadata, id_column(),
    Column("connection", String(64), nullable=False),
    Column("quote_crm_id", String(64), nullable=False),
    Column("revision", Integer, nullable=False),
    Column("source_ref", String(255), nullable=False, unique=True),
    Column("order_id", Id),
    Column("state", String(24), nullable=False),
    Column("detail", Text),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    UniqueConstraint("connection", "quote_crm_id", "revision", name="uq_handoffs_quote_rev"),
    # What the hand-off owes (waiting rows) is read every cycle: a range of this index, not
    # every hand-off of the connection.
    Index("ix_handoffs_waiting", "connection", "quote_crm_id",
          sqlite_where=text("state = 'waiting'"), postgresql_where=text("state = 'waiting'")),
    # an incremental outbox refresh reads a page of accounts' orders' hand-offs by order id
    # (migration 0025)
    Index("ix_handoffs_order", "order_id"),
)

handoff_looks = Table(
    "handoff_looks", metadata,
    Column("connection", String(64), primary_key=True),
    Column("quote_crm_id", String(64), primary_key=True),
    Column("noted_at", UTCDateTime(), nullable=False),
)


outbox = Table(
    "outbox", metadata, id_column(),
    Column("connection", String(64), nullable=False),
    Column("object", String(32), nullable=False),
    Column("crm_id", String(64), nullable=False),
    Column("ledger_id", Id),
    Column("payload", Text, nullable=False),
    Column("hash", String(64), nullable=False),
    Column("acked_payload", Text),
    Column("acked_hash", String(64)),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", UTCDateTime()),
    Column("last_error", Text),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("acked_at", UTCDateTime()),
    Column("dead_at", UTCDateTime()),
    Column("claimed_by", String(160)),      # pid@host/start of the pusher, while sending
    UniqueConstraint("connection", "object", "crm_id", name="uq_outbox_key"),
    Index("ix_outbox_state", "state", "next_attempt_at"),
)

#: The CRM's change events, stored before they are acknowledged (``sync.inbox``).
event_inbox = Table(
    "event_inbox", metadata, id_column(),
    Column("connection", String(64), nullable=False),
    Column("source", String(24), nullable=False),     # dataverse | salesforce_soap | _json
    Column("event_id", String(160), nullable=False),  # the CRM's id, else a random one
    Column("object", String(32), nullable=False),     # canonical: account, quote, ...
    Column("crm_id", String(64), nullable=False),
    Column("action", String(32), nullable=False),     # Create / Update / Delete / notify
    Column("received_at", UTCDateTime(), nullable=False),
    Column("state", String(12), nullable=False),      # new | processing | done | failed
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("claimed_by", String(160)),
    Column("claimed_at", UTCDateTime()),
    Column("processed_at", UTCDateTime()),
    Column("error", Text),
    UniqueConstraint("connection", "event_id", name="uq_event_inbox_event"),
    Index("ix_event_inbox_state", "state", "connection", "id"),
    Index("ix_event_inbox_record", "connection", "object", "crm_id", "state"),
)

sync_runs = Table(
    "sync_runs", metadata, id_column(),
    Column("trigger", String(32), nullable=False),       # schedule | manual | demo | push
    Column("connection", String(64), nullable=False),
    Column("started_at", UTCDateTime(), nullable=False),
    Column("finished_at", UTCDateTime()),
    # running | ok | partial | stopped: API budget | stopped: shutdown | failed
    Column("outcome", String(32), nullable=False),
    Column("error", Text),
    Column("options", Text),
    Column("api_used", BigInteger),                      # the CRM's allowance as last reported
    Column("api_limit", BigInteger),
    # Every object the run pulled or pushed, with its API calls: compact JSON sorted by object,
    # ``{"account":1,"price":1}`` (so ``LIKE '%"account":%'`` finds the runs that covered it).
    # NULL for runs still running and for runs recorded before it (those have a row per object).
    Column("objects", Text),
    # The API calls of the objects above that got no ``sync_run_objects`` row (nothing else
    # happened to them), so the CRM calls a connection made still add up.
    Column("api_calls", Integer, nullable=False, server_default="0"),
    # read every cycle: the connection's runs still running, its API usage since a time; the
    # table keeps a row per cycle (migration 0025)
    Index("ix_sync_runs_outcome", "outcome", "connection"),
    Index("ix_sync_runs_finished", "connection", "finished_at"),
)

sync_run_objects = Table(
    "sync_run_objects", metadata, id_column(),
    Column("run_id", Id, nullable=False, index=True),
    Column("object", String(32), nullable=False),
    Column("read", Integer, nullable=False, server_default="0"),
    Column("upserted", Integer, nullable=False, server_default="0"),
    Column("unchanged", Integer, nullable=False, server_default="0"),
    Column("quarantined", Integer, nullable=False, server_default="0"),
    Column("deleted", Integer, nullable=False, server_default="0"),
    Column("pushed", Integer, nullable=False, server_default="0"),
    Column("failed", Integer, nullable=False, server_default="0"),
    Column("api_calls", Integer, nullable=False, server_default="0"),
    Column("outcome", String(32), nullable=False),
    UniqueConstraint("run_id", "object", name="uq_sync_run_objects_run_object"),
)
