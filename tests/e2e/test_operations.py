"""Operations on a real `oci-ref serve`: /healthz, /readyz, /metrics (with two
workers), upload-session TTL, cap and purges, a deployment switch, online and offline
garbage collection (``oci-ref gc``), a manifest PUT racing a collection, and
``oci-ref fsck``. Webhooks are in test_webhooks.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from oci_ref.app import create_app, open_registry
from oci_ref.config import Config
from oci_ref.gc import collect as collect_async
from oci_ref.reference import Digest
from oci_ref.registry import GC_LOCK, Policy, Registry
from oci_ref.storage import open_stores
from tests.e2e._helpers import Started, children, cmdline
from tests.support import (
    OCI_MANIFEST,
    InProcess,
    assert_error,
    digest,
    image_manifest,
    push_blob,
)

pytestmark = pytest.mark.e2e

MIB = 1 << 20

# -- helpers -------------------------------------------------------------------------

# No keep-alive: every request opens (and the server then closes) a new connection,
# so with several workers the kernel hands requests to any of them.
_fresh = httpx.Client(timeout=30, limits=httpx.Limits(max_keepalive_connections=0))


def fresh(srv: Started, method: str, path: str, **kw: Any) -> httpx.Response:
    headers = {'Connection': 'close', **kw.pop('headers', {})}
    url = path if path.startswith('http') else srv.url + path
    return _fresh.request(method, url, headers=headers, **kw)


def blob_path(root: Path, d: str) -> Path:
    p = Digest.parse(d)
    return root / 'blobs' / p.algorithm / p.encoded[:2] / p.encoded


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """`oci-ref <args>` in a subprocess, without any OCI_REF_* settings inherited."""
    env = {k: v for k, v in os.environ.items() if not k.startswith('OCI_REF_')}
    return subprocess.run([sys.executable, '-m', 'oci_ref', *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=60)


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(srv: Started) -> Samples:
    r = fresh(srv, 'GET', '/metrics')
    assert r.status_code == 200, r.content
    assert r.headers['content-type'].startswith('text/plain; version=0.0.4')
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(r.text)
            for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def push_manifest(c: Any, repo: str, ref: str, body: bytes) -> httpx.Response:
    return c.put(f'/v2/{repo}/manifests/{ref}', content=body,
                 headers={'Content-Type': OCI_MANIFEST})


class Image:
    """A config, a layer and a manifest pushed into ``repo`` (tagged ``tag``, or
    untagged when ``tag`` is None: pushed by digest)."""

    def __init__(self, c: Any, repo: str, tag: str | None, seed: str):
        self.config = json.dumps({'seed': seed}).encode()
        self.layer = f'layer of {seed}'.encode()
        self.blobs = [push_blob(c, repo, self.config), push_blob(c, repo, self.layer)]
        self.body = image_manifest(self.config, [self.layer])
        self.digest = digest(self.body)
        r = push_manifest(c, repo, tag or self.digest, self.body)
        assert r.status_code == 201, r.content


def served(c: Any, repo: str, d: str, kind: str = 'blobs') -> bool:
    r = c.get(f'/v2/{repo}/{kind}/{d}')
    if r.status_code != 200:
        assert_error(r, 404, 'BLOB_UNKNOWN' if kind == 'blobs' else 'MANIFEST_UNKNOWN')
    return r.status_code == 200


@pytest.fixture(scope='module')
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Started]:
    srv = Started(tmp_path_factory.mktemp('ops') / 'data')
    yield srv
    srv.stop()


# -- /healthz and /readyz -----------------------------------------------------------


def test_healthz_is_200_and_readyz_reports_database_and_storage_ready(plain):
    with plain.client() as c:
        r = c.get('/healthz')
        assert r.status_code == 200
        assert r.json() == {'status': 'ok'}
        r = c.get('/readyz')
        assert r.status_code == 200, r.content
        assert r.headers['content-type'].startswith('application/json')
        assert r.json() == {'status': 'ready', 'database': 'ok', 'storage': 'ok'}
        assert c.head('/healthz').status_code == 200
        assert c.head('/readyz').status_code == 200


def test_readyz_is_503_naming_storage_when_uploads_is_not_writable(plain):
    uploads = plain.root / 'uploads'
    aside = plain.root / 'uploads.aside'
    uploads.rename(aside)
    uploads.write_bytes(b'not a directory')
    try:
        with plain.client() as c:
            r = c.get('/readyz')
            error = assert_error(r, 503, 'UNAVAILABLE')
            assert set(error['detail']) == {'storage'}, error
            assert 'storage not writable' in error['detail']['storage']
            assert int(r.headers['retry-after']) > 0
            # Alive all the same: liveness is not readiness.
            assert c.get('/healthz').status_code == 200
    finally:
        uploads.unlink()
        aside.rename(uploads)
    with plain.client() as c:
        r = c.get('/readyz')
        assert r.status_code == 200, r.content
        assert push_blob(c, 'ready/again', b'writable again')


# -- /metrics with two workers ------------------------------------------------------


class Traffic:
    """What the test sent to the two-worker server, each request on a new connection."""

    def __init__(self, srv: Started):
        rng = random.Random(7)
        self.blobs = [rng.randbytes(n) for n in (5, 1000, 20_000, 300_000)]
        self.pushed_bytes = 0
        for data in self.blobs:
            r = fresh(srv, 'POST', '/v2/metrics/app/blobs/uploads/')
            assert r.status_code == 202, r.content
            r = fresh(srv, 'PUT', f'{r.headers["location"]}?digest={digest(data)}',
                      content=data)
            assert r.status_code == 201, r.content
            self.pushed_bytes += len(data)
        self.manifests = [
            image_manifest(self.blobs[0], [data], annotations={'n': str(i)})
            for i, data in enumerate(self.blobs[1:] * 2)
        ]
        for i, body in enumerate(self.manifests):
            r = fresh(srv, 'PUT', f'/v2/metrics/app/manifests/t{i}', content=body,
                      headers={'Content-Type': OCI_MANIFEST})
            assert r.status_code == 201, r.content
        self.pulled_blob_bytes = 0
        self.blob_gets_200 = 0
        for data in self.blobs * 2:
            r = fresh(srv, 'GET', f'/v2/metrics/app/blobs/{digest(data)}')
            assert r.status_code == 200 and r.content == data
            self.pulled_blob_bytes += len(r.content)
            self.blob_gets_200 += 1
        r = fresh(srv, 'GET', f'/v2/metrics/app/blobs/{digest(b"absent")}')
        assert r.status_code == 404
        self.pulled_blob_bytes += len(r.content)  # the error body is sent bytes too
        self.pulled_manifest_bytes = 0
        for i, body in enumerate(self.manifests):
            r = fresh(srv, 'GET', f'/v2/metrics/app/manifests/t{i}')
            assert r.status_code == 200 and r.content == body
            self.pulled_manifest_bytes += len(r.content)
        self.open_sessions = 3
        for _ in range(self.open_sessions):
            assert fresh(srv, 'POST', '/v2/metrics/app/blobs/uploads/').status_code == 202
        # A request is counted once its exchange is over, which in the worker that
        # served it can be a moment after the client has read the response (seen:
        # about 1 scrape in 40 on another connection one request behind). Wait until
        # the last one is counted; every scrape after that must agree exactly.
        want = len(self.blobs) + self.open_sessions
        deadline = time.monotonic() + 10
        while (value(scrape(srv), 'oci_ref_requests_total', endpoint='end-4a',
                     method='POST', status='202') < want
               and time.monotonic() < deadline):
            time.sleep(0.02)


@pytest.fixture(scope='module')
def two_workers(tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[tuple[Started, Traffic]]:
    srv = Started(tmp_path_factory.mktemp('metrics') / 'data', '--workers', '2')
    try:
        yield srv, Traffic(srv)
    finally:
        srv.stop()


SCRAPES = 6


def test_metrics_count_requests_by_endpoint_id_and_status_whichever_worker_answers(
        two_workers):
    srv, t = two_workers
    expected = {
        ('end-4a', 'POST', '202'): len(t.blobs) + t.open_sessions,
        ('end-6', 'PUT', '201'): len(t.blobs),
        ('end-7', 'PUT', '201'): len(t.manifests),
        ('end-2', 'GET', '200'): t.blob_gets_200,
        ('end-2', 'GET', '404'): 1,
        ('end-3', 'GET', '200'): len(t.manifests),
    }
    for _ in range(SCRAPES):
        samples = scrape(srv)
        got = {k: value(samples, 'oci_ref_requests_total', endpoint=k[0], method=k[1],
                        status=k[2]) for k in expected}
        assert got == expected
        assert value(samples, 'oci_ref_requests_total', endpoint='end-7', method='PUT',
                     status='400') == 0


def test_metrics_latency_histograms_count_every_request(two_workers):
    srv, t = two_workers
    for _ in range(SCRAPES):
        samples = scrape(srv)
        for endpoint, n in (('end-7', len(t.manifests)), ('end-6', len(t.blobs))):
            name = 'oci_ref_request_duration_seconds'
            assert value(samples, f'{name}_count', endpoint=endpoint) == n
            assert value(samples, f'{name}_bucket', endpoint=endpoint, le='+Inf') == n
            assert value(samples, f'{name}_sum', endpoint=endpoint) > 0
            buckets = sorted(
                (float(dict(labels)['le']), v) for (metric, labels), v in samples.items()
                if metric == f'{name}_bucket' and dict(labels)['endpoint'] == endpoint)
            assert len(buckets) > 5
            counts = [v for _, v in buckets]
            assert counts == sorted(counts)  # cumulative


def test_metrics_bytes_in_and_out_equal_the_bodies_sent_and_received(two_workers):
    srv, t = two_workers
    for _ in range(SCRAPES):
        samples = scrape(srv)
        assert value(samples, 'oci_ref_received_bytes_total',
                     endpoint='end-6') == t.pushed_bytes
        assert value(samples, 'oci_ref_received_bytes_total',
                     endpoint='end-7') == sum(map(len, t.manifests))
        assert value(samples, 'oci_ref_sent_bytes_total',
                     endpoint='end-2') == t.pulled_blob_bytes
        assert value(samples, 'oci_ref_sent_bytes_total',
                     endpoint='end-3') == t.pulled_manifest_bytes


def test_metrics_gauge_open_upload_sessions_and_storage_bytes(two_workers):
    srv, t = two_workers
    for _ in range(SCRAPES):
        samples = scrape(srv)
        assert value(samples, 'oci_ref_upload_sessions') == t.open_sessions
        assert value(samples, 'oci_ref_storage_bytes', kind='blobs') == sum(
            map(len, t.blobs))
        assert value(samples, 'oci_ref_storage_bytes', kind='manifests') == sum(
            map(len, t.manifests))


def test_both_workers_served_requests_and_recorded_metrics(two_workers):
    srv, _ = two_workers
    workers = {p for p in children(srv.proc.pid) if 'spawn_main' in cmdline(p)}
    assert len(workers) == 2, [(p, cmdline(p)) for p in children(srv.proc.pid)]
    recorded = {int(f.stem.split('_')[-1])
                for f in (srv.root / '.metrics').glob('counter_*.db')}
    assert recorded == workers


# -- upload sessions: idle TTL, periodic purge, cap, startup purge -------------------


@pytest.fixture(scope='module')
def short_ttl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Started]:
    srv = Started(tmp_path_factory.mktemp('ttl') / 'data', '--upload-ttl', '1',
                  '--purge-interval', '1')
    yield srv
    srv.stop()


# Idle expiry against activity is tested with an injected clock (tests/api/test_policy.py,
# tests/unit/test_upload_locks.py); here, the server's own periodic purge.


def test_the_periodic_purge_removes_expired_sessions_and_stray_spools(short_ttl):
    uploads = short_ttl.root / 'uploads'
    with short_ttl.client() as c:
        r = c.post('/v2/ttl/purge/blobs/uploads/')
        assert r.status_code == 202
        session = r.headers['docker-upload-uuid']
    spool = uploads / session
    assert spool.is_file()
    old_strays = [uploads / str(uuid.uuid4()), uploads / f'tmp-{uuid.uuid4()}']
    young_stray = uploads / str(uuid.uuid4())
    long_ago = time.time() - 1000
    for p in [*old_strays, young_stray]:
        p.write_bytes(b'stray spool')
    for p in old_strays:
        os.utime(p, (long_ago, long_ago))
    # Nothing touches the session from now on: only the purge can remove it.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (spool.exists() or
                                           any(p.exists() for p in old_strays)):
        time.sleep(0.1)
    assert not spool.exists()
    assert not any(p.exists() for p in old_strays)
    with sqlite3.connect(short_ttl.root / 'oci-ref.db') as db:
        assert db.execute('SELECT COUNT(*) FROM uploads WHERE id = ?',
                          [session]).fetchone() == (0,)
    # A spool younger than ten minutes may belong to a session being created.
    assert young_stray.is_file()
    young_stray.unlink()


def test_expired_sessions_and_stray_spools_are_purged_at_startup(tmp_path):
    root = tmp_path / 'data'
    srv = Started(root)
    try:
        with srv.client() as c:
            stale = c.post('/v2/boot/app/blobs/uploads/').headers['docker-upload-uuid']
            r = c.post('/v2/boot/app/blobs/uploads/')
            live, live_location = r.headers['docker-upload-uuid'], r.headers['location']
            assert c.patch(live_location, content=b'keep').status_code == 202
    finally:
        assert srv.stop() == 0
    day_ago = time.time() - 2 * 86400
    with sqlite3.connect(root / 'oci-ref.db') as db:
        db.execute('UPDATE uploads SET updated_at = ? WHERE id = ?', [day_ago, stale])
    db.close()
    uploads = root / 'uploads'
    strays = [uploads / str(uuid.uuid4()), uploads / f'tmp-{uuid.uuid4()}']
    for p in strays:
        p.write_bytes(b'left by a crash')
        os.utime(p, (day_ago, day_ago))
    assert (root / 'uploads' / stale).is_file()

    srv = Started(root)  # default TTL a day, periodic purge every 5 minutes
    try:
        assert not (root / 'uploads' / stale).exists()
        assert not any(p.exists() for p in strays)
        assert (root / 'uploads' / live).read_bytes() == b'keep'
        with sqlite3.connect(root / 'oci-ref.db') as db:
            ids = {r[0] for r in db.execute('SELECT id FROM uploads')}
        db.close()
        assert ids == {live}
        with srv.client() as c:
            assert_error(c.get(f'/v2/boot/app/blobs/uploads/{stale}'), 404,
                         'BLOB_UPLOAD_UNKNOWN')
            r = c.get(live_location)
            assert r.status_code == 204 and r.headers['range'] == '0-3'
    finally:
        srv.stop()


@pytest.fixture(scope='module')
def capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Started]:
    srv = Started(tmp_path_factory.mktemp('cap') / 'data', '--max-upload-sessions', '2',
                  '--no-delete-blobs')
    yield srv
    srv.stop()


def test_upload_sessions_past_the_cap_get_429_toomanyrequests_with_retry_after(capped):
    with capped.client() as c:
        first = c.post('/v2/cap/app/blobs/uploads/')
        second = c.post('/v2/cap/other/blobs/uploads/')
        assert (first.status_code, second.status_code) == (202, 202)
        r = c.post('/v2/cap/app/blobs/uploads/')
        assert_error(r, 429, 'TOOMANYREQUESTS')
        assert int(r.headers['retry-after']) > 0
        assert 'location' not in r.headers
        # Closing a session frees a place.
        assert c.delete(first.headers['location']).status_code == 204
        third = c.post('/v2/cap/app/blobs/uploads/')
        assert third.status_code == 202, third.content
        for s in (second, third):
            assert c.delete(s.headers['location']).status_code == 204


def test_no_delete_blobs_flag_reaches_the_server(capped):
    with capped.client() as c:
        d = digest(b'undeletable')
        r = c.post(f'/v2/switch/app/blobs/uploads/?digest={d}', content=b'undeletable')
        assert r.status_code == 201, r.content
        assert_error(c.delete(f'/v2/switch/app/blobs/{d}'), 405, 'UNSUPPORTED')
        assert c.get(f'/v2/switch/app/blobs/{d}').content == b'undeletable'


# -- garbage collection: CLI, online, racing a manifest PUT -------------------------


@pytest.fixture(scope='module')
def gc_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Started]:
    srv = Started(tmp_path_factory.mktemp('gc') / 'data')
    yield srv
    srv.stop()


def clean_slate(srv: Started) -> None:
    """Collect everything collectable, so a test's output is about its content only."""
    r = cli('gc', '--root', srv.root, '--untagged', '--grace', '0')
    assert r.returncode == 0, r.stderr


