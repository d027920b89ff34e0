"""The pull-through cache on replicas (issues 13 and 14): two `oci-ref serve`
processes with their metadata in one PostgreSQL database and their blobs in one S3
bucket (moto), each with its own --root (nothing shared on disk), behind haproxy
round-robin, mirroring a token-auth `oci-ref serve` upstream. The cache's state
(tag validations, download claims, the spool being downloaded) is in the shared
stores, so the replicas share one cache: a blob is downloaded once for both.
"""

from __future__ import annotations

import hashlib
import os
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from oci_ref.testing import OCIRegistry
from tests.e2e.test_pull_through import ENV, mirror_config, upstream_requests
from tests.e2e.upstreams import Stub, answer, pusher, token_upstream
from tests.engines import HAProxy, S3Bucket
from tests.interop.auth import AuthServer
from tests.support import OCI_MANIFEST, digest, image_manifest, push_blob

pytestmark = [pytest.mark.e2e, pytest.mark.engines]
LoadBalancer = Callable[[Sequence[str]], HAProxy]
CLIENTS = 12


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[AuthServer]:
    server = token_upstream(tmp_path / 'upstream')
    try:
        yield server
    finally:
        server.stop()


def start_replicas(tmp_path: Path, config: Path, postgres_url: str, s3_bucket: S3Bucket,
                   env: dict[str, str] | None = None) -> list[OCIRegistry]:
    """Two replicas on the shared stores, started at once (both migrate together),
    each with its own --root."""
    settings: dict[str, Any] = {
        'blob_store': 's3', 's3_bucket': s3_bucket.bucket,
        's3_endpoint_url': s3_bucket.endpoint_url, 's3_region': s3_bucket.region,
        's3_path_style': True, 'config': config}
    env = {**(env or {}), **s3_bucket.env, 'OCI_REF_METADATA_STORE': postgres_url}
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(OCIRegistry, tmp_path / f'r{i}' / 'data', env=env,
                               **settings) for i in range(2)]
    servers = [f.result() for f in futures if f.exception() is None]
    if len(servers) < 2:
        for server in servers:
            server.stop()
        raise next(f.exception() for f in futures if f.exception() is not None)
    return servers


def test_replicas_on_postgresql_and_s3_share_one_cache(
        tmp_path: Path, upstream: AuthServer, postgres_url: str, s3_bucket: S3Bucket,
        load_balancer: LoadBalancer) -> None:
    """CLIENTS clients pull the same uncached image through the load balancer at
    once (so through both replicas): each blob is downloaded from the upstream
    exactly once, every client gets every byte right, both replicas served it, and
    no download claim or spool is left in the shared stores."""
    import psycopg

    # 12 MiB + 1: several of S3's 5 MiB pieces, joined at commit by part copies.
    big = os.urandom(12 * 1024 * 1024 + 1)
    small = os.urandom(300 * 1024)
    config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers"}}'
    with pusher(upstream) as u:
        blobs = [push_blob(u, 'mirrored/shared', b) for b in (config, big, small)]
        body = image_manifest(config, [big, small])
        r = u.put('/v2/mirrored/shared/manifests/v1', content=body,
                  headers={'Content-Type': OCI_MANIFEST})
        assert r.status_code == 201, r.text
    expected = {blobs[0]: config, blobs[1]: big, blobs[2]: small}

    servers = start_replicas(tmp_path, mirror_config(tmp_path / 'mirror.toml',
                                                     upstream.url),
                             postgres_url, s3_bucket, ENV)
    try:
        lb = load_balancer([s.url for s in servers])
        start = threading.Barrier(CLIENTS)

        def pull(_: int) -> dict[str, bytes]:
            with httpx.Client(base_url=lb.url, timeout=120) as c:
                start.wait(60)
                r = c.get('/v2/up.test/mirrored/shared/manifests/v1',
                          headers={'Accept': OCI_MANIFEST})
                assert r.status_code == 200, r.text
                assert r.content == body
                got = {}
                for d in blobs:
                    r = c.get(f'/v2/up.test/mirrored/shared/blobs/{d}')
                    assert r.status_code == 200, (d, r.status_code, r.content[:300])
                    got[d] = r.content
                return got

        with ThreadPoolExecutor(CLIENTS) as pool:
            results = list(pool.map(pull, range(CLIENTS)))
        for got in results:
            assert got == expected  # byte-exact for every client, every blob
        for d in blobs:
            assert upstream_requests(upstream, 'GET', f'/v2/mirrored/shared/blobs/{d}'
                                     ) == 1, d
            seen = [len([line for line in s.log.read_text(errors='replace').splitlines()
                         if f'"GET /v2/up.test/mirrored/shared/blobs/{d}' in line])
                    for s in servers]
            assert all(seen) and sum(seen) == CLIENTS, seen  # no stickiness
        # Manifests are single-flight across replicas too (a metadata-store lock per
        # tag and digest): one tag check and one manifest GET in all.
        assert upstream_requests(upstream, 'HEAD', '/v2/mirrored/shared/manifests/v1') == 1
        assert upstream_requests(upstream, 'GET',
                                 f'/v2/mirrored/shared/manifests/{digest(body)}') == 1
        with psycopg.connect(postgres_url) as db:
            assert db.execute('SELECT count(*) FROM cache_fetches').fetchone() == (0,)
            assert db.execute('SELECT count(*) FROM blob_spools').fetchone() == (0,)
            assert db.execute('SELECT count(*) FROM cache_tags').fetchone() == (1,)
        # Cached now: each replica serves it with the upstream gone.
        upstream.stop()
        for server in servers:
            r = httpx.get(f'{server.url}/v2/up.test/mirrored/shared/blobs/{blobs[1]}',
                          timeout=60)
            assert r.status_code == 200 and hashlib.sha256(r.content).hexdigest() == \
                blobs[1].split(':')[1]
    finally:
        for server in servers:
            server.stop()


