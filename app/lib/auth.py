"""API-key authentication and scopes.

A key is ``csk_`` + 43 characters of base64url (256 random bits). Only its SHA-256 is stored: the secret
has full entropy, so a slow password hash would add latency to every request and no safety. A key belongs
to one workspace; every query a request makes is filtered by the principal's workspace.

An operator key (scope ``operator``, made by ``consent apikey create --operator``, stored in ``operator_keys``)
belongs to no workspace: it may call the operator endpoints (``/v1/workspaces``) and nothing else. The guard
refuses it on every tenant route (``403 operator_key_not_allowed``) and refuses every tenant key, admin included,
on the operator routes (``403 insufficient_scope``); :func:`authenticate`, which the tenant code paths use, never
answers an operator principal.
"""

from __future__ import annotations

import enum
import hashlib
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import msgspec
from litestar import Request
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from app.lib.errors import Forbidden, Unauthenticated

KEY_PREFIX = "csk_"
_MAX_KEY_LENGTH = 128  # anything longer is not ours; refuse before hashing


class Scope(enum.StrEnum):
    """What a key may do (``admin`` may do everything within its workspace)."""

    ADMIN = "admin"
    SIGNUP = "signup"
    CONSENTS_WRITE = "consents:write"
    ELIGIBILITY_READ = "eligibility:read"
    MESSAGES_SEND = "messages:send"
    AUDIT_READ = "audit:read"
    OPERATOR = "operator"
    """The service operator's: workspaces only, never a workspace's data (no tenant key can carry it)."""


TENANT_SCOPES = tuple(scope for scope in Scope if scope is not Scope.OPERATOR)
"""The scopes a workspace's key may carry."""


class Principal(msgspec.Struct, frozen=True):
    """Who is calling: the key and its workspace."""

    workspace_id: uuid.UUID
    api_key_id: uuid.UUID
    scopes: frozenset[str]

    def allows(self, scope: Scope) -> bool:
        """True when the key carries ``scope`` or ``admin`` (``admin`` never stands for ``operator``)."""
        if scope is Scope.OPERATOR:
            return False
        return Scope.ADMIN in self.scopes or scope in self.scopes


class OperatorPrincipal(msgspec.Struct, frozen=True):
    """The service operator's key: may manage workspaces, reads and writes no workspace's data."""

    operator_key_id: uuid.UUID


def generate_key() -> tuple[str, bytes]:
    """A new secret and the hash to store."""
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    return secret, hash_key(secret)


def hash_key(secret: str) -> bytes:
    """SHA-256 of the whole key string."""
    return hashlib.sha256(secret.encode()).digest()


Caller = Principal | OperatorPrincipal
KeyLookup = Callable[[asyncpg.Connection, bytes], Awaitable[Caller | None]]
"""Finds the principal of an active (unrevoked) key, tenant or operator, by the SHA-256 of its secret."""