def test_gc_cli_removes_nothing_younger_than_the_grace_period(gc_server):
    clean_slate(gc_server)
    with gc_server.client() as c:
        stray = push_blob(c, 'gc/young', b'young stray')
        untagged = Image(c, 'gc/young', None, 'young untagged')
        r = cli('gc', '--root', gc_server.root, '--untagged')  # default grace: 1 h
        assert r.returncode == 0, r.stderr
        # §5 of issue 12: a pass that removed nothing says what it kept, and why.
        assert r.stdout == (
            'removed 0 manifests, 0 blob links, 0 blobs (0.0 MiB)\n'
            'kept 1 untagged manifests and 1 unreferenced blob links younger than the '
            'grace period (3600 s); they go in a later pass, or now with --grace 0\n')
        r = cli('gc', '--root', gc_server.root, '--untagged', '--grace', '60')
        assert r.stdout.splitlines() == [
            'removed 0 manifests, 0 blob links, 0 blobs (0.0 MiB)',
            'kept 1 untagged manifests and 1 unreferenced blob links younger than the '
            'grace period (60 s); they go in a later pass, or now with --grace 0']
        assert served(c, 'gc/young', stray)
        assert served(c, 'gc/young', untagged.digest, 'manifests')
        for d in untagged.blobs:
            assert served(c, 'gc/young', d)


