"""A deal: the first order of a quote and the amendment orders after it, each naming the one it
amends (``orders.amends_order_id``). Amendments and renewals both walk it."""
from __future__ import annotations

from sqlalchemy import select

from billing_core.adapters.db import UnitOfWork
from billing_core.adapters.tables import orders


def deal_orders(uow: UnitOfWork, order_id: int) -> list[int]:
    """The order and the orders it amends in turn, newest first (a loop stops where it
    began)."""
    chain: list[int] = []
    current: int | None = order_id
    while current is not None and current not in chain:
        chain.append(current)
        current = uow.conn.execute(select(orders.c.amends_order_id).where(
            orders.c.id == current)).scalar()
    return chain


def deal_head(uow: UnitOfWork, order_id: int) -> int:
    """The deal's newest order from ``order_id`` on: the order amending it, then the one
    amending that, and so on (the newest when two name the same order). What a new amendment
    or a renewal of the deal names, whichever of its orders the CRM pointed at."""
    current, seen = order_id, {order_id}
    while True:
        after = uow.conn.execute(select(orders.c.id).where(
            orders.c.amends_order_id == current).order_by(orders.c.id.desc()).limit(1)).scalar()
        if after is None or after in seen:
            return current
        current = int(after)
        seen.add(current)