def bearer_token(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    """The key from ``Authorization: Bearer …``, or a 401 saying what is wrong."""
    header = connection.headers.get("authorization")
    if not header:
        raise Unauthenticated("Send an API key as 'Authorization: Bearer <key>'.", code="missing_api_key")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("The Authorization header must be 'Bearer <key>'.", code="invalid_authorization_header")
    return token


class KeyCache:
    """Recently verified keys, by hash, for a few seconds: spares the database a read on every request.

    ``lookup`` finds an active key by its hash (the package that owns the keys supplies it, so this module holds
    no SQL). Only valid keys are cached. Revoking a key clears the cache of the process that revoked it at once; other
    processes stop accepting it within ``ttl`` seconds. Consent decisions are never cached.
    """

    def __init__(self, lookup: KeyLookup, ttl: float = 5.0, size: int = 10_000) -> None:
        self.lookup = lookup
        self.ttl = ttl
        self.size = size
        self._entries: dict[bytes, tuple[Caller, float]] = {}

    def get(self, digest: bytes) -> Caller | None:
        """A principal verified less than ``ttl`` seconds ago."""
        entry = self._entries.get(digest)
        if entry is None or entry[1] < time.monotonic():
            return None
        return entry[0]

    def put(self, digest: bytes, principal: Caller) -> None:
        """Remember a verified key."""
        if len(self._entries) >= self.size:
            self._entries.clear()
        self._entries[digest] = (principal, time.monotonic() + self.ttl)

    def clear(self) -> None:
        """Forget every key (after a revocation)."""
        self._entries.clear()


async def authenticate(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    """Resolve the bearer key to a workspace's principal.

    401 if missing, malformed, unknown or revoked; 403 for an operator key, which reads no workspace's data.
    """
    caller = await authenticate_caller(connection)
    if isinstance(caller, OperatorPrincipal):
        raise _operator_refused()
    return caller


def _operator_refused() -> Forbidden:
    return Forbidden(
        "An operator key manages workspaces only (/v1/workspaces); it reads and writes no workspace's data. "
        "Use a key of the workspace.",
        code="operator_key_not_allowed",
    )


async def authenticate_caller(connection: ASGIConnection[Any, Any, Any, Any]) -> Caller:
    """Resolve the bearer key to a tenant's or the operator's principal (401 as :func:`authenticate`)."""
    token = bearer_token(connection)
    if not token.startswith(KEY_PREFIX) or len(token) > _MAX_KEY_LENGTH:
        raise Unauthenticated("The API key is not valid.", code="invalid_api_key")
    digest = hash_key(token)
    cache: KeyCache = connection.app.state.key_cache
    if (principal := cache.get(digest)) is not None:
        return principal
    async with connection.app.state.database.driver() as driver:
        principal = await cache.lookup(driver, digest)
    if principal is None:
        raise Unauthenticated("The API key is not valid.", code="invalid_api_key")
    cache.put(digest, principal)
    return principal


async def api_key_guard(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """Router guard for ``/v1``: authenticate, then check the scope the handler declares in ``opt``.

    A handler declares ``opt={"scope": Scope.X}`` or a tuple of scopes any one of which suffices; handlers
    that declare none need only a valid key, and ``opt={"public": True}`` skips authentication (e.g. the
    VAPID public key).
    """
    if handler.opt.get("public"):
        return
    caller = await authenticate_caller(connection)
    operator_route = handler.opt.get("scope") is Scope.OPERATOR
    if isinstance(caller, OperatorPrincipal):
        if not operator_route:  # every tenant route, whatever scope it declares (or none)
            raise _operator_refused()
        connection.scope["auth"] = caller
        return
    connection.scope["auth"] = caller
    require_scope(caller, handler)  # an operator route: no tenant key passes (``allows`` never grants operator)


def require_scope(principal: Principal, handler: BaseRouteHandler) -> None:
    """403 ``insufficient_scope`` unless the key has one of the scopes the handler declares in ``opt``."""
    declared: Scope | tuple[Scope, ...] | None = handler.opt.get("scope")
    if declared is None:
        return
    accepted = declared if isinstance(declared, tuple) else (declared,)
    if not any(principal.allows(scope) for scope in accepted):
        names = " or ".join(f"'{scope}'" for scope in accepted)
        # ``admin`` stands for every tenant scope (``Principal.allows``): name it among the scopes that pass
        tenant = Scope.OPERATOR not in accepted
        passing = [*accepted, Scope.ADMIN] if tenant and Scope.ADMIN not in accepted else list(accepted)
        raise Forbidden(
            f"This API key lacks the {names} scope needed here.",
            code="insufficient_scope",
            extra={"required_scope": str(accepted[0]), "accepted_scopes": [str(s) for s in passing]},
        )


async def provide_operator(request: Request[Any, Any, Any]) -> OperatorPrincipal:
    """Dependency of the operator routes: the operator's principal set by :func:`api_key_guard`."""
    principal = request.scope.get("auth")
    if not isinstance(principal, OperatorPrincipal):  # pragma: no cover - the guard refuses every other key
        raise Forbidden("This route needs an operator key.", code="insufficient_scope")
    return principal


async def provide_principal(request: Request[Any, Any, Any]) -> Principal:
    """Dependency: the authenticated principal set by :func:`api_key_guard`."""
    principal = request.scope.get("auth")
    if not isinstance(principal, Principal):  # pragma: no cover - the guard always runs first on /v1
        raise Unauthenticated("Authentication required.")
    return principal