def test_gc_cli_dry_run_lists_what_gc_then_removes_and_removes_nothing(gc_server):
    clean_slate(gc_server)
    with gc_server.client() as c:
        tagged = Image(c, 'gc/app', 'v1', 'tagged')
        untagged = Image(c, 'gc/app', None, 'untagged')
        big = os.urandom(MIB)
        stray = push_blob(c, 'gc/app', big)
        expected = sorted([
            f'manifest gc/app@{untagged.digest}',
            *(f'link     gc/app -> {d}' for d in [*untagged.blobs, stray]),
            *(f'blob     {d}' for d in [*untagged.blobs, stray]),
        ])
        freed = len(big) + len(untagged.config) + len(untagged.layer)

        dry = cli('gc', '--root', gc_server.root, '--untagged', '--grace', '0',
                  '--dry-run')
        assert dry.returncode == 0, dry.stderr
        *lines, summary = dry.stdout.splitlines()
        assert sorted(lines) == expected
        assert summary == (f'would remove 1 manifests, 3 blob links, 3 blobs '
                           f'({freed / MIB:.1f} MiB)')
        for d in [*untagged.blobs, stray]:
            assert served(c, 'gc/app', d)
            assert blob_path(gc_server.root, d).is_file()
        assert served(c, 'gc/app', untagged.digest, 'manifests')

        real = cli('gc', '--root', gc_server.root, '--untagged', '--grace', '0')
        assert real.returncode == 0, real.stderr
        *lines, summary = real.stdout.splitlines()
        assert sorted(lines) == expected
        assert summary == (f'removed 1 manifests, 3 blob links, 3 blobs '
                           f'({freed / MIB:.1f} MiB)')
        assert summary.endswith('(1.0 MiB)')
        for d in [*untagged.blobs, stray]:
            assert not served(c, 'gc/app', d)
            assert not blob_path(gc_server.root, d).exists()
        assert not served(c, 'gc/app', untagged.digest, 'manifests')
        assert c.get('/v2/gc/app/manifests/v1').content == tagged.body
        for d in tagged.blobs:
            assert served(c, 'gc/app', d)


