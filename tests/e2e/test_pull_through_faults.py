"""Pull-through cache faults that no real registry here can be made to produce, against
tests/e2e/upstreams.py's Stub: wrong bytes for a digest, a blob cut off midway, 429
with Retry-After, and a blob read (with Range) while its download is held midway.
The tests of one mirror run on both store pairs (tests/e2e/conftest.py)."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e._helpers import children, cmdline, write_bytes
from tests.e2e.upstreams import Stub, answer, cut_off
from tests.support import Server, digest

pytestmark = pytest.mark.e2e
DATA = hashlib.sha256(b'faults').digest() * (1024 * 1024 // 32)  # 1 MiB
D = digest(DATA)
BLOB = f'/v2/lib/app/blobs/{D}'
# Past the upstream client's DIRECT_MIN: its body is read from the connection, not
# through httpx (oci_ref/upstream/client.py), so a fault there is caught there.
LARGE = hashlib.sha256(b'large').digest() * (8 * 1024 * 1024 // 32)  # 8 MiB


@pytest.fixture
def stub() -> Iterator[Stub]:
    s = Stub()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def mirror(tmp_path: Path, stub: Stub, stores: dict[str, str]) -> Iterator[Server]:
    config = tmp_path / 'mirror.toml'
    config.write_text(f'[[upstream]]\nname = "stub.test"\nurl = "{stub.url}"\n'
                      'read_timeout = 20\n')
    server = Server(tmp_path / 'data', '--config', str(config), env=stores)
    server.stores = stores  # type: ignore[attr-defined]
    try:
        yield server
    finally:
        server.stop()


def pull(mirror: Server, blob_path: str = BLOB, **headers: str
         ) -> tuple[int, bytes, bool]:
    """(status, body, complete): ``complete`` is False when the response was cut
    short of its Content-Length."""
    with httpx.Client(base_url=mirror.url, timeout=30) as c:
        try:
            with c.stream('GET', f'/v2/stub.test{blob_path[3:]}', headers=headers) as r:
                body = b''.join(r.iter_bytes())
                return r.status_code, body, True
        except httpx.RemoteProtocolError:
            return 200, b'', False


def _s3_keys(stores: dict[str, str], prefix: str) -> list[str]:
    import boto3
    from botocore.config import Config

    s3: Any = boto3.client(
        's3', endpoint_url=stores['OCI_REF_S3_ENDPOINT_URL'],
        region_name=stores['OCI_REF_S3_REGION'],
        aws_access_key_id=stores['AWS_ACCESS_KEY_ID'],
        aws_secret_access_key=stores['AWS_SECRET_ACCESS_KEY'],
        config=Config(s3={'addressing_style': 'path'}))
    page = s3.list_objects_v2(Bucket=stores['OCI_REF_S3_BUCKET'], Prefix=prefix)
    return [o['Key'] for o in page.get('Contents', [])]


def _rows(stores: dict[str, str], sql: str) -> int:
    import psycopg

    with psycopg.connect(stores['OCI_REF_METADATA_STORE']) as db:
        return int(db.execute(sql).fetchone()[0])


def blob_cached(mirror: Server, d: str = D) -> bool:
    stores: dict[str, str] = mirror.stores  # type: ignore[attr-defined]
    if stores:
        return bool(_s3_keys(stores, f'blobs/sha256/{d[7:9]}/{d[7:]}'))
    return any((mirror.root / 'blobs').rglob(d.split(':')[1])) if (
        mirror.root / 'blobs').exists() else False


def spools_left(mirror: Server) -> list[str]:
    """Download spools (and claims) still there."""
    stores: dict[str, str] = mirror.stores  # type: ignore[attr-defined]
    if stores:
        left = _s3_keys(stores, 'uploads/')
        if _rows(stores, 'SELECT count(*) FROM blob_spools'):
            left.append('a blob_spools row')
        if _rows(stores, 'SELECT count(*) FROM cache_fetches'):
            left.append('a cache_fetches row')
        return left
    return [p.name for p in (mirror.root / 'uploads').iterdir()
            if p.name.startswith('tmp-cache-')]


@pytest.mark.parametrize(('size', 'fault', 'cut_at'), [
    ('1 MiB', 'wrong bytes', None), ('1 MiB', 'cut off', 300_000),
    ('8 MiB', 'wrong bytes', None), ('8 MiB', 'cut off', 300_000),
    ('8 MiB', 'cut off', 6 * 1024 * 1024),
])
def test_bad_upstream_bytes_are_never_served_whole_nor_cached(
        mirror: Server, stub: Stub, size: str, fault: str, cut_at: int | None) -> None:
    data = DATA if size == '1 MiB' else LARGE
    d = digest(data)
    blob = f'/v2/lib/app/blobs/{d}'
    if fault == 'wrong bytes':
        bad = bytes(reversed(data))
        stub.routes[blob] = answer(200, bad, Content_Type='application/octet-stream')
    else:
        assert cut_at is not None
        stub.routes[blob] = cut_off(data[:cut_at], len(data))
    status, body, complete = pull(mirror, blob)
    # The client never gets the wrong blob as complete: an error status, or a body
    # cut short of Content-Length.
    assert not (status == 200 and complete and body != data)
    assert status != 500
    assert not blob_cached(mirror, d)
    assert not spools_left(mirror)
    # Once the upstream behaves, the same blob pulls whole and is cached.
    stub.routes[blob] = answer(200, data)
    assert pull(mirror, blob) == (200, data, True)
    assert blob_cached(mirror, d)


def test_rate_limit_passes_retry_after(mirror: Server, stub: Stub) -> None:
    stub.routes['*'] = answer(429, b'{"errors":[{"code":"TOOMANYREQUESTS"}]}',
                              Retry_After='17')
    with mirror.client() as c:
        r = c.get('/v2/stub.test/lib/app/manifests/v1')
        assert r.status_code == 429 and r.headers['retry-after'] == '17'
        assert r.json()['errors'][0]['code'] == 'TOOMANYREQUESTS'
        assert r.json()['errors'][0]['detail']['upstream'] == 'stub.test'


def test_blob_streams_while_fetched_and_range_works_midway(mirror: Server,
                                                           stub: Stub) -> None:
    """The upstream sends half the blob and then waits: a client already has the
    first half, and a Range request inside it is answered, before the rest comes."""
    half = len(DATA) // 2
    sent_half = stub.hold(BLOB, DATA, half, wait=30)
    with httpx.Client(base_url=mirror.url, timeout=30) as c, \
            c.stream('GET', f'/v2/stub.test{BLOB[3:]}') as first:
        assert first.status_code == 200
        assert first.headers['content-length'] == str(len(DATA))
        got = bytearray()
        chunks = first.iter_bytes()
        while len(got) < 1000:
            got += next(chunks)
        assert sent_half.is_set() and not stub.release.is_set()
        r = c.get(f'/v2/stub.test{BLOB[3:]}', headers={'Range': 'bytes=100-199'})
        assert r.status_code == 206 and r.content == DATA[100:200]
        stub.release.set()
        for chunk in chunks:
            got += chunk
        assert bytes(got) == DATA
    assert [m for m, p, _ in stub.requests if p == BLOB] == ['GET']


def test_two_workers_share_one_download(tmp_path: Path, stub: Stub) -> None:
    """--workers 2: while the upstream holds a blob midway, clients reach both
    workers; the worker that is not downloading streams from the other's spool
    (it passed at least half the blob to a socket: /proc/<pid>/io wchar), and the
    upstream saw one GET."""
    half = len(DATA) // 2
    sent_half = stub.hold(BLOB, DATA, half, wait=60)
    config = tmp_path / 'mirror.toml'
    config.write_text(f'[[upstream]]\nname = "stub.test"\nurl = "{stub.url}"\n')
    m = Server(tmp_path / 'data', '--workers', '2', '--config', str(config))
    results: list[bytes] = []

    def pull() -> None:
        with httpx.Client(timeout=60, limits=httpx.Limits(
                max_keepalive_connections=0)) as c:
            r = c.get(f'{m.url}/v2/stub.test{BLOB[3:]}', headers={'Connection': 'close'})
            results.append(r.content if r.status_code == 200 else b'')

    threads: list[threading.Thread] = []
    try:
        workers = worker_pids(m)
        before = {w: write_bytes(w) for w in workers}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if len(threads) < 40:
                threads.append(threading.Thread(target=pull, daemon=True))
                threads[-1].start()
            grew = {w: write_bytes(w) - before[w] for w in workers}
            if sent_half.is_set() and all(g >= half * 0.9 for g in grew.values()):
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f'clients did not reach both workers: {grew}')
        stub.release.set()
        for t in threads:
            t.join(60)
    finally:
        stub.release.set()
        m.stop()
    assert len(results) == len(threads) and all(r == DATA for r in results)
    assert [meth for meth, p, _ in stub.requests if p == BLOB] == ['GET']


def worker_pids(m: Server) -> list[int]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pids = [p for p in children(m.proc.pid) if 'spawn_main' in cmdline(p)]
        if len(pids) == 2:
            return pids
        time.sleep(0.05)
    raise AssertionError('expected 2 workers')


def test_readers_behind_and_inside_the_memory_window_midway(mirror: Server,
                                                            stub: Stub) -> None:
    """A blob well larger than what a download keeps in memory (fetches.KEEP), held
    by the upstream after most of it: a Range from its start (long out of memory,
    read from the spool) and one a little below what has arrived (in memory) are both
    answered byte-exact before the rest comes, and the whole blob afterwards."""
    big = hashlib.sha256(b'window').digest() * (24 * 1024 * 1024 // 32)  # 24 MiB
    d = digest(big)
    path = f'/v2/lib/app/blobs/{d}'
    sent = 20 * 1024 * 1024
    sent_most = stub.hold(path, big, sent, wait=30)
    url = f'/v2/stub.test{path[3:]}'
    with httpx.Client(base_url=mirror.url, timeout=30) as c, c.stream('GET', url) as first:
        assert first.status_code == 200
        got = bytearray()
        chunks = first.iter_bytes()
        while len(got) < sent - 1024 * 1024:
            got += next(chunks)
        assert sent_most.is_set() and not stub.release.is_set()
        # The first client has these bytes: they are published (the last chunk
        # before the pause is held back until the next comes, verify.py).
        inside = sent - 2 * 1024 * 1024
        for lo, hi in ((0, 65_535), (inside, inside + 200_000)):
            r = c.get(url, headers={'Range': f'bytes={lo}-{hi}'})
            assert r.status_code == 206 and r.content == big[lo:hi + 1]
        stub.release.set()
        for chunk in chunks:
            got += chunk
        assert bytes(got) == big
    assert [m for m, p, _ in stub.requests if p == path] == ['GET']
