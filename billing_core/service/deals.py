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