def test_gc_cli_without_untagged_keeps_untagged_manifests_and_removes_orphan_files(
        gc_server):
    clean_slate(gc_server)
    with gc_server.client() as c:
        untagged = Image(c, 'gc/keep', None, 'kept untagged')
        stray = push_blob(c, 'gc/keep', b'stray of gc/keep')
        orphan_data = b'a file the database never heard of'
        orphan = digest(orphan_data)
        path = blob_path(gc_server.root, orphan)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(orphan_data)
        past = time.time() - 10
        os.utime(path, (past, past))
        r = cli('gc', '--root', gc_server.root, '--grace', '0')
        assert r.returncode == 0, r.stderr
        assert sorted(r.stdout.splitlines()[:-1]) == sorted([
            f'link     gc/keep -> {stray}', f'blob     {stray}', f'blob     {orphan}'])
        assert r.stdout.splitlines()[-1].startswith(
            'removed 0 manifests, 1 blob links, 2 blobs')
        assert not path.exists()
        assert not served(c, 'gc/keep', stray)
        assert served(c, 'gc/keep', untagged.digest, 'manifests')
        for d in untagged.blobs:
            assert served(c, 'gc/keep', d)


def test_gc_cli_refuses_with_exit_1_while_another_collection_runs(gc_server):
    registry = open_registry(Config(root=gc_server.root, fsync=False))

    async def while_held() -> subprocess.CompletedProcess[str]:
        async with registry.meta.lock(GC_LOCK, exclusive=True, wait=False) as locked:
            assert locked
            return await asyncio.to_thread(cli, 'gc', '--root', gc_server.root,
                                           '--grace', '0')

    try:
        r = asyncio.run(while_held())
    finally:
        registry.close()
    assert r.returncode == 1
    assert 'another collection is running' in r.stderr
    assert r.stdout == ''


