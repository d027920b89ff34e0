"""Access control's shared state on the PostgreSQL metadata (issue 14; the tables
are drawn in postgres_schema.py): the signing keys and the failed-login budget every
replica shares. Times are the server's clock, one for every replica (as leases)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from oci_ref.storage.postgres_locks import SERVER_NOW


class AuthQueries:
    """Access control's MetadataStore methods, mixed into
    :class:`~oci_ref.storage.postgres.PostgresMetadataStore` (its query helpers)."""

    _one: Callable[..., Any]

    async def signing_key(self, name: str, candidate: bytes | None) -> bytes | None:
        if candidate is not None:
            # Two statements, not one with a CTE: a statement's snapshot predates
            # a concurrent replica's committed insert that ON CONFLICT waited for,
            # so only a new statement is sure to read the key that won.
            await self._one('INSERT INTO signing_keys (name, key, created_at) '
                            f'VALUES (%s, %s, {SERVER_NOW}) ON CONFLICT (name) '
                            'DO NOTHING RETURNING 1', [name, candidate])
        row = await self._one('SELECT key FROM signing_keys WHERE name = %s', [name])
        return None if row is None else bytes(row[0])

    async def failed_logins(self, client: str, window: float) -> tuple[int, float]:
        row = await self._one(
            f'SELECT count(*), COALESCE({SERVER_NOW} - min(at), 0) FROM login_failures '
            f'WHERE client = %s AND at > {SERVER_NOW} - %s', [client, window])
        return int(row[0]), float(row[1])

    async def count_failed_login(self, client: str, window: float) -> None:
        # Forgetting the old ones here bounds the table by the failures of one
        # window, however many addresses an attacker sprays.
        await self._one(
            f'WITH old AS (DELETE FROM login_failures WHERE at <= {SERVER_NOW} - %s) '
            f'INSERT INTO login_failures (client, at) VALUES (%s, {SERVER_NOW}) '
            'RETURNING 1', [window, client])
