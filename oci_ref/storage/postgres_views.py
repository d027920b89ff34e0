"""The web view's queries on the PostgreSQL metadata (the same answers as
sqlite_views.py), one statement each.

Coroutines of an AsyncConnection, run on the store's own loop like every other query
there; the tables are drawn in postgres_schema.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from oci_ref.storage.interfaces import TagDetail


async def _one(conn: Any, sql: str, params: Sequence[Any]) -> Any:
    row = await (await conn.execute(sql, params)).fetchone()
    return None if row is None else row[0]


async def tag_count(conn: Any, repo: str) -> int:
    return int(await _one(conn, 'SELECT count(*) FROM tags WHERE repo = %s', [repo]))


async def tag_details(conn: Any, repo: str, by_pushed: bool, descending: bool,
                      offset: int, limit: int) -> list[TagDetail]:
    """A page of tags with what they point at, sorted by name or push time (ties by
    name, so the order is stable across pages)."""
    direction = 'DESC' if descending else 'ASC'
    order = (f't.updated_at {direction}, t.tag {direction}' if by_pushed
             else f't.tag {direction}')
    cur = await conn.execute(
        'SELECT t.tag, t.digest, t.updated_at, m.media_type, m.size, m.content '
        'FROM tags t JOIN manifests m ON m.repo = t.repo AND m.digest = t.digest '
        f'WHERE t.repo = %s ORDER BY {order} LIMIT %s OFFSET %s', [repo, limit, offset])
    return [TagDetail(*row) for row in await cur.fetchall()]


async def tags_of(conn: Any, repo: str, digest: str) -> list[tuple[str, float]]:
    cur = await conn.execute('SELECT tag, updated_at FROM tags WHERE repo = %s AND '
                             'digest = %s ORDER BY tag', [repo, digest])
    return [(r[0], float(r[1] or 0)) for r in await cur.fetchall()]


async def tags_with_prefix(conn: Any, repo: str, prefix: str, limit: int) -> list[str]:
    """Tags starting with ``prefix`` (the referrers tag schema, ``sha256-<hex>``)."""
    cur = await conn.execute(
        'SELECT tag FROM tags WHERE repo = %s AND tag >= %s AND '
        'substr(tag, 1, %s) = %s ORDER BY tag LIMIT %s',
        [repo, prefix, len(prefix), prefix, limit])
    return [r[0] for r in await cur.fetchall()]


async def repository_stats(conn: Any, repos: Sequence[str]
                           ) -> dict[str, tuple[int, int]]:
    """{repository: (tag count, bytes of the blobs it links)} for ``repos``."""
    cur = await conn.execute(
        'SELECT n.name, '
        '(SELECT count(*) FROM tags t WHERE t.repo = n.name), '
        '(SELECT COALESCE(sum(b.size), 0) FROM repo_blobs r JOIN blobs b '
        ' ON b.digest = r.digest WHERE r.repo = n.name) '
        'FROM unnest(%s::text[]) AS n(name)', [list(repos)])
    stats = {r: (0, 0) for r in repos}
    for name, count, size in await cur.fetchall():
        stats[name] = (int(count), int(size))
    return stats


async def manifest_pushed_at(conn: Any, repo: str, digest: str) -> float | None:
    value = await _one(conn, 'SELECT created_at FROM manifests WHERE repo = %s AND '
                       'digest = %s', [repo, digest])
    return None if value is None else float(value or 0)
