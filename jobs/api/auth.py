"""Bearer tokens: create, list, revoke, verify; and the FastAPI dependency that checks scopes.

Rules kept here
- A token is ``lbk_<prefix>_<secret>``: the prefix (12 hex digits) is public and finds the row;
  the secret is 256 random bits. Only ``sha256(token)`` is stored, and the stored hash is
  compared with :func:`hmac.compare_digest` (constant time). The whole token is shown once, at
  creation; lists show the prefix, never the secret.
- Scopes: ``billing:read`` ⊂ ``billing:write`` ⊂ ``admin`` (a wider scope includes the narrower
  ones). A revoked or unknown token is 401; a valid token without the scope is 403; both answer
  with ``WWW-Authenticate: Bearer`` and the RFC 6750 ``error`` attribute.
- No token ever reaches a log line.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Connection, Engine, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from billing_core.adapters.db import UnitOfWork
from billing_core.domain.errors import InvalidState, NotFound, ValidationError
from billing_core.service import audit
from jobs.api.errors import ApiError
from jobs.api.tables import api_tokens

SCOPES = ("billing:read", "billing:write", "admin")
_INCLUDES = {"billing:read": {"billing:read"},
             "billing:write": {"billing:read", "billing:write"},
             "admin": {"billing:read", "billing:write", "admin"}}
TOKEN_PREFIX = "lbk_"
REALM = "ledgerbridge"
# Hash compared when the prefix is unknown, so a miss costs what a hit costs.
_DUMMY_HASH = hashlib.sha256(b"no such token").hexdigest()


@dataclass(frozen=True)
class Principal:
    token_id: int
    name: str
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        return any(scope in _INCLUDES[s] for s in self.scopes if s in _INCLUDES)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_token(uow: UnitOfWork, name: str, scopes: list[str]) -> tuple[int, str]:
    """A new token with ``scopes``; returns (id, the token). The token is not stored."""
    if not name or not name.strip() or len(name.strip()) > 128:
        raise ValidationError("name", name, "is required (at most 128 characters)")
    if not scopes:
        raise ValidationError("scope", scopes, f"give at least one of {', '.join(SCOPES)}")
    for scope in scopes:
        if scope not in SCOPES:
            raise ValidationError("scope", scope, f"must be one of {', '.join(SCOPES)}")
    for _ in range(5):
        prefix = secrets.token_hex(6)
        token = f"{TOKEN_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
        try:
            with uow.savepoint():
                token_id = uow.conn.execute(insert(api_tokens).values(
                    name=name.strip(), prefix=prefix, secret_hash=hash_token(token),
                    scopes=" ".join(sorted(set(scopes))), created_at=uow.now(),
                ).returning(api_tokens.c.id)).scalar_one()
            audit.record(uow, "created", "api_token", token_id, entity_ref=name.strip(),
                         after={"name": name.strip(), "scopes": " ".join(sorted(set(scopes))),
                                "prefix": prefix})
            return int(token_id), token
        except IntegrityError:  # a prefix collision (48 bits): draw again
            continue
    raise InvalidState("prefix", None, "could not draw a unique token prefix")


def list_tokens(conn: Connection) -> list[dict[str, Any]]:
    rows = conn.execute(select(api_tokens).order_by(api_tokens.c.id)).mappings()
    return [{"id": r["id"], "name": r["name"], "prefix": f"{TOKEN_PREFIX}{r['prefix']}_…",
             "scopes": r["scopes"], "created_at": r["created_at"],
             "revoked_at": r["revoked_at"]} for r in rows]


def revoke_token(uow: UnitOfWork, ref: str) -> dict[str, Any]:
    """Revoke by id, name or prefix. Revoking twice is refused (it names the token)."""
    ref = ref.strip()
    conditions = [api_tokens.c.name == ref,
                  api_tokens.c.prefix == ref.removeprefix(TOKEN_PREFIX).split("_")[0]]
    if ref.isdigit() and len(ref) <= 18:
        conditions.append(api_tokens.c.id == int(ref))
    rows = uow.conn.execute(select(api_tokens).where(or_(*conditions))).mappings().all()
    if not rows:
        raise NotFound("token", ref)
    if len(rows) > 1:
        raise ValidationError("token", ref, "matches several tokens: give the id")
    row = rows[0]
    if row["revoked_at"] is not None:
        raise InvalidState("token", ref, "is already revoked")
    uow.conn.execute(update(api_tokens).where(api_tokens.c.id == row["id"]).values(
        revoked_at=uow.now()))
    audit.record(uow, "revoked", "api_token", row["id"], entity_ref=row["name"],
                 before={"revoked_at": None}, after={"revoked_at": uow.now()})
    return {"id": row["id"], "name": row["name"], "revoked": True}


def verify(engine: Engine, token: str) -> Principal | None:
    """The principal of a live token, or None. Constant-time on the secret."""
    parts = token.split("_")
    prefix = parts[1] if len(parts) >= 3 and token.startswith(TOKEN_PREFIX) else ""
    row = None
    if prefix and len(prefix) <= 16:
        with engine.connect() as conn:
            conn = conn.execution_options(ledger_read_only=True)
            row = conn.execute(select(api_tokens).where(
                api_tokens.c.prefix == prefix)).mappings().first()
    expected = row["secret_hash"] if row is not None else _DUMMY_HASH
    if not hmac.compare_digest(hash_token(token), expected) or row is None:
        return None
    if row["revoked_at"] is not None:
        return None
    return Principal(int(row["id"]), str(row["name"]), frozenset(str(row["scopes"]).split()))


def _challenge(error: str | None = None, scope: str | None = None) -> dict[str, str]:
    value = f'Bearer realm="{REALM}"'
    if error:
        value += f', error="{error}"'
    if scope:
        value += f', scope="{scope}"'
    return {"WWW-Authenticate": value}


_bearer = HTTPBearer(auto_error=False, description="A token from `ledgerbridge tokens create`.")


def authenticate(request: Request, header: str | None) -> Principal:
    """The request's principal (cached on ``request.state``) or a 401 ``ApiError``."""
    cached = getattr(request.state, "principal", None)
    if isinstance(cached, Principal):
        _stamp(request, cached)
        return cached
    if not header:
        raise ApiError(401, "unauthenticated", "Authorization", None,
                       "a bearer token is required", _challenge())
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise ApiError(401, "invalid_token", "Authorization", None,
                       "use 'Authorization: Bearer <token>'", _challenge("invalid_request"))
    principal = verify(request.app.state.api.engine, token)
    if principal is None:
        raise ApiError(401, "invalid_token", "Authorization", None,
                       "the token is unknown or revoked", _challenge("invalid_token"))
    request.state.principal = principal
    _stamp(request, principal)
    return principal


def _stamp(request: Request, principal: Principal) -> None:
    """The audit trail records the request's changes as made by this token: the actor goes
    on the request's unit of work (when the route has one)."""
    uow = getattr(request.state, "uow", None)
    if isinstance(uow, UnitOfWork):
        uow.actor = actor_of(principal)


def actor_of(principal: Principal) -> str:
    """The audit trail's actor of a request made with this token: ``api:<token name>``."""
    return f"api:{principal.name}"


def require(scope: str) -> Callable[..., Principal]:
    """A dependency: the caller's principal, which must hold ``scope``."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    def dependency(request: Request,
                   creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
                   ) -> Principal:
        header = request.headers.get("authorization")
        principal = authenticate(request, header if header or creds is None else
                                 f"{creds.scheme} {creds.credentials}")
        if not principal.allows(scope):
            raise ApiError(403, "insufficient_scope", "scope", scope,
                           f"this call needs a token with scope {scope}",
                           _challenge("insufficient_scope", scope))
        return principal

    dependency.__name__ = f"require_{scope.replace(':', '_')}"
    return dependency
