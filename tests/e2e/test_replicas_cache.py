"""The pull-through cache on replicas (issues 13 and 14): two `oci-ref serve`
processes with their metadata in one PostgreSQL database and their blobs in one S3
bucket (moto), each with its own --root (nothing shared on disk), behind haproxy
round-robin, mirroring a token-auth `oci-ref serve` upstream. The cache's state
(tag validations, download claims, the spool being downloaded, last uses) is in
the shared stores, so the replicas share one cache: a blob is downloaded once for
both, and what one evicts is evicted for both.
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
from tests.e2e.test_pull_through_evict import (
    BASE,
    config_file,
    config_of,
    evicted,
    fsck,
    layer,
    pull,
    push,
)
from tests.e2e.test_pull_through_evict import ENV as EVICT_ENV
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


def test_an_eviction_on_one_replica_is_what_the_other_serves(
        tmp_path: Path, upstream: AuthServer, postgres_url: str, s3_bucket: S3Bucket,
        load_balancer: LoadBalancer) -> None:
    """A cap that fits two of three images (test_pull_through_evict.py's), two
    replicas behind haproxy. Replica A fetches images a and b; a is used again
    through replica B, so b is the least recently used of the deployment (the uses
    both record are one order); c pulled through B fills the cache and B evicts
    b, not a. Then replica A and the load balancer serve a and c without asking
    the upstream, A fetches b again from it (and, over the cap again, evicts a,
    the oldest use of either replica), an image pushed through B (sharing b's
    layer and the base) stays whole everywhere, b's own config is gone from the
    bucket, and fsck of the shared stores is clean."""
    import boto3
    import psycopg

    repos = {n: f'mirrored/replicas-{n}' for n in 'abc'}
    with pusher(upstream) as u:
        images = {n: push(u, repo, n) for n, repo in repos.items()}
    config = config_file(tmp_path / 'mirror.toml', upstream.url)
    servers = start_replicas(tmp_path, config, postgres_url, s3_bucket, EVICT_ENV)
    s3 = boto3.client('s3', **s3_bucket.client_kwargs())

    def in_bucket(blob: str) -> bool:
        hex_ = blob.removeprefix('sha256:')
        listed = s3.list_objects_v2(Bucket=s3_bucket.bucket,
                                    Prefix=f'blobs/sha256/{hex_[:2]}/{hex_}')
        return bool(listed.get('Contents'))

    def fetched(n: str, key: str) -> int:
        kind = 'manifests' if key == 'manifest' else 'blobs'
        return upstream_requests(upstream, 'GET', f'/v2/{repos[n]}/{kind}/{images[n][key]}')

    own = image_manifest(config_of('mine'), [BASE, layer('b')])
    keys = ('manifest', 'config', 'layer', 'base')
    try:
        a, b = servers
        lb = load_balancer([s.url for s in servers])
        with httpx.Client(base_url=a.url, timeout=60) as via_a, \
                httpx.Client(base_url=b.url, timeout=60) as via_b, \
                httpx.Client(base_url=lb.url, timeout=60) as via_lb:
            push(via_b, 'mine/app', 'mine', layer_of='b')
            pull(via_a, repos['a'], images['a'])
            pull(via_a, repos['b'], images['b'])
            assert via_b.get(f'/v2/up.test/{repos["a"]}/manifests/v1').status_code == 200
            pull(via_b, repos['c'], images['c'])
            evicted(b, 1)
            evicted(a, 0)  # A evicted nothing itself
            assert not in_bucket(images['b']['config'])  # only b had it
            assert all(in_bucket(images[n]['config']) for n in 'ac')
            with psycopg.connect(postgres_url) as db:
                assert db.execute('SELECT count(*) FROM manifests WHERE repo = %s',
                                  [f'up.test/{repos["b"]}']).fetchone() == (0,)
            before = {(n, k): fetched(n, k) for n in 'abc' for k in keys}
            assert set(before.values()) == {1}, before
            # What B kept, A and the load balancer serve without the upstream.
            for c in (via_a, via_lb):
                for n in 'ac':
                    pull(c, repos[n], images[n])
                for blob in (config_of('mine'), BASE, layer('b')):
                    r = c.get(f'/v2/mine/app/blobs/{digest(blob)}')
                    assert r.status_code == 200 and r.content == blob
                assert c.get('/v2/mine/app/manifests/v1').content == own
            assert {k: fetched(*k) for k in before} == before
            # What B evicted, A fetches again.
            pull(via_a, repos['b'], images['b'])
            assert {k: fetched(*k) - v for k, v in before.items() if fetched(*k) != v
                    } == {('b', k): 1 for k in keys}
            evicted(a, 1)  # over the cap again: A evicts now, a (used before c)
            with psycopg.connect(postgres_url) as db:
                assert sorted(r[0] for r in db.execute(
                    "SELECT repo FROM manifests WHERE repo LIKE 'up.test/%'")) == [
                    f'up.test/{repos[n]}' for n in 'bc']
            assert via_b.get('/v2/mine/app/manifests/v1').content == own
    finally:
        for server in servers:
            server.stop()
    summary = fsck(servers[0], config, {
        **s3_bucket.env, 'OCI_REF_METADATA_STORE': postgres_url,
        'OCI_REF_BLOB_STORE': 's3', 'OCI_REF_S3_BUCKET': s3_bucket.bucket,
        'OCI_REF_S3_ENDPOINT_URL': s3_bucket.endpoint_url,
        'OCI_REF_S3_REGION': s3_bucket.region, 'OCI_REF_S3_PATH_STYLE': 'true'})
    # Cached only: b's and c's configs, c's layer (b's is pushed too, as is BASE).
    assert summary['cached'] == {'manifests': 2, 'blobs': 3}, summary
    assert summary['pushed'] == {'manifests': 1, 'blobs': 3}, summary
