"""The ledger's tables (SQLAlchemy Core). Only ``billing_core.service`` reads or writes them.

Conventions
- Money columns end in ``_minor``: integers of the document currency's minor units (exact on
  every database). Unit prices, quantities and rates are ``ExactDecimal``.
- Every timestamp is aware UTC (``UTCDateTime``); business dates (periods, due dates) are ``Date``.
- Nothing is ever deleted: accounts become ``crm_deleted``, documents become ``void`` /
  ``cancelled``, applications are reversed (``reversed_at``), hold reasons are lifted into
  ``hold_history``.

Invariants (kept by the service layer, checked by tests, several backed by constraints)
- ``0 <= applied_minor <= total/amount`` on every document (CHECK constraints);
- ``document.applied_minor`` = sum of its live ``applications``; ``payments.applied_minor`` and
  ``credit_memos.applied_minor`` likewise as sources;
- ``credit_grants.remaining_minor`` >= 0 and = amount - draws - converted;
- one live (non-void) invoice per account and period start: a partial unique index, so two
  racing bill runs cannot both bill a period;
- a charge is billed by one live invoice only, whatever period each run bills: the bill run
  marks the lines that bill a charge (``claims_charge``: a subscription's not-yet-billed range,
  a one-time charge) and partial unique indexes allow one claiming line per (subscription,
  period start) and per one-time charge; voiding an invoice clears its lines' claims. Usage
  events, quantity changes and charges point at one invoice (``invoice_id``), set only while
  empty; a grant's ``remaining_minor`` never goes below zero;
- invoice numbers are unique and gapless per series: taken from ``number_sequences`` in the
  posting transaction (row lock), so a rolled-back posting leaves no gap.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from billing_core.adapters.types import ExactDecimal, Id, UTCDateTime, id_column, new_metadata

metadata = new_metadata()


def _fk(name: str, target: str, nullable: bool = False) -> Column[int]:
    return Column(name, Id, ForeignKey(f"{target}.id"), nullable=nullable, index=True)


def _created() -> Column[datetime]:
    return Column("created_at", UTCDateTime(), nullable=False)


accounts = Table(
    "accounts", metadata, id_column(),
    Column("ext_source", String(64), nullable=False),   # connection name, or "local"
    Column("ext_object", String(64), nullable=False),   # e.g. "Account", "accounts"
    Column("ext_id", String(64), nullable=False),       # the CRM id
    Column("name", String(255), nullable=False),
    Column("number", String(64)),                       # CRM account number, informative
    Column("currency", String(3), nullable=False),
    Column("country", String(2)),
    Column("region", String(64)),
    Column("bill_cycle_day", Integer, nullable=False, server_default="1"),
    Column("payment_terms_days", Integer, nullable=False, server_default="30"),
    Column("credit_limit_minor", BigInteger),            # NULL = no limit set
    Column("crm_hold", Boolean, nullable=False, server_default=text("false")),
    Column("status", String(16), nullable=False, server_default="active"),
    _created(),
    Column("updated_at", UTCDateTime(), nullable=False),
    # finance's: billed without tax whatever the country (the CRM does not send it)
    Column("tax_exempt", Boolean, nullable=False, server_default=text("false")),
    # finance's limit, used instead of the CRM's credit_limit_minor when set (NULL: none)
    Column("credit_limit_override_minor", BigInteger),
    # where documents are emailed: addresses joined by ", " (CRM-mapped or finance's; NULL: none)
    Column("billing_email", String(512)),
    # the account's class (lower-case name; NULL: none): chooses its dunning schedule
    Column("account_class", String(64)),
    UniqueConstraint("ext_source", "ext_object", "ext_id", name="uq_accounts_ext"),
    # usage ingestion and resolve_account look accounts up by ext_id alone (migration 0025)
    Index("ix_accounts_ext_id", "ext_id"),
    CheckConstraint("bill_cycle_day BETWEEN 1 AND 31", name="bcd"),
    CheckConstraint("payment_terms_days >= 0", name="terms"),
    CheckConstraint("credit_limit_minor IS NULL OR credit_limit_minor >= 0", name="limit"),
    CheckConstraint("status IN ('active', 'crm_deleted')", name="status"),
)

products = Table(
    "products", metadata, id_column(),
    Column("sku", String(255), nullable=False, unique=True),   # Salesforce ProductCode: 255
    Column("name", String(255), nullable=False),
    # recurring: billed per unit per period; one_time: once; usage: rated from usage events
    Column("kind", String(16), nullable=False),
    Column("billing_period", String(8)),                 # 'month' | 'year' (recurring only)
    Column("pricing_model", String(16), nullable=False, server_default="per_unit"),
    Column("needs_provisioning", Boolean, nullable=False, server_default=text("false")),
    Column("active", Boolean, nullable=False, server_default=text("true")),
    Column("ext_source", String(64)),
    Column("ext_id", String(64)),
    _created(),
    # committed terms (billing_core/domain/terms.py): defaults for new subscriptions, and the
    # policy for a decrease / an end inside a term; the service checks the values
    Column("term_months", Integer),                      # NULL = no term
    Column("auto_renew", Boolean, nullable=False, server_default=text("false")),
    Column("term_decrease", String(16), nullable=False, server_default="at_term_end"),
    Column("early_termination", String(16), nullable=False, server_default="at_term_end"),
    UniqueConstraint("ext_source", "ext_id", name="uq_products_ext"),
    CheckConstraint("kind IN ('recurring', 'one_time', 'usage')", name="kind"),
    CheckConstraint("pricing_model IN ('per_unit', 'graduated', 'volume')", name="model"),
)

prices = Table(
    "prices", metadata, id_column(),
    _fk("product_id", "products"),
    Column("currency", String(3), nullable=False),
    Column("effective_from", Date, nullable=False),      # applies from this day on
    Column("unit_price", ExactDecimal(), nullable=False),  # per unit (per period if recurring)
    _created(),
    UniqueConstraint("product_id", "currency", "effective_from", name="uq_prices_effective"),
)

price_tiers = Table(
    "price_tiers", metadata, id_column(),
    _fk("price_id", "prices"),
    Column("up_to", ExactDecimal()),                      # inclusive upper bound; NULL = no bound
    Column("unit_price", ExactDecimal(), nullable=False),
    Column("flat_fee_minor", BigInteger, nullable=False, server_default="0"),
)

tax_rates = Table(
    "tax_rates", metadata, id_column(),
    Column("country", String(2), nullable=False),
    Column("region", String(64), nullable=False, server_default=""),   # "" = whole country
    Column("rate", ExactDecimal(), nullable=False),       # 0.2 = 20 %
    Column("name", String(64), nullable=False),
    Column("effective_from", Date, nullable=False),
    UniqueConstraint("country", "region", "effective_from", name="uq_tax_rates_effective"),
)

orders = Table(
    "orders", metadata, id_column(),
    _fk("account_id", "accounts"),
    Column("source_ref", String(255), nullable=False, unique=True),  # e.g. "sf:0Q0...:rev1"
    Column("amends_order_id", Id, ForeignKey("orders.id")),
    # the order of the deal this renewal order renews; no FK: SQLite cannot add one to an
    # existing table without copying it
    Column("renews_order_id", Id),
    # accepted: taken, not yet activated; held: waiting for a hold release; active; cancelled
    Column("status", String(16), nullable=False),
    Column("order_date", Date, nullable=False),
    Column("activated_at", UTCDateTime()),
    _created(),
    CheckConstraint("status IN ('accepted', 'held', 'active', 'cancelled')", name="status"),
    # a deal's newest order is found forward, order by order (deals.deal_head)
    Index("ix_orders_amends", "amends_order_id"),
)

subscriptions = Table(
    "subscriptions", metadata, id_column(),
    _fk("account_id", "accounts"),
    _fk("order_id", "orders", nullable=True),
    _fk("product_id", "products"),
    Column("quantity", ExactDecimal(), nullable=False),
    Column("unit_price", ExactDecimal()),                # negotiated price; NULL = catalog price
    Column("frequency", String(8), nullable=False),      # 'monthly' | 'annual'
    Column("start_date", Date, nullable=False),
    Column("end_date", Date),                            # exclusive; NULL = open-ended
    Column("status", String(16), nullable=False),        # pending | active | cancelled
    Column("billed_through", Date),                      # recurring charges billed up to (excl.)
    _created(),
    # the commitment (billing_core/domain/terms.py): the first term runs [start_date, term_end)
    Column("term_months", Integer),                      # NULL = no term
    Column("term_end", Date),
    Column("auto_renew", Boolean, nullable=False, server_default=text("false")),
    CheckConstraint("frequency IN ('monthly', 'annual')", name="frequency"),
    CheckConstraint("status IN ('pending', 'active', 'cancelled')", name="status"),
)

subscription_changes = Table(
    "subscription_changes", metadata, id_column(),
    _fk("subscription_id", "subscriptions"),
    Column("effective_date", Date, nullable=False),
    Column("old_quantity", ExactDecimal(), nullable=False),
    Column("new_quantity", ExactDecimal(), nullable=False),
    Column("invoice_id", Id, ForeignKey("invoices.id"), index=True),   # set once prorated
    Column("status", String(16), nullable=False, server_default="active"),  # pending while held
    _created(),
)

one_time_charges = Table(
    "one_time_charges", metadata, id_column(),
    _fk("account_id", "accounts"),
    _fk("order_id", "orders", nullable=True),
    _fk("product_id", "products"),
    Column("quantity", ExactDecimal(), nullable=False),
    Column("unit_price", ExactDecimal()),
    Column("charge_date", Date, nullable=False),
    Column("status", String(16), nullable=False, server_default="active"),  # pending while held
    Column("invoice_id", Id, ForeignKey("invoices.id")),   # set once billed
    _created(),
    # equality first: a chunk's unbilled charges are one seek, with or without statistics
    Index("ix_one_time_charges_unbilled", "invoice_id", "account_id"),
)

# What each amendment order changed in its deal (sync hands off a quote revision as one):
# quantity (change_id), added (the new subscription / one-time charge), removed (the
# subscription it ended on effective_date).
amendment_items = Table(
    "amendment_items", metadata, id_column(),
    _fk("order_id", "orders"),
    Column("action", String(16), nullable=False),
    _fk("product_id", "products"),
    _fk("subscription_id", "subscriptions", nullable=True),
    _fk("one_time_charge_id", "one_time_charges", nullable=True),
    _fk("change_id", "subscription_changes", nullable=True),
    Column("old_quantity", ExactDecimal()),
    Column("new_quantity", ExactDecimal()),
    Column("effective_date", Date, nullable=False),
    _created(),
    CheckConstraint("action IN ('quantity', 'added', 'removed', 'one_time')", name="action"),
)

usage_events = Table(
    "usage_events", metadata, id_column(),
    Column("event_id", String(128), nullable=False, unique=True),
    _fk("account_id", "accounts"),
    _fk("product_id", "products"),
    Column("quantity", ExactDecimal(), nullable=False),
    Column("occurred_at", UTCDateTime(), nullable=False),
    Column("invoice_id", Id, ForeignKey("invoices.id")),   # set once rated
    _created(),
    # equality first (migration 0024): a chunk's unbilled usage is one seek
    Index("ix_usage_unbilled", "invoice_id", "account_id", "occurred_at"),
)

# Billable metrics (billing_core.service.usage_metrics): effective-dated definitions, one row
# per (code, effective_from); a later row replaces an earlier one from its date on.
usage_metrics = Table(
    "usage_metrics", metadata, id_column(),
    Column("code", String(64), nullable=False),
    Column("effective_from", Date, nullable=False),
    Column("aggregation", String(16), nullable=False),   # count|sum|max|unique_count|latest
    Column("property", String(64)),                       # unique_count: the property counted
    Column("filters", Text),                              # JSON {"property": ["value", ...]}
    Column("group_by", String(64)),                       # one invoice line per its value
    _fk("product_id", "products"),
    Column("description", String(255)),
    _created(),
    UniqueConstraint("code", "effective_from", name="uq_usage_metrics_code_from"),
    CheckConstraint("aggregation IN ('count', 'sum', 'max', 'unique_count', 'latest')",
                    name="aggregation"),
)

# Raw metered events (billing_core.service.usage_ingest): append-only; the raw columns never
# change, ``invoice_id`` is the bill run's mark (set once, cleared only by voiding).
metered_events = Table(
    "metered_events", metadata, id_column(),
    Column("event_id", String(128), nullable=False),
    Column("account_id", Id, ForeignKey("accounts.id"), nullable=False),
    Column("metric_code", String(64), nullable=False),
    Column("occurred_at", UTCDateTime(), nullable=False),
    Column("value", ExactDecimal(), nullable=False),
    # value x 10^6 as an integer: SQL sums and maxima stay exact on SQLite too
    Column("value_e6", BigInteger, nullable=False),
    Column("properties", JSON().with_variant(JSONB(), "postgresql")),
    Column("replaces", String(128)),                      # the event id this one corrects
    Column("received_at", UTCDateTime(), nullable=False),
    Column("invoice_id", Id, ForeignKey("invoices.id")),
    UniqueConstraint("event_id", name="uq_metered_events_event_id"),
    Index("ix_metered_events_account", "account_id", "occurred_at"),
    # equality first: usage rating's unbilled read (invoice_id IS NULL, account_id IN a
    # group, occurred_at < cutoff) seeks to the group without statistics (migration 0025)
    Index("ix_metered_events_unbilled", "invoice_id", "account_id", "occurred_at"),
    # an event is replaced at most once
    Index("uq_metered_events_replaces", "replaces", unique=True,
          sqlite_where=text("replaces IS NOT NULL"), postgresql_where=text("replaces IS NOT NULL")),
)

# What each metered usage line billed (billing_core.service.usage_rating): the base of the
# adjustment a late or corrected event makes on a later invoice.
usage_ratings = Table(
    "usage_ratings", metadata, id_column(),
    Column("invoice_id", Id, ForeignKey("invoices.id"), nullable=False),
    Column("line_no", Integer, nullable=False),
    Column("account_id", Id, ForeignKey("accounts.id"), nullable=False),
    Column("metric_code", String(64), nullable=False),
    Column("group_value", String(255)),
    Column("period_start", Date, nullable=False),
    Column("period_end", Date, nullable=False),
    Column("quantity", ExactDecimal(), nullable=False),   # the aggregate (or its change)
    Column("events", Integer, nullable=False),            # events aggregated
    Column("amount_minor", BigInteger, nullable=False),   # priced, before tax
    Column("adjustment", Boolean, nullable=False, server_default=text("false")),
    Index("ix_usage_ratings_key", "account_id", "metric_code", "period_start"),
    Index("ix_usage_ratings_invoice", "invoice_id"),
)

bill_runs = Table(
    "bill_runs", metadata, id_column(),
    Column("run_date", Date, nullable=False),
    Column("started_at", UTCDateTime(), nullable=False),
    Column("finished_at", UTCDateTime()),
    Column("status", String(16), nullable=False),  # running | finished | failed | abandoned
    Column("invoices_created", Integer, nullable=False, server_default="0"),
    Column("error", Text),
    Column("claimed_by", String(160)),                   # pid@host/start of the running process
)

number_sequences = Table(
    "number_sequences", metadata,
    Column("series", String(32), primary_key=True),      # e.g. "INV", "CM", "DM"
    Column("next_number", BigInteger, nullable=False),
)

invoices = Table(
    "invoices", metadata, id_column(),
    _fk("account_id", "accounts"),
    Column("currency", String(3), nullable=False),
    Column("series", String(32), nullable=False, server_default="INV"),
    Column("number", String(40), unique=True),           # assigned when posted
    Column("status", String(16), nullable=False),
    Column("period_start", Date, nullable=False),
    Column("period_end", Date, nullable=False),
    Column("issue_date", Date, nullable=False),
    Column("due_date", Date, nullable=False),
    Column("subtotal_minor", BigInteger, nullable=False),
    Column("tax_minor", BigInteger, nullable=False),
    Column("total_minor", BigInteger, nullable=False),
    Column("applied_minor", BigInteger, nullable=False, server_default="0"),
    _fk("bill_run_id", "bill_runs", nullable=True),
    _created(),
    Column("posted_at", UTCDateTime()),
    Column("voided_at", UTCDateTime()),
    CheckConstraint("status IN ('draft', 'posted', 'partially_paid', 'paid', 'void')",
                    name="status"),
    CheckConstraint("total_minor >= 0", name="total"),
    CheckConstraint("applied_minor >= 0 AND applied_minor <= total_minor", name="applied"),
    Index("uq_invoices_account_period", "account_id", "period_start", unique=True,
          sqlite_where=text("status != 'void'"), postgresql_where=text("status != 'void'")),
    # the open invoices by due date: what is past due, read hourly by credit control, daily by
    # the outbox refresh and the dunning run (migration 0028); a paid one leaves it
    Index("ix_invoices_open_due", "due_date",
          sqlite_where=text("status IN ('posted', 'partially_paid')"),
          postgresql_where=text("status IN ('posted', 'partially_paid')")),
)

invoice_lines = Table(
    "invoice_lines", metadata, id_column(),
    # no index of its own: uq_invoice_lines_no (invoice_id, line_no) serves lookups by invoice,
    # and the bill run writes ~4 lines per invoice (one index less per line)
    Column("invoice_id", Id, ForeignKey("invoices.id"), nullable=False),
    Column("line_no", Integer, nullable=False),
    # recurring | proration | one_time | usage | credit_draw
    Column("kind", String(16), nullable=False),
    Column("description", String(255), nullable=False),
    Column("product_id", Id, ForeignKey("products.id")),
    Column("subscription_id", Id, ForeignKey("subscriptions.id")),
    Column("quantity", ExactDecimal()),
    Column("unit_price", ExactDecimal()),
    Column("period_start", Date),
    Column("period_end", Date),
    Column("amount_minor", BigInteger, nullable=False),  # rounded once; negative for credits
    Column("tax_rate", ExactDecimal()),
    Column("tax_minor", BigInteger, nullable=False, server_default="0"),
    Column("one_time_charge_id", Id, ForeignKey("one_time_charges.id")),  # a one_time line's
    # True while the line is its charge's one live billing (set by the bill run on a
    # subscription's range lines, not on catch-up prorations of periods billed before, and on
    # one-time lines; cleared when the invoice is voided, which frees the charge)
    Column("claims_charge", Boolean, nullable=False, server_default=text("false")),
    UniqueConstraint("invoice_id", "line_no", name="uq_invoice_lines_no"),
    Index("uq_invoice_lines_period", "subscription_id", "period_start", unique=True,
          sqlite_where=text("claims_charge"), postgresql_where=text("claims_charge")),
    Index("uq_invoice_lines_one_time", "one_time_charge_id", unique=True,
          sqlite_where=text("claims_charge"), postgresql_where=text("claims_charge")),
)

invoice_taxes = Table(
    # one row per tax rate on an invoice: the taxable base after credits and its tax, rounded
    # once; the lines' tax_minor at that rate add up to tax_minor (rate 0 has no row)
    "invoice_taxes", metadata, id_column(),
    Column("invoice_id", Id, ForeignKey("invoices.id"), nullable=False),
    Column("tax_rate", ExactDecimal(), nullable=False),
    Column("base_minor", BigInteger, nullable=False),
    Column("tax_minor", BigInteger, nullable=False),
    UniqueConstraint("invoice_id", "tax_rate", name="uq_invoice_taxes_rate"),
)

credit_memos = Table(
    "credit_memos", metadata, id_column(),
    _fk("account_id", "accounts"),
    Column("currency", String(3), nullable=False),
    Column("number", String(40), unique=True),           # assigned when activated
    # draft | active | partially_applied | applied | cancelled
    Column("status", String(20), nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("applied_minor", BigInteger, nullable=False, server_default="0"),
    Column("reason", String(255), nullable=False),
    # manual | invoice_overflow | credit_conversion
    Column("origin", String(32), nullable=False, server_default="manual"),
    Column("origin_invoice_id", Id, ForeignKey("invoices.id")),
    Column("origin_grant_id", Id, ForeignKey("credit_grants.id")),
    _created(),
    Column("activated_at", UTCDateTime()),
    Column("cancelled_at", UTCDateTime()),
    CheckConstraint("amount_minor > 0", name="amount"),
    CheckConstraint("applied_minor >= 0 AND applied_minor <= amount_minor", name="applied"),
    # voiding an invoice reads and cancels its overflow memos (migration 0025)
    Index("ix_credit_memos_origin_invoice", "origin_invoice_id"),
)

debit_memos = Table(
    "debit_memos", metadata, id_column(),
    _fk("account_id", "accounts"),
    Column("currency", String(3), nullable=False),
    Column("number", String(40), unique=True),           # assigned when activated
    # draft | active | partially_paid | paid | cancelled
    Column("status", String(20), nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("applied_minor", BigInteger, nullable=False, server_default="0"),
    Column("reason", String(255), nullable=False),
    Column("issue_date", Date),
    Column("due_date", Date),
    _created(),
    Column("activated_at", UTCDateTime()),
    Column("cancelled_at", UTCDateTime()),
    CheckConstraint("amount_minor > 0", name="amount"),
    CheckConstraint("applied_minor >= 0 AND applied_minor <= amount_minor", name="applied"),
    # the open debit memos by due date (as ``ix_invoices_open_due``; migration 0028)
    Index("ix_debit_memos_open_due", "due_date",
          sqlite_where=text("status IN ('active', 'partially_paid')"),
          postgresql_where=text("status IN ('active', 'partially_paid')")),
)

payments = Table(
    "payments", metadata, id_column(),
    _fk("account_id", "accounts"),
    Column("currency", String(3), nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("applied_minor", BigInteger, nullable=False, server_default="0"),
    Column("received_on", Date, nullable=False),
    Column("reference", String(128), nullable=False),
    Column("method", String(32)),
    _created(),
    UniqueConstraint("account_id", "reference", name="uq_payments_reference"),
    # find_payment looks a payment up by reference alone (migration 0025)
    Index("ix_payments_reference", "reference"),
    CheckConstraint("amount_minor > 0", name="amount"),
    CheckConstraint("applied_minor >= 0 AND applied_minor <= amount_minor", name="applied"),
)

# A credit memo or payment (source) settling an invoice or debit memo (target).
applications = Table(
    "applications", metadata, id_column(),
    _fk("account_id", "accounts"),
    Column("source_type", String(16), nullable=False),   # credit_memo | payment
    Column("source_id", Id, nullable=False),
    Column("target_type", String(16), nullable=False),   # invoice | debit_memo
    Column("target_id", Id, nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("applied_at", UTCDateTime(), nullable=False),
    Column("reversed_at", UTCDateTime()),                # set by unapply; rows are never deleted
    CheckConstraint("amount_minor > 0", name="amount"),
    Index("ix_applications_source", "source_type", "source_id"),
    Index("ix_applications_target", "target_type", "target_id"),
)

credit_grants = Table(
    "credit_grants", metadata, id_column(),
    _fk("account_id", "accounts"),
    Column("currency", String(3), nullable=False),
    Column("kind", String(16), nullable=False),          # purchased | granted | memo_return
    Column("amount_minor", BigInteger, nullable=False),
    Column("remaining_minor", BigInteger, nullable=False),
    Column("expires_on", Date),                          # NULL = never
    Column("source", String(128), nullable=False),
    Column("reason", String(255), nullable=False),
    # credit_memos.id of a memo turned back into pool credit; no FK, the two tables refer to
    # each other and SQLite cannot add a constraint after the fact.
    Column("origin_credit_memo_id", Id),
    _created(),
    CheckConstraint("amount_minor > 0", name="amount"),
    CheckConstraint("remaining_minor >= 0 AND remaining_minor <= amount_minor", name="remaining"),
)

credit_draws = Table(
    "credit_draws", metadata, id_column(),
    _fk("grant_id", "credit_grants"),
    _fk("invoice_id", "invoices", nullable=True),
    Column("kind", String(16), nullable=False),          # usage | conversion | expiry
    Column("amount_minor", BigInteger, nullable=False),
    Column("credit_memo_id", Id, ForeignKey("credit_memos.id")),
    _created(),
    CheckConstraint("amount_minor > 0", name="amount"),
)

# --- credit control and the provisioning gate -------------------------------------------

hold_reasons = Table(
    "hold_reasons", metadata, id_column(),
    _fk("account_id", "accounts"),
    Column("reason", String(16), nullable=False),        # crm | credit_limit | overdue | manual
    # who placed it: crm:<connection>, billing, admin:<name>
    Column("source", String(64), nullable=False),
    Column("placed_at", UTCDateTime(), nullable=False),
    Column("details", Text, nullable=False),             # JSON: exposure/limit/note/...
    UniqueConstraint("account_id", "reason", name="uq_hold_reasons_account_reason"),
    CheckConstraint("reason IN ('crm', 'credit_limit', 'overdue', 'manual')", name="reason"),
)

hold_history = Table(
    "hold_history", metadata, id_column(),
    _fk("account_id", "accounts"),
    Column("reason", String(16), nullable=False),
    Column("action", String(8), nullable=False),         # placed | lifted
    Column("actor", String(64), nullable=False),
    Column("at", UTCDateTime(), nullable=False),
    Column("details", Text, nullable=False),
)

provisioning_requests = Table(
    "provisioning_requests", metadata, id_column(),
    Column("account_id", Id, ForeignKey("accounts.id"), nullable=False),
    _fk("order_id", "orders"),
    Column("subscription_id", Id, ForeignKey("subscriptions.id")),
    Column("one_time_charge_id", Id, ForeignKey("one_time_charges.id")),
    _fk("product_id", "products"),
    Column("quantity", ExactDecimal(), nullable=False),
    # pending | awaiting_hold_release | dispatching | dispatched | provisioned | failed |
    # cancelled | superseded
    Column("state", String(24), nullable=False),
    Column("idempotency_key", String(64), nullable=False, unique=True),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("last_error", Text),
    Column("next_attempt_at", UTCDateTime()),
    Column("claimed_by", String(160)),      # pid@host/start of the dispatcher, while dispatching
    _created(),
    Column("updated_at", UTCDateTime(), nullable=False),
    # what the request does: provision (an order's item) | increase | decrease | deprovision
    # (the subscription's end), and from when (NULL: at once; not dispatched before that day)
    Column("change_kind", String(16), nullable=False, server_default="provision"),
    Column("effective_date", Date),
    Index("ix_provisioning_state", "state", "id"),
    Index("ix_provisioning_account_state", "account_id", "state"),
    Index("ix_provisioning_subscription", "subscription_id", "id"),
)

# What a customer was given: the rendered file of a posted document, written the first time it
# is rendered after posting and served from then on (billing_core/service/document_files.py),
# so a later template or account change never alters a document already issued.
document_files = Table(
    "document_files", metadata, id_column(),
    Column("doc_type", String(16), nullable=False),      # invoice | credit_memo | debit_memo
    Column("doc_id", Id, nullable=False),
    Column("format", String(8), nullable=False),         # pdf | html
    Column("template_digest", String(64), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("body", LargeBinary, nullable=False),
    _created(),
    UniqueConstraint("doc_type", "doc_id", "format", name="uq_document_files_doc"),
)

# Emails of documents, queued by an idempotent step after the bill run and sent by jobs/mailer.py
# (billing_core/service/email_outbox.py; docs/DOCUMENTS.md, Email). One row per (document,
# recipient list, kind): the idempotency key is unique, so a document is queued once whatever retries.
email_outbox = Table(
    "email_outbox", metadata, id_column(),
    Column("doc_type", String(16), nullable=False),      # invoice | credit_memo | debit_memo
    Column("doc_id", Id, nullable=False),
    _fk("account_id", "accounts"),
    Column("recipient", String(512)),                    # addresses joined by ", "; NULL: none
    Column("kind", String(24), nullable=False),          # invoice | credit_memo | debit_memo |
                                                         # reminder_<offset>
    Column("idempotency_key", String(64), nullable=False, unique=True),
    # queued | sending | sent | failed | dead | skipped (a reminder of a document settled meanwhile)
    Column("state", String(8), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", UTCDateTime()),
    Column("last_error", Text),
    Column("claimed_by", String(160)),                   # pid@host/start while sending
    Column("claimed_at", UTCDateTime()),
    Column("sent_at", UTCDateTime()),
    Column("message_id", String(255), nullable=False),
    _created(),
    Column("updated_at", UTCDateTime(), nullable=False),
    Index("ix_email_outbox_state", "state", "next_attempt_at", "id"),
    Index("ix_email_outbox_doc", "doc_type", "doc_id"),
    CheckConstraint("state IN ('queued', 'sending', 'sent', 'failed', 'dead', 'skipped')",
                    name="state"),
)

# Append-only: written by ``billing_core/service/audit.py`` in the transaction of the change it
# records; no code updates or deletes a row (a trigger refuses it on both databases).
audit_log = Table(
    "audit_log", metadata, id_column(),
    Column("at", UTCDateTime(), nullable=False),
    Column("actor", String(160), nullable=False),        # cli:<user> | api:<token> | sync:<c> | system
    Column("action", String(32), nullable=False),        # created | posted | voided | applied | ...
    Column("entity_type", String(32), nullable=False),   # invoice | payment | account | ...
    Column("entity_id", String(64)),                     # the row's id (text: some keys are not ints)
    Column("entity_ref", String(255)),                   # its number / name / external reference
    Column("account_id", Id),                            # no foreign key: the trail outlives rows
    Column("changes", Text, nullable=False),             # JSON {"field": [before, after], ...}
    Column("run_id", String(64)),                        # request / run id, when known
    Index("ix_audit_log_account_at", "account_id", "at"),
    Index("ix_audit_log_at", "at"),
)

# Partitioned work (``billing_core/adapters/work_units.py``): one row per unit of a job (a bill
# run's account-id ranges, a backlog's row ranges), claimed with a lease, done once.
work_units = Table(
    "work_units", metadata, id_column(),
    Column("job", String(120), nullable=False),           # e.g. "bill_run:42"
    Column("unit_no", Integer, nullable=False),           # the order units are claimed in
    Column("lo", BigInteger, nullable=False),             # the unit's key range, lo..hi inclusive
    Column("hi", BigInteger, nullable=False),
    Column("state", String(12), nullable=False),          # pending | claimed | done
    Column("claimed_by", String(160)),                    # pid@host/start of the claimer
    Column("lease_until", UTCDateTime()),                 # a claim past this is free again
    Column("claims", Integer, nullable=False, server_default="0"),  # times claimed
    Column("result", Text),                               # JSON totals, written with "done"
    _created(),
    Column("finished_at", UTCDateTime()),
    UniqueConstraint("job", "unit_no", name="uq_work_units_job_unit"),
    Index("ix_work_units_job_state", "job", "state", "unit_no"),
    CheckConstraint("state IN ('pending', 'claimed', 'done')", name="state"),
)

# Vendor reconciliation (``billing_core/service/vendor_reconciliation.py``; docs/RECONCILIATION.md):
# finance's mappings of a vendor's ids to ledger rows, each imported reconciliation file (one
# ``current`` per vendor and period) and its accepted lines. Read-only for the rest of the ledger:
# reconciling changes no invoice, subscription or account.
vendor_mappings = Table(
    "vendor_mappings", metadata, id_column(),
    Column("vendor", String(32), nullable=False),         # "microsoft"
    Column("kind", String(16), nullable=False),           # customer | subscription | product
    Column("vendor_key", String(128), nullable=False),    # CustomerId, SubscriptionId, ProductId[:SkuId]
    Column("account_id", Id, ForeignKey("accounts.id")),              # kind customer
    Column("subscription_id", Id, ForeignKey("subscriptions.id")),    # kind subscription
    Column("product_id", Id, ForeignKey("products.id")),              # kind product
    _created(),
    Column("updated_at", UTCDateTime(), nullable=False),
    UniqueConstraint("vendor", "kind", "vendor_key", name="uq_vendor_mappings_key"),
    CheckConstraint("kind IN ('customer', 'subscription', 'product')", name="kind"),
)

vendor_imports = Table(
    "vendor_imports", metadata, id_column(),
    Column("vendor", String(32), nullable=False),
    Column("period", String(7), nullable=False),          # service month, "YYYY-MM"
    Column("file_name", String(255), nullable=False),
    Column("file_sha256", String(64), nullable=False),    # of the file's bytes
    Column("status", String(12), nullable=False),         # current | superseded
    Column("rows_read", Integer, nullable=False),
    Column("rows_refused", Integer, nullable=False),
    Column("errors", Text, nullable=False),               # JSON [{row, field, value, message}]
    Column("report", Text),                               # JSON: the last report computed
    Column("summary", Text),                              # JSON: its summary (for /metrics)
    Column("imported_at", UTCDateTime(), nullable=False),
    Column("reconciled_at", UTCDateTime()),
    Column("superseded_at", UTCDateTime()),
    CheckConstraint("status IN ('current', 'superseded')", name="status"),
    Index("uq_vendor_imports_current", "vendor", "period", unique=True,
          sqlite_where=text("status = 'current'"), postgresql_where=text("status = 'current'")),
)

vendor_lines = Table(
    "vendor_lines", metadata, id_column(),
    Column("import_id", Id, ForeignKey("vendor_imports.id"), nullable=False),
    Column("row_no", Integer, nullable=False),            # the file's line (header = 1)
    Column("vendor_customer_id", String(64), nullable=False),
    Column("customer_name", String(255)),
    Column("customer_domain", String(255)),
    Column("vendor_subscription_id", String(64)),
    Column("vendor_product_id", String(64), nullable=False),
    Column("vendor_sku_id", String(64), nullable=False),
    Column("sku_name", String(255)),
    Column("product_name", String(255)),
    Column("charge_type", String(64)),
    Column("charge_start", Date),
    Column("charge_end", Date),
    Column("quantity", ExactDecimal(), nullable=False),   # BillableQuantity (else Quantity)
    Column("unit_price", ExactDecimal()),
    Column("effective_unit_price", ExactDecimal()),
    Column("currency", String(3), nullable=False),
    Column("subtotal_minor", BigInteger, nullable=False),  # pretax cost, signed
    Column("invoice_number", String(64)),
    UniqueConstraint("import_id", "row_no", name="uq_vendor_lines_row"),
)

# "What changed since?" (the outbox refresh, ``billing_core.service.accounts.changed_since``):
# one index per time column it ranges over, partial where most rows leave the column empty or
# are never asked about (migration 0026).
def _changed_since_index(name: str, column: Column[Any], partial: bool) -> Index:
    where = text(f"{column.name} IS NOT NULL") if partial else None
    return Index(name, column, sqlite_where=where, postgresql_where=where)


_changed_since_index("ix_accounts_updated", accounts.c.updated_at, False)
_changed_since_index("ix_invoices_posted", invoices.c.posted_at, True)
_changed_since_index("ix_invoices_voided", invoices.c.voided_at, True)
_changed_since_index("ix_payments_created", payments.c.created_at, False)
_changed_since_index("ix_applications_applied", applications.c.applied_at, False)
_changed_since_index("ix_applications_reversed", applications.c.reversed_at, True)
_changed_since_index("ix_credit_memos_activated", credit_memos.c.activated_at, True)
_changed_since_index("ix_credit_memos_cancelled", credit_memos.c.cancelled_at, True)
_changed_since_index("ix_debit_memos_activated", debit_memos.c.activated_at, True)
_changed_since_index("ix_debit_memos_cancelled", debit_memos.c.cancelled_at, True)
_changed_since_index("ix_hold_history_at", hold_history.c.at, False)
_changed_since_index("ix_orders_created", orders.c.created_at, False)
_changed_since_index("ix_orders_activated", orders.c.activated_at, True)
_changed_since_index("ix_provisioning_updated", provisioning_requests.c.updated_at, False)
