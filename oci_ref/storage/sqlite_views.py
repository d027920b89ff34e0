"""The web view's queries on the SQLite metadata (oci_ref/ui/model.py reads them
through :class:`~oci_ref.storage.sqlite.SQLiteMetadata`).

Plain functions of a connection, run in the store's read threads like every other
query there (never on the event loop); the tables are drawn in sqlite_schema.py.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from oci_ref.storage.interfaces import TagDetail


def tag_count(conn: sqlite3.Connection, repo: str) -> int:
    return int(conn.execute('SELECT COUNT(*) FROM tags WHERE repo = ?', [repo]
                            ).fetchone()[0])


def tag_details(conn: sqlite3.Connection, repo: str, by_pushed: bool, descending: bool,
                offset: int, limit: int) -> list[TagDetail]:
    """A page of tags with what they point at, sorted by name or push time (ties by
    name, so the order is stable across pages)."""
    direction = 'DESC' if descending else 'ASC'
    order = (f't.updated_at {direction}, t.tag {direction}' if by_pushed
             else f't.tag {direction}')
    rows = conn.execute(
        'SELECT t.tag, t.digest, t.updated_at, m.media_type, m.size, m.content '
        'FROM tags t JOIN manifests m ON m.repo = t.repo AND m.digest = t.digest '
        f'WHERE t.repo = ? ORDER BY {order} LIMIT ? OFFSET ?',
        [repo, limit, offset],
    )
    return [TagDetail(*row) for row in rows]


def tags_of(conn: sqlite3.Connection, repo: str, digest: str) -> list[tuple[str, float]]:
    """The tags pointing at ``digest`` and when each was pushed."""
    rows = conn.execute(
        'SELECT tag, updated_at FROM tags WHERE repo = ? AND digest = ? ORDER BY tag',
        [repo, digest],
    )
    return [(r[0], float(r[1] or 0)) for r in rows]


def tags_with_prefix(conn: sqlite3.Connection, repo: str, prefix: str, limit: int
                     ) -> list[str]:
    """Tags starting with ``prefix`` (the referrers tag schema, ``sha256-<hex>``)."""
    rows = conn.execute(
        'SELECT tag FROM tags WHERE repo = ? AND tag >= ? AND substr(tag, 1, ?) = ? '
        'ORDER BY tag LIMIT ?',
        [repo, prefix, len(prefix), prefix, limit],
    )
    return [r[0] for r in rows]


def repository_stats(conn: sqlite3.Connection, repos: Sequence[str]
                     ) -> dict[str, tuple[int, int]]:
    """{repository: (tag count, bytes of the blobs it links)} for ``repos``."""
    stats = {r: (0, 0) for r in repos}
    for i in range(0, len(repos), 500):
        part = list(repos[i:i + 500])
        marks = ','.join('?' * len(part))
        sizes = dict(conn.execute(
            'SELECT r.repo, SUM(b.size) FROM repo_blobs r JOIN blobs b '
            f'ON b.digest = r.digest WHERE r.repo IN ({marks}) GROUP BY r.repo', part))
        for repo, count in conn.execute(
                f'SELECT repo, COUNT(*) FROM tags WHERE repo IN ({marks}) '
                'GROUP BY repo', part):
            stats[repo] = (int(count), 0)
        for repo, size in sizes.items():
            stats[repo] = (stats[repo][0], int(size or 0))
    return stats


def manifest_pushed_at(conn: sqlite3.Connection, repo: str, digest: str) -> float | None:
    row = conn.execute('SELECT created_at FROM manifests WHERE repo = ? AND digest = ?',
                       [repo, digest]).fetchone()
    return None if row is None else float(row[0] or 0)
