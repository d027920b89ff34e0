"""A metadata store that cannot answer stalls nobody else (issue 12 §1, issue 14).

Another process holds SQLite's write lock (as a long GC sweep or a stuck tool would)
for longer than the server's busy timeout. Meanwhile, on a real `oci-ref serve`:
/healthz and blob GETs of other requests keep answering (the event loop is free:
store calls run in threads), the request that needs the lock gets a 503 naming the
store, with Retry-After, never a 500, and it leaves nothing behind (no spool, no
session row). Once the lock is gone, the same request succeeds.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e._helpers import Started
from tests.support import assert_error, push_blob

pytestmark = pytest.mark.e2e

BUSY_MS = 1500


@pytest.fixture(scope='module')
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Started]:
    server = Started(tmp_path_factory.mktemp('locked') / 'data',
                     '--busy-timeout-ms', str(BUSY_MS))
    yield server
    server.stop()


def test_a_held_write_lock_gives_503_to_its_request_and_stalls_no_other(srv):
    with srv.client() as c:
        blob = b'readable while the database is locked' * 1000
        d = push_blob(c, 'locked/app', blob)
    outside = sqlite3.connect(srv.root / 'oci-ref.db', isolation_level=None)
    outside.execute('BEGIN IMMEDIATE')  # the write lock, held from another process
    posted: list[httpx.Response] = []
    done = threading.Event()

    def blocked_post() -> None:
        with httpx.Client(base_url=srv.url, timeout=60) as post_client:
            posted.append(post_client.post('/v2/locked/app/blobs/uploads/'))
        done.set()

    try:
        thread = threading.Thread(target=blocked_post)
        thread.start()
        answered = 0
        with srv.client() as c:
            # Other requests keep answering while the POST waits for the lock. With
            # the store on the event loop, none would until the POST gave up.
            while not done.is_set():
                assert c.get('/healthz').status_code == 200
                r = c.get(f'/v2/locked/app/blobs/{d}')
                assert r.status_code == 200 and r.content == blob
                answered += 1
        thread.join(30)
    finally:
        outside.execute('ROLLBACK')
        outside.close()
    assert answered >= 5, f'only {answered} requests answered while the POST waited'
    error = assert_error(posted[0], 503, 'UNAVAILABLE')
    assert error['detail']['store'] == 'metadata (sqlite)', error
    assert 'locked' in error['detail']['reason']
    assert int(posted[0].headers['retry-after']) >= 1
    # Nothing left behind: no spool, no session row.
    assert [p.name for p in (srv.root / 'uploads').iterdir()] == []
    with sqlite3.connect(f'file:{srv.root / "oci-ref.db"}?mode=ro', uri=True) as db:
        assert db.execute('SELECT COUNT(*) FROM uploads').fetchone() == (0,)
    db.close()
    with srv.client() as c:
        # The lock is gone: the same request works.
        r = c.post('/v2/locked/app/blobs/uploads/')
        assert r.status_code == 202, r.content
        assert c.delete(r.headers['location']).status_code == 204


def test_readyz_names_the_locked_database_while_healthz_stays_up(srv):
    outside = sqlite3.connect(srv.root / 'oci-ref.db', isolation_level=None)
    outside.execute('BEGIN IMMEDIATE')
    try:
        with srv.client() as c:
            r = c.get('/readyz')
            error = assert_error(r, 503, 'UNAVAILABLE')
            assert 'database not writable' in error['detail']['database']
            assert c.get('/healthz').status_code == 200
    finally:
        outside.execute('ROLLBACK')
        outside.close()
    with srv.client() as c:
        assert c.get('/readyz').status_code == 200