def test_online_gc_removes_unreferenced_content_within_seconds_and_keeps_referenced(
        tmp_path):
    srv = Started(tmp_path / 'data', '--gc-interval', '1', '--gc-grace', '1',
                  '--gc-untagged')
    try:
        with srv.client() as c:
            tagged = Image(c, 'online/app', 'v1', 'tagged')
            untagged = Image(c, 'online/app', None, 'untagged')
            stray = push_blob(c, 'online/app', b'unreferenced')
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and served(c, 'online/app', stray):
                time.sleep(0.2)
            assert not served(c, 'online/app', stray)
            assert not blob_path(srv.root, stray).exists()
            # The same pass (or the next) removed the untagged image and its blobs.
            while time.monotonic() < deadline and served(c, 'online/app',
                                                         untagged.digest, 'manifests'):
                time.sleep(0.2)
            assert not served(c, 'online/app', untagged.digest, 'manifests')
            for d in untagged.blobs:
                assert not served(c, 'online/app', d)
            # A later pass, seen by what it removes (no waiting for time to pass),
            # still keeps the tagged image.
            later = push_blob(c, 'online/app', b'removed by a later pass')
            while time.monotonic() < deadline and served(c, 'online/app', later):
                time.sleep(0.2)
            assert not served(c, 'online/app', later)
            assert c.get('/v2/online/app/manifests/v1').content == tagged.body
            for d in tagged.blobs:
                assert served(c, 'online/app', d)
                assert blob_path(srv.root, d).is_file()
    finally:
        srv.stop()


