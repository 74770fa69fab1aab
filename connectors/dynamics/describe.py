"""`check()` for Dataverse: token, API reachability and the field map against table metadata.

Rules: one `EntityDefinitions(LogicalName='x')/Attributes` read per mapped table; a mapped column
the table lacks is a "fail" naming table and column (a lookup `_x_value` is checked as `x`); a
push column with `IsValidForUpdate = false` fails too. Metadata the endpoint does not serve
(404/405/501, e.g. a sandbox) is "cannot verify". Nothing here raises for a CRM answer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from connectors.base import CheckResult, ConnectorError, field_map_check
from connectors.dynamics import odata

if TYPE_CHECKING:
    from connectors.dynamics.connector import DynamicsConnector

UNVERIFIABLE = {404, 405, 501}


def _attribute(column: str) -> str:
    if column.startswith("_") and column.endswith("_value"):
        return column[1:-6]
    return column


def check(conn: DynamicsConnector) -> list[CheckResult]:
    name = conn.name
    try:
        conn.get_json("WhoAmI")
    except ConnectorError as exc:
        if exc.status not in UNVERIFIABLE:
            return [CheckResult(name, "login", "fail", str(exc))]
    results = [CheckResult(name, "login", "ok", "token accepted")]
    described: dict[str, Any] = {}
    for obj, om in conn.fieldmap.objects.items():
        if obj in ("document", "document_file", "document_line") \
                and not conn.settings.push_documents:
            continue        # documents are pushed only when the connection says so
        table = om.logical_name or om.crm_object
        label = f"fields {obj} ({table})"
        if table not in described:
            url = (f"EntityDefinitions(LogicalName={odata.literal(table)})/Attributes"
                   "?$select=LogicalName,IsValidForUpdate")
            try:
                described[table] = conn.get_json(url)
            except ConnectorError as exc:
                described[table] = exc
        answer = described[table]
        if isinstance(answer, ConnectorError):
            status = "cannot verify" if answer.status in UNVERIFIABLE else "fail"
            results.append(CheckResult(name, label, status, str(answer)))
            continue
        columns = {a.get("LogicalName"): a for a in answer.get("value", [])}
        missing = {_attribute(s.crm) for s in om.fields.values()} - set(columns)
        # a binding named as written (customerid_account@odata.bind) is its lookup column's
        missing = {m for m in missing if not m.endswith("@odata.bind")
                   or not {m[:-11], m[:-11].rsplit("_", 1)[0]} & set(columns)}
        locked = [s.crm for s in om.fields.values() if s.push and
                  columns.get(_attribute(s.crm), {}).get("IsValidForUpdate") is False]
        results.append(field_map_check(name, label, len(om.fields), missing, locked,
                                       missing_text=f"{table} has no column(s)",
                                       locked_text="not updateable"))
    return results
