"""One handler per CRM object, looked up by the object's name.

Each handler declares how its records map (``sync.mapping``), what it validates beyond the
record, how it reconciles into billing (through ``billing_core.service`` only) and what it
hands on to the rest of the cycle (quotes to look at). Adding an object is adding a handler
here and its name to ``sync.mapping.OBJECTS``.
"""
from __future__ import annotations

from typing import Any

from sync.handlers.account import AccountHandler
from sync.handlers.base import Handler
from sync.handlers.price import PriceHandler
from sync.handlers.product import ProductHandler
from sync.handlers.quote import QuoteHandler
from sync.handlers.quote_line import QuoteLineHandler

HANDLERS: dict[str, type[Handler[Any]]] = {
    h.obj: h for h in (AccountHandler, ProductHandler, PriceHandler, QuoteHandler,
                       QuoteLineHandler)}
