"""The Salesforce side of the sandbox CRM (REST API subset used by simple-salesforce).

Modules: ids (record ids), schema (objects and fields), seed (lazy deterministic rows), store
(overrides over seeded rows), soql (parser), query (engine), cursors (paging), writes (sObject
and collection writes), replication (deleted/updated), auth (OAuth token endpoint), limits (API
allowance), wire (JSON shapes), admin (CRM-user actions), side (the `Side` for the server).
"""

from .side import SalesforceSide

__all__ = ["SalesforceSide"]
