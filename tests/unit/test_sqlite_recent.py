"""The SQLite store's recent reads (oci_ref/storage/sqlite_recent.py): served without
a query while the database is unchanged, and never after a commit by anyone.

Two stores on one file stand for two workers (or two servers on one data directory):
each has its own threads, connections and cache, as a worker process does. The
e2e side (two real workers over HTTP) is in tests/e2e/test_workers.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from oci_ref.storage.sqlite import SQLiteMetadataStore
from oci_ref.storage.sqlite_recent import MISS, Recent
from oci_ref.storage.sqlite_schema import DB_FILE

MEDIA = 'application/vnd.oci.image.manifest.v1+json'


def manifest(n: int) -> tuple[str, bytes]:
    body = json.dumps({'schemaVersion': 2, 'mediaType': MEDIA,
                       'annotations': {'n': str(n)}}).encode()
    return 'sha256:' + hashlib.sha256(body).hexdigest(), body


async def put(store: SQLiteMetadataStore, repo: str, n: int, tags: list[str]) -> str:
    digest, body = manifest(n)
    await store.put_manifest(repo, digest, MEDIA, body, subject=None, artifact_type=None,
                             annotations=None, blobs=[], children=[], tags=tags,
                             sparse=True)
    return digest


@pytest.fixture
def two(tmp_path: Path):
    a = SQLiteMetadataStore(tmp_path / DB_FILE)
    b = SQLiteMetadataStore(tmp_path / DB_FILE)
    assert a._recent is not None and b._recent is not None, 'the cache is on (WAL)'
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def test_a_repeated_read_is_served_without_a_query(two):
    a, _ = two

    async def run() -> None:
        digest = await put(a, 'r', 1, ['v'])
        assert a._recent is not None
        first = await a.get_tagged_manifest('r', 'v')
        hits = a._recent.hits
        for _ in range(5):
            again = await a.get_tagged_manifest('r', 'v')
            assert again is first and again is not None and again.digest == digest
        assert a._recent.hits == hits + 5

    asyncio.run(run())


@pytest.mark.parametrize('rounds', [40])
def test_another_process_commit_is_seen_at_once(two, rounds):
    """Tag moves, new tags and deletes by store B: store A's next read is B's
    state every time, although A answered the same reads from its cache between."""
    a, b = two

    async def run() -> None:
        tags: list[str] = []
        for i in range(rounds):
            writer, reader = (b, a) if i % 2 == 0 else (a, b)
            tag = f't{i:03d}'
            digest = await put(writer, 'repo', i, ['moving', tag])
            tags.append(tag)
            for _ in range(3):  # the second and third are cache hits
                got = await reader.get_tagged_manifest('repo', 'moving')
                assert got is not None and got.digest == digest
                assert await reader.tags('repo', None, 1000) == ['moving', *tags]
                by_digest = await reader.get_manifest('repo', digest)
                assert by_digest is not None and by_digest.digest == digest
            if i % 5 == 4:
                assert await writer.delete_tag('repo', 'moving')
                assert await reader.get_tagged_manifest('repo', 'moving') is None
                assert await writer.delete_manifest('repo', digest)  # and its tags
                tags.remove(tag)
                assert await reader.get_manifest('repo', digest) is None
                assert await reader.tags('repo', None, 1000) == tags
        assert a._recent is not None and b._recent is not None
        assert a._recent.hits > rounds and b._recent.hits > rounds

    asyncio.run(run())


def test_a_commit_outside_oci_ref_is_seen(two, tmp_path: Path):
    """The check is SQLite's own commit record: the sqlite3 shell (any connection)
    is seen as well as a worker."""
    a, _ = two

    async def run() -> None:
        await put(a, 'repo', 1, ['v'])
        assert await a.tags('repo', None, 10) == ['v']
        assert await a.tags('repo', None, 10) == ['v']  # kept
        conn = sqlite3.connect(tmp_path / DB_FILE, isolation_level=None)
        try:
            conn.execute("UPDATE tags SET tag = 'w' WHERE repo = 'repo'")
        finally:
            conn.close()
        assert await a.tags('repo', None, 10) == ['w']

    asyncio.run(run())


def test_a_result_read_while_a_commit_lands_is_not_kept(two, tmp_path: Path):
    a, _ = two
    assert a._recent is not None
    recent = a._recent
    conn = sqlite3.connect(tmp_path / DB_FILE, isolation_level=None)

    def racing(c: sqlite3.Connection) -> list[str]:
        result = [r[0] for r in c.execute('SELECT name FROM repositories')]
        conn.execute("INSERT INTO repositories (name, created_at) VALUES ('x', 0)")
        return result

    try:
        key = ('race',)
        assert recent.through(conn, key, len, racing) == []
        assert recent.get(key) is MISS
    finally:
        conn.close()


def test_a_header_being_written_is_never_trusted():
    """The two copies of the wal-index header differ while a writer updates them:
    nothing is served then (a bytearray stands in for the mapped file)."""
    header = bytearray(96)
    header[12] = header[48 + 12] = 1  # isInit
    recent = Recent.__new__(Recent)
    recent._map = header  # type: ignore[assignment]
    recent._entries = {}
    recent.hits = 0
    assert recent.version() == bytes(header[:48])
    recent._entries['k'] = (bytes(header[:48]), 'kept', 1)
    assert recent.get('k') == 'kept'
    header[8] = 1  # iChange of the first copy: mid-write
    assert recent.version() is None
    assert recent.get('k') is MISS
    header[48 + 8] = 1  # both copies written: a new version
    assert recent.get('k') is MISS


def test_mapping_the_header_keeps_sqlite_s_lock_on_the_shm_file(tmp_path: Path):
    """Closing any descriptor of the -shm file would drop every POSIX lock this
    process holds on it, SQLite's "a connection is open" lock (the DMS byte)
    included; another process would then reset the file under the open store (a
    two-worker server lost a worker to SIGBUS that way). Another process must not
    get that lock while the store is open, and gets it once the store is closed."""
    store = SQLiteMetadataStore(tmp_path / DB_FILE)
    assert store._recent is not None
    probe = (
        'import fcntl, os, sys\n'
        'try:\n'
        f'    fd = os.open({str(tmp_path / DB_FILE) + "-shm"!r}, os.O_RDWR)\n'
        'except FileNotFoundError:\n'  # the last connection closed: it is removed
        '    sys.exit(0)\n'
        'try:\n'
        '    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 128)\n'  # UNIX_SHM_DMS
        'except OSError:\n'
        '    sys.exit(3)\n'
        'sys.exit(0)\n'
    )
    try:
        held = subprocess.run([sys.executable, '-c', probe], timeout=60)
        assert held.returncode == 3, 'the DMS lock must still be held by the store'
    finally:
        store.close()
    free = subprocess.run([sys.executable, '-c', probe], timeout=60)
    assert free.returncode == 0
