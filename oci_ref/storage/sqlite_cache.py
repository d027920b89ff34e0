"""The pull-through cache's queries on the SQLite metadata (issue 13; the table is
drawn in sqlite_schema.py). Plain functions of a connection, run in the store's
threads like every other query there."""

from __future__ import annotations

import sqlite3

from oci_ref.storage.interfaces import CacheTag


def cache_tag(conn: sqlite3.Connection, repo: str, tag: str) -> CacheTag | None:
    row = conn.execute('SELECT digest, validated_at FROM cache_tags '
                       'WHERE repo = ? AND tag = ?', [repo, tag]).fetchone()
    return None if row is None else CacheTag(row[0], float(row[1]))


def set_cache_tag(conn: sqlite3.Connection, repo: str, tag: str, digest: str,
                  validated_at: float) -> None:
    conn.execute('BEGIN IMMEDIATE')
    try:
        conn.execute('INSERT OR REPLACE INTO cache_tags (repo, tag, digest, validated_at)'
                     ' VALUES (?, ?, ?, ?)', [repo, tag, digest, validated_at])
        conn.execute('COMMIT')
    except BaseException:
        if conn.in_transaction:
            conn.execute('ROLLBACK')
        raise
