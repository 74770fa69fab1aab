"""What the hand-worked billing scenarios (``test_hand_worked_scenarios*.py``) share: the
ladder they price usage with, and setting a tax rate, importing usage rows and ingesting
metered events as a finance user or a usage system would."""
from __future__ import annotations

from datetime import date

from billing_core.service.tax import set_tax_rate
from billing_core.service.usage import import_usage
from billing_core.service.usage_ingest import ingest_events

#: graduated or volume: up to 1,000 units at 0.10, up to 5,000 at 0.08, above at 0.05
LADDER = [("1000", "0.10"), ("5000", "0.08"), (None, "0.05")]


def tax_rate(ledger, country: str, rate: str, *, region: str = "",
             since: date = date(2020, 1, 1)) -> None:
    with ledger.uow() as uow:
        set_tax_rate(uow, country, region, rate, since)
        uow.commit()


def usage_row(ledger, acc: int, product: int, quantity: str, when: str, eid: str) -> None:
    """One ``usage import`` row."""
    with ledger.uow() as uow:
        import_usage(uow, [{"event_id": eid, "account": str(acc), "product": str(product),
                            "quantity": quantity, "occurred_at": when}])
        uow.commit()


def ingest(ledger, acc: int, metric: str, eid: str, ts: str, value: str) -> None:
    """One metered event, as ``POST /usage/events`` takes it."""
    with ledger.uow() as uow:
        ingest_events(uow, [{"event_id": eid, "account": str(acc), "metric": metric,
                             "timestamp": ts, "value": value}], source="test")
        uow.commit()
