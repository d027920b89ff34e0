"""``--workers 2``: upload sessions live in SQLite and spool files, not in a process.

Every request goes on a new connection, so the kernel hands it to either worker.
Each PATCH is attributed to the worker that wrote its bytes (the growth of
/proc/<pid>/io ``wchar``), so the test knows that sessions really hopped between
processes rather than hoping they did.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e._helpers import Started, alive, children, cmdline, write_bytes

pytestmark = pytest.mark.e2e

CHUNK = 32 * 1024


@pytest.fixture(scope='module')
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Started]:
    srv = Started(tmp_path_factory.mktemp('workers') / 'data', '--workers', '2')
    try:
        yield srv
    finally:
        srv.stop()


def worker_pids(srv: Started) -> list[int]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pids = [p for p in children(srv.proc.pid) if 'spawn_main' in cmdline(p)]
        if len(pids) == 2:
            return pids
        time.sleep(0.05)
    raise AssertionError(f'expected 2 workers under {srv.proc.pid}: '
                         f'{[(p, cmdline(p)) for p in children(srv.proc.pid)]}')


# No keep-alive: every request opens (and the server then closes) a new connection.
_client = httpx.Client(timeout=30, limits=httpx.Limits(max_keepalive_connections=0))


def fresh(srv: Started, method: str, path: str, **kw: object) -> httpx.Response:
    """One request on its own connection."""
    headers = {'Connection': 'close', **kw.pop('headers', {})}  # type: ignore[dict-item]
    return _client.request(method, srv.url + path if path.startswith('/') else path,
                           headers=headers, **kw)  # type: ignore[arg-type]


class Session:
    def __init__(self, srv: Started, name: str, rng: random.Random):
        self.name = name
        self.data = bytearray()
        self.rng = rng
        self.handled_by: list[int] = []
        r = fresh(srv, 'POST', f'/v2/{name}/blobs/uploads/')
        assert r.status_code == 202, r.content
        self.location = r.headers['location']

    def patch(self, srv: Started, workers: list[int]) -> None:
        n = CHUNK + self.rng.randrange(4096)
        chunk = self.rng.randbytes(n)
        start = len(self.data)
        before = {w: write_bytes(w) for w in workers}
        if len(self.handled_by) % 2:
            # A streamed chunk: chunked transfer-encoding, no Content-Range.
            r = fresh(srv, 'PATCH', self.location, content=iter([chunk[:n // 3],
                                                                  chunk[n // 3:]]))
        else:
            r = fresh(srv, 'PATCH', self.location, content=chunk, headers={
                'Content-Range': f'{start}-{start + n - 1}'})
        assert r.status_code == 202, r.content
        self.data += chunk
        assert r.headers['range'] == f'0-{len(self.data) - 1}'
        self.location = r.headers['location']
        grew = {w: write_bytes(w) - before[w] for w in workers}
        writers = [w for w, g in grew.items() if g >= n]
        assert len(writers) == 1, (grew, n)
        self.handled_by.append(writers[0])


def test_ping_answers_on_every_connection_with_two_workers(two_workers):
    workers = worker_pids(two_workers)
    for _ in range(20):
        r = fresh(two_workers, 'GET', '/v2/')
        assert r.status_code == 200
        assert r.headers['docker-distribution-api-version'] == 'registry/2.0'
        assert r.json() == {}
    assert all(alive(w) for w in workers)


def test_chunked_upload_sessions_hop_between_worker_processes(two_workers):
    """Several sessions, interleaved, many small PATCHes (alternately with
    Content-Range and chunked without), each on a new connection; they finish with
    the right digests (sha256, and sha512 for a session opened without
    digest-algorithm) although their chunks were written by different processes."""
    workers = worker_pids(two_workers)
    rng = random.Random(1234)
    done: list[Session] = []
    for batch in range(5):
        sessions = [Session(two_workers, f'workers/b{batch}/s{i}', rng) for i in range(4)]
        for _ in range(12):
            for s in sessions:
                s.patch(two_workers, workers)
        for i, s in enumerate(sessions):
            status = fresh(two_workers, 'GET', s.location)
            assert status.status_code == 204, status.content
            assert status.headers['range'] == f'0-{len(s.data) - 1}'
            last = rng.randbytes(1000) if i % 2 else b''
            whole = bytes(s.data) + last
            algorithm = 'sha512' if i == 3 else 'sha256'
            d = f'{algorithm}:{hashlib.new(algorithm, whole).hexdigest()}'
            sep = '&' if '?' in s.location else '?'
            r = fresh(two_workers, 'PUT', f'{s.location}{sep}digest={d}', content=last)
            assert r.status_code == 201, (s.name, r.content)
            assert r.headers['docker-content-digest'] == d
            got = fresh(two_workers, 'GET', f'/v2/{s.name}/blobs/{d}')
            assert got.status_code == 200
            assert hashlib.new(algorithm, got.content).hexdigest() == d.split(':')[1]
            assert got.content == whole
            # The session is gone for both workers.
            for _ in range(4):
                assert fresh(two_workers, 'GET', s.location).status_code == 404
            done.append(s)
        hopped = [s for s in done if len(set(s.handled_by)) == 2]
        if len(done) >= 8 and hopped:
            break
    per_worker = {w: sum(s.handled_by.count(w) for s in done) for w in workers}
    hops = sum(a != b for s in done for a, b in itertools.pairwise(s.handled_by))
    print(f'PATCHes per worker {per_worker}, worker changes within sessions: {hops}')
    assert all(per_worker.values()), per_worker
    assert hopped, 'no session had its chunks written by both workers'
    assert hops >= 1


def test_stop_terminates_supervisor_and_workers_cleanly(tmp_path: Path):
    srv = Started(tmp_path / 'data', '--workers', '2')
    try:
        workers = worker_pids(srv)
        assert fresh(srv, 'GET', '/v2/').status_code == 200
    finally:
        t0 = time.monotonic()
        rc = srv.stop()
        took = time.monotonic() - t0
    assert rc == 0, (rc, srv.log.read_text()[-2000:])
    assert took < 10, took
    deadline = time.monotonic() + 5
    while any(alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(w) for w in workers), workers
    log = srv.log.read_text()
    assert 'Traceback' not in log, log[-3000:]
    assert not os.path.exists(f'/proc/{srv.proc.pid}/status') or not alive(srv.proc.pid)


def test_reads_kept_by_one_worker_never_outlive_a_push_by_the_other(two_workers):
    """Each worker serves a repeated manifest or tags read without a query while
    the database is unchanged (oci_ref/storage/sqlite_recent.py). A tag moved, added
    or deleted through either worker is what the next read answers, from either."""
    srv = two_workers
    config = b'{}'
    config_digest = 'sha256:' + hashlib.sha256(config).hexdigest()
    assert fresh(srv, 'POST', f'/v2/coherent/blobs/uploads/?digest={config_digest}',
                 content=config).status_code == 201
    tags: list[str] = []
    for i in range(24):
        body = (b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1'
                b'+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json",'
                b'"digest":"' + config_digest.encode() + b'","size":2},"layers":[],'
                b'"annotations":{"n":"' + str(i).encode() + b'"}}')
        digest = 'sha256:' + hashlib.sha256(body).hexdigest()
        tag = f't{i:02d}'
        ct = {'Content-Type': 'application/vnd.oci.image.manifest.v1+json'}
        assert fresh(srv, 'PUT', '/v2/coherent/manifests/moving', content=body,
                     headers=ct).status_code == 201
        assert fresh(srv, 'PUT', f'/v2/coherent/manifests/{tag}', content=body,
                     headers=ct).status_code == 201
        tags.append(tag)
        for _ in range(4):  # new connections: either worker, its cache warm
            got = fresh(srv, 'GET', '/v2/coherent/manifests/moving')
            assert got.status_code == 200
            assert got.headers['Docker-Content-Digest'] == digest
            head = fresh(srv, 'HEAD', f'/v2/coherent/manifests/{tag}')
            assert head.headers['Docker-Content-Digest'] == digest
            listed = fresh(srv, 'GET', '/v2/coherent/tags/list')
            assert listed.json()['tags'] == ['moving', *tags]
        if i % 6 == 5:
            assert fresh(srv, 'DELETE', f'/v2/coherent/manifests/{tag}').status_code == 202
            tags.remove(tag)
            for _ in range(4):
                assert fresh(srv, 'GET', f'/v2/coherent/manifests/{tag}').status_code == 404
                assert fresh(srv, 'GET', '/v2/coherent/tags/list').json()['tags'] == [
                    'moving', *tags]
