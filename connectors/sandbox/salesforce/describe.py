"""Describe resources: `sobjects/` (global), `sobjects/X/` (basic info) and `sobjects/X/describe/`.

Rules this module keeps:
- Answers list exactly the objects and fields of `schema` (so a connector can check its field
  map against the org before a sync), with Salesforce's type names: number(0) fields are
  "double" with scale 0, ids "id", lookups "reference" with `referenceTo`.
- Only the commonly read keys are present; an unknown object is 404 NOT_FOUND (the side's job).
"""

from __future__ import annotations

from typing import Any

from . import schema as S

_TYPES = {S.INT: "double", S.ID: "id", S.REFERENCE: "reference"}
_REFERENCE_TO = S.REFERENCE_TO
_LABELS = {"Product2": "Product", "PricebookEntry": "Price Book Entry",
           "QuoteLineItem": "Quote Line Item", "SBQQ__Quote__c": "Quote (CPQ)",
           "SBQQ__QuoteLine__c": "Quote Line (CPQ)"}


def _urls(version: str, obj: S.SObject) -> dict[str, str]:
    base = f"/services/data/{version}/sobjects/{obj.name}"
    return {"sobject": base, "describe": f"{base}/describe", "rowTemplate": f"{base}/{{ID}}"}


def _summary(version: str, obj: S.SObject) -> dict[str, Any]:
    return {"name": obj.name, "label": _LABELS.get(obj.name, obj.name), "keyPrefix": obj.prefix,
            "custom": obj.name.endswith("__c"), "queryable": True, "createable": True, "updateable": True,
            "deletable": True, "replicateable": True, "urls": _urls(version, obj)}


def _field(fld: S.Field) -> dict[str, Any]:
    numeric = fld.type in (S.CURRENCY, S.DOUBLE, S.INT)
    return {
        "name": fld.name, "label": fld.label or fld.name.removesuffix("__c").replace("_", " "),
        "type": _TYPES.get(fld.type, fld.type), "length": fld.length if not numeric else 0,
        "precision": 18 if numeric else 0,
        "scale": 0 if fld.type == S.INT else 2 if fld.type == S.CURRENCY else 0,
        "custom": fld.name.endswith("__c"), "updateable": fld.updateable,
        "createable": fld.updateable, "nillable": fld.type != S.BOOLEAN and fld.name != "Id",
        "picklistValues": [{"value": v, "label": v, "active": True, "defaultValue": False}
                           for v in fld.values],
        "restrictedPicklist": bool(fld.values),
        "referenceTo": [_REFERENCE_TO[fld.name]] if fld.name in _REFERENCE_TO else [],
        "relationshipName": S.relationship_name(fld),
    }


def describe_global(version: str) -> dict[str, Any]:
    return {"encoding": "UTF-8", "maxBatchSize": 200,
            "sobjects": [_summary(version, o) for o in S.OBJECTS.values()]}


def basic_info(version: str, obj: S.SObject) -> dict[str, Any]:
    return {"objectDescribe": _summary(version, obj), "recentItems": []}


def describe(version: str, obj: S.SObject) -> dict[str, Any]:
    return {**_summary(version, obj), "fields": [_field(f) for f in obj.fields]}
