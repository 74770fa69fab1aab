"""`check()` for Salesforce: credentials, API reachability and the field map against describe.

Rules: each mapped object is described once (`GET sobjects/X/describe`); a mapped field the
object lacks is a "fail" naming object and field, and a push field that is not updateable is a
"fail" too (missing permission). A sandbox or org that does not serve describe (404/405/501) is
"cannot verify", never a crash. Nothing here raises for a CRM answer: doctor reports, it does
not stop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from connectors.base import CheckResult, ConnectorError, field_map_check

if TYPE_CHECKING:
    from connectors.salesforce.connector import SalesforceConnector

UNVERIFIABLE = {404, 405, 501}
DOCUMENT_OBJECTS = ("document", "document_file")


def _describe(sobject: str) -> Callable[[Any], Any]:
    return lambda sf: sf.restful(f"sobjects/{sobject}/describe")


def check(conn: SalesforceConnector) -> list[CheckResult]:
    name = conn.name
    try:
        conn._call(lambda sf: sf.restful("limits/"))
    except ConnectorError as exc:
        status = "cannot verify" if exc.status in UNVERIFIABLE else "fail"
        if status == "fail":
            return [CheckResult(name, "login", "fail", str(exc))]
        results = [CheckResult(name, "login", "ok", "session established")]
    else:
        results = [CheckResult(name, "login", "ok", "session established")]
    budget = conn.api_budget()
    if budget.limit is not None:
        results.append(CheckResult(name, "api budget", "ok" if (budget.allowed or 0) > 0
                                   else "fail", f"{budget.used}/{budget.limit} used"))
    described: dict[str, Any] = {}
    for obj, om in conn.fieldmap.objects.items():
        if obj in DOCUMENT_OBJECTS and not conn.settings.push_documents:
            continue        # documents are pushed only when the connection says so
        label = f"fields {obj} ({om.crm_object})"
        if om.crm_object not in described:
            try:
                described[om.crm_object] = conn._call(_describe(om.crm_object))
            except ConnectorError as exc:
                described[om.crm_object] = exc
        answer = described[om.crm_object]
        if isinstance(answer, ConnectorError):
            status = "cannot verify" if answer.status in UNVERIFIABLE else "fail"
            results.append(CheckResult(name, label, status, str(answer)))
            continue
        fields = {f["name"]: f for f in (answer or {}).get("fields", [])}
        relations = {str(f.get("relationshipName")).lower() for f in fields.values()
                     if f.get("relationshipName")}
        # a relationship path is checked by its first hop (a lookup of this object); the
        # objects it leads to are not described here
        missing = {s.crm for s in om.fields.values()
                   if s.crm not in fields and ("." not in s.crm
                                               or s.crm.split(".")[0].lower() not in relations)}
        locked = [s.crm for s in om.fields.values()
                  if s.push and s.crm in fields and fields[s.crm].get("updateable") is False]
        results.append(field_map_check(name, label, len(om.fields), missing, locked,
                                       missing_text=f"{om.crm_object} has no field(s)",
                                       locked_text="not updateable for this user"))
    return results
