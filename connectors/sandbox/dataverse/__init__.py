"""The sandbox's Dataverse (Dynamics 365) side: the identity platform msal talks to and the
Dataverse Web API v9.2 (OData paging, change tracking, PATCH with etags, `$batch`).

Modules: `side` (routing, faults, counting), `auth`, `paging` + `filters` + `reader` (queries),
`schema` + `seed` + `ids` + `store` (rows), `writes`, `batch`, `throttle`, `admin`, `wire`.
Importing this package does no work.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .side import DataverseSide

__all__ = ["DataverseSide"]


def __getattr__(name: str) -> Any:
    if name == "DataverseSide":
        from .side import DataverseSide

        return DataverseSide
    raise AttributeError(name)
