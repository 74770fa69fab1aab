"""An order's source reference: which CRM quote revision it was handed off from.

Rules kept here:
- The reference is ``<connection>:<quote crm id>:rev<revision>``; it is the order's unique key
  in billing and the hand-off's in ``handoffs``, so it is built in one place only.
- Parsing is the exact inverse of building: the connection ends at the first ``:`` (connection
  names have none), the revision follows the last ``:rev``; a quote id may hold ``:``. A
  reference that is not of this shape (an order entered by hand) is a ``ValueError`` naming it.
"""
from __future__ import annotations

from typing import NamedTuple


class SourceRef(NamedTuple):
    connection: str
    quote_id: str
    revision: int


def source_ref(connection: str, quote_id: str, revision: int) -> str:
    return f"{connection}:{quote_id}:rev{revision}"


def parse_source_ref(ref: str) -> SourceRef:
    connection, _, rest = ref.partition(":")
    quote_id, marker, revision = rest.rpartition(":rev")
    if not (connection and marker and quote_id and revision.isdigit()):
        raise ValueError(f"source_ref={ref!r}: is not <connection>:<quote id>:rev<revision>")
    return SourceRef(connection, quote_id, int(revision))