def collect(registry: Registry, **kw: Any) -> Any:
    return asyncio.run(collect_async(registry, **kw))


def race(c: httpx.Client, registry: Registry, grace: float, tag: str, body: bytes,
         order: int, rng: random.Random) -> tuple[httpx.Response, Any]:
    """A manifest PUT and a collection: ``order`` 0 sweeps first, 1 PUTs first (one
    after the other), else both start together, each after a few ms of jitter."""
    if order == 0:
        report = collect(registry, grace=grace)
        return push_manifest(c, 'race/app', tag, body), report
    if order == 1:
        r = push_manifest(c, 'race/app', tag, body)
        return r, collect(registry, grace=grace)
    put: list[httpx.Response] = []
    reports: list[Any] = []
    go = threading.Barrier(2)
    delays = rng.random() * 0.004, rng.random() * 0.004

    def do_put() -> None:
        go.wait()
        time.sleep(delays[0])
        put.append(push_manifest(c, 'race/app', tag, body))

    def do_gc() -> None:
        go.wait()
        time.sleep(delays[1])
        reports.append(collect(registry, grace=grace))

    threads = [threading.Thread(target=do_put), threading.Thread(target=do_gc)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert put and reports, (put, reports)
    return put[0], reports[0]


def test_a_manifest_put_racing_gc_never_leaves_a_dangling_reference(tmp_path):
    """Either the PUT wins (201, its blobs kept) or the sweep does (400
    MANIFEST_BLOB_UNKNOWN, the blobs gone); never 201 with a blob gone."""
    grace = 0.1
    srv = Started(tmp_path / 'data')
    # The collector's clock runs a second ahead: what was just pushed is already
    # past the grace period, so every race is a real one (no sleeping it off).
    settings = Config(root=srv.root, fsync=False)
    stores = open_stores(settings)
    registry = Registry(stores.blobs, stores.meta, policy=Policy.from_config(settings),
                        clock=lambda: time.time() + 1)
    rng = random.Random(1)
    outcomes: list[int] = []
    try:
        with srv.client() as c:
            for i in range(16):
                config = json.dumps({'race': i}).encode()
                layer = os.urandom(64)
                blobs = [push_blob(c, 'race/app', config), push_blob(c, 'race/app', layer)]
                body = image_manifest(config, [layer])
                # 0: sweep first; 1: PUT first; otherwise both at once.
                r, report = race(c, registry, grace, f'r{i}', body, i % 4, rng)
                assert report is not None, 'no other collection runs'
                outcomes.append(r.status_code)
                if r.status_code == 201:
                    for d in blobs:
                        assert served(c, 'race/app', d), f'iteration {i}: {d} dangles'
                        assert blob_path(srv.root, d).is_file()
                    assert c.get(f'/v2/race/app/manifests/r{i}').content == body
                else:
                    assert_error(r, 400, 'MANIFEST_BLOB_UNKNOWN')
                    assert set(report.blobs) >= set(blobs)
                    for d in blobs:
                        assert not served(c, 'race/app', d)
                    # NAME_UNKNOWN when the sweep also removed the emptied repository.
                    r = c.get(f'/v2/race/app/manifests/r{i}')
                    assert r.status_code == 404
                    assert r.json()['errors'][0]['code'] in ('MANIFEST_UNKNOWN',
                                                             'NAME_UNKNOWN')
            # Every manifest that was accepted still has all its blobs after more passes.
            again = collect(registry, grace=0)
            assert again is not None
            for i, status in enumerate(outcomes):
                if status == 201:
                    r = c.get(f'/v2/race/app/manifests/r{i}')
                    assert r.status_code == 200
                    manifest = r.json()
                    for desc in [manifest['config'], *manifest['layers']]:
                        assert served(c, 'race/app', desc['digest'])
    finally:
        registry.close()
        srv.stop()
    assert outcomes[0] == 400 and outcomes[1] == 201, outcomes


# -- fsck ------------------------------------------------------------------------------


def filled_root(tmp_path: Path) -> tuple[Path, list[str]]:
    """A storage root holding one image (pushed in-process); returns its blobs."""
    root = tmp_path / 'data'
    registry = open_registry(Config(root=root, fsync=False))
    try:
        c = InProcess(create_app(Config(root=root, fsync=False), registry=registry))
        img = Image(c, 'fsck/app', 'v1', 'fsck')
    finally:
        registry.close()
    return root, img.blobs


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_fsck_cli_exits_0_on_a_clean_store(tmp_path):
    root, _ = filled_root(tmp_path)
    r = cli('fsck', '--root', root)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout == '0 problems, 0 notices\n'


def test_fsck_cli_exits_1_naming_a_corrupt_blob(tmp_path):
    root, (_, layer) = filled_root(tmp_path)
    flip_a_byte(blob_path(root, layer))
    r = cli('fsck', '--root', root)
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith(f'ERROR  blob-corrupt: {layer}: '), lines
    assert lines[1:] == ['1 problems, 0 notices']
    # Without --repair nothing moves.
    assert blob_path(root, layer).is_file()
    assert not (root / 'quarantine').exists()


def test_fsck_cli_reports_a_deleted_blob_file_as_blob_missing(tmp_path):
    root, (config, _) = filled_root(tmp_path)
    blob_path(root, config).unlink()
    r = cli('fsck', '--root', root)
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stdout.splitlines() == [
        f'ERROR  blob-missing: {config}: no file for a stored blob',
        '1 problems, 0 notices']


def test_fsck_cli_json_prints_one_parseable_object_per_problem_then_the_summary(
        tmp_path):
    root, (config, layer) = filled_root(tmp_path)
    blob_path(root, config).unlink()
    flip_a_byte(blob_path(root, layer))
    r = cli('fsck', '--root', root, '--json')
    assert r.returncode == 1, r.stdout + r.stderr
    *problems, summary = [json.loads(line) for line in r.stdout.splitlines()]
    assert sorted((p['kind'], p['subject'], p['serious']) for p in problems) == sorted([
        ('blob-corrupt', layer, True), ('blob-missing', config, True)])
    assert all(isinstance(p['detail'], str) and p['detail'] for p in problems)
    assert summary == {'kind': 'summary', 'problems': 2, 'notices': 0,
                       'repaired': False}


def test_fsck_cli_json_prints_the_summary_on_a_clean_store(tmp_path):
    root, _ = filled_root(tmp_path)
    r = cli('fsck', '--root', root, '--json')
    assert r.returncode == 0, r.stdout + r.stderr
    assert [json.loads(line) for line in r.stdout.splitlines()] == [
        {'kind': 'summary', 'problems': 0, 'notices': 0, 'repaired': False}]


def test_fsck_repair_quarantines_a_corrupt_blob_which_is_then_404_and_can_be_pushed(
        plain):
    with plain.client() as c:
        data = os.urandom(4096)
        d = push_blob(c, 'fsck/repair', data)
        path = blob_path(plain.root, d)
        flip_a_byte(path)
        corrupt = path.read_bytes()
        r = cli('fsck', '--root', plain.root, '--repair')
        assert r.returncode == 1, r.stdout + r.stderr
        assert f'blob-corrupt: {d}' in r.stdout
        assert 'repaired: moved to quarantine/' in r.stdout
        quarantined = plain.root / 'quarantine' / 'sha256' / d.removeprefix('sha256:')
        assert quarantined.read_bytes() == corrupt
        assert not path.exists()
        assert_error(c.get(f'/v2/fsck/repair/blobs/{d}'), 404, 'BLOB_UNKNOWN')
        assert c.head(f'/v2/fsck/repair/blobs/{d}').status_code == 404
        assert push_blob(c, 'fsck/repair', data) == d
        assert c.get(f'/v2/fsck/repair/blobs/{d}').content == data
        r = cli('fsck', '--root', plain.root)
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout == '0 problems, 0 notices\n'