def test_a_replica_streams_the_download_another_replica_is_making(
        tmp_path: Path, postgres_url: str, s3_bucket: S3Bucket) -> None:
    """The upstream sends 7 MiB of a 12 MiB blob and then holds it: replica A is
    downloading; a client of replica B receives more than the first 5 MiB (read
    back from the pieces A wrote to S3) before the upstream sends the rest, then
    the whole blob. The upstream saw one GET. (tests/e2e/upstreams.py's Stub: it
    can hold a body midway.)"""
    data = os.urandom(12 * 1024 * 1024)
    d = f'sha256:{hashlib.sha256(data).hexdigest()}'
    path = f'/v2/lib/app/blobs/{d}'
    held_at = 7 * 1024 * 1024
    stub = Stub()
    sent = stub.hold(path, data, held_at, wait=60)
    config = tmp_path / 'mirror.toml'
    config.write_text(f'[[upstream]]\nname = "stub.test"\nurl = "{stub.url}"\n'
                      'read_timeout = 90\n')
    servers: list[OCIRegistry] = []
    try:
        servers = start_replicas(tmp_path, config, postgres_url, s3_bucket)
        a, b = servers
        progress = {a.url: threading.Event(), b.url: threading.Event()}

        def pull(server: OCIRegistry) -> bytes:
            got = bytearray()
            with httpx.Client(timeout=120) as c, c.stream(
                    'GET', f'{server.url}/v2/stub.test{path[3:]}') as r:
                assert r.status_code == 200, r.read()
                for chunk in r.iter_bytes():
                    got += chunk
                    if len(got) > 5 * 1024 * 1024:
                        progress[server.url].set()
            return bytes(got)

        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(pull, a)
            assert sent.wait(60), 'replica A never fetched the blob'
            second = pool.submit(pull, b)
            # B follows A's download: past 5 MiB while the upstream still holds.
            assert progress[b.url].wait(60), 'replica B waited for the whole blob'
            assert not stub.release.is_set()
            stub.release.set()
            assert first.result() == data and second.result() == data
        assert [m for m, p, _ in stub.requests if p == path] == ['GET']
        for server in servers:  # committed once, served by both
            r = httpx.get(f'{server.url}/v2/stub.test{path[3:]}', timeout=60)
            assert r.status_code == 200 and r.content == data
        assert [m for m, p, _ in stub.requests if p == path] == ['GET']
    finally:
        stub.stop()
        for server in servers:
            server.stop()


def test_a_replica_killed_mid_download_leaves_no_blob_and_another_takes_over(
        tmp_path: Path, postgres_url: str, s3_bucket: S3Bucket) -> None:
    """Replica A is SIGKILLed while it downloads (the upstream holds the blob
    midway) and replica B's client follows it: B's client never gets the blob as
    complete, and B's next request takes the download over at once (A's claim
    died with A's presence lock, as its leases do; no waiting out its heartbeat),
    byte-exact. Nothing half-written is ever visible as the blob."""
    import psycopg

    data = os.urandom(8 * 1024 * 1024)
    d = f'sha256:{hashlib.sha256(data).hexdigest()}'
    path = f'/v2/lib/app/blobs/{d}'
    stub = Stub()
    sent = stub.hold(path, data, 6 * 1024 * 1024, wait=120, finish=False)
    config = tmp_path / 'mirror.toml'
    config.write_text(f'[[upstream]]\nname = "stub.test"\nurl = "{stub.url}"\n'
                      'read_timeout = 120\n')
    servers: list[OCIRegistry] = []

    def pull(server: OCIRegistry, started: threading.Event | None = None
             ) -> tuple[int, bytes, bool]:
        """(status, body, complete); ``started`` is set at the first body bytes."""
        got = bytearray()
        with httpx.Client(timeout=120) as c:
            try:
                with c.stream('GET', f'{server.url}/v2/stub.test{path[3:]}') as r:
                    for chunk in r.iter_bytes():
                        got += chunk
                        if started is not None:
                            started.set()
                    return r.status_code, bytes(got), True
            except httpx.HTTPError:
                return 0, b'', False

    try:
        servers = start_replicas(tmp_path, config, postgres_url, s3_bucket)
        a, b = servers
        with ThreadPoolExecutor(2) as pool:
            pool.submit(pull, a)
            assert sent.wait(60), 'replica A never fetched the blob'
            following = threading.Event()
            followed = pool.submit(pull, b, following)
            # B's client has bytes of A's spool: B follows A's claim.
            assert following.wait(60), 'replica B did not follow the download'
            a.process.send_signal(signal.SIGKILL)
            a.process.wait()
            status, body, complete = followed.result()
            # Cut short or an error: never the blob as complete with other bytes.
            assert not (status == 200 and complete and body != data)
            assert status != 500
        stub.routes[path] = answer(200, data)
        # The follower learnt A is dead, so A's claim is dead for everyone now.
        assert pull(b) == (200, data, True)
        gets = [m for m, p, _ in stub.requests if p == path]
        assert gets == ['GET', 'GET']  # A's, then B's takeover
        r = httpx.get(f'{b.url}/v2/stub.test{path[3:]}', timeout=60)
        assert r.status_code == 200 and r.content == data
        with psycopg.connect(postgres_url) as db:  # the takeover's claim ended
            assert db.execute('SELECT count(*) FROM cache_fetches').fetchone() == (0,)
    finally:
        stub.stop()
        for server in servers:
            server.stop()
