"""sObject Collections records (``composite/sobjects``): what an update by id and an upsert by
external id send, built from canonical updates through the field map."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from connectors.base import Record, WriteResult
from connectors.fieldmap import FieldMapError, ObjectMap


def collection_bodies(om: ObjectMap, updates: Sequence[Record], key: str
                      ) -> tuple[list[WriteResult | None], list[tuple[int, dict[str, Any]]]]:
    """The sObject Collections records of ``updates`` (each named by its ``crm_id`` under
    ``key``: ``id`` for an update, the external id field for an upsert), with the index of its
    update; an update the field map refuses has its result already (``INVALID_FIELD``)."""
    results: list[WriteResult | None] = [None] * len(updates)
    pending: list[tuple[int, dict[str, Any]]] = []
    for i, update in enumerate(updates):
        ref = str(update.get("crm_id", ""))
        try:
            body = om.to_crm(update)
        except FieldMapError as exc:
            results[i] = WriteResult(ref, False, "INVALID_FIELD", str(exc))
            continue
        body.pop(key, None)
        pending.append((i, {"attributes": {"type": om.crm_object}, key: ref, **body}))
    return results, pending
