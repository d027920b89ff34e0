"""Eviction of the pull-through cache end to end (issue 13): a real `oci-ref serve`
with ``cache_max_bytes`` mirroring a second `oci-ref serve` in token-auth mode and
CNCF distribution. Filled over its cap, it evicts the least recently used image;
what it removed is fetched again (counted in the upstream's access log), pushed
content and blobs a kept image shares stay, and fsck is clean. Each test runs on
both store pairs (``store_pair``, tests/e2e/conftest.py): SQLite + filesystem, and
PostgreSQL + S3 (moto). Replicas evicting: tests/e2e/test_replicas_cache.py."""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from oci_ref.testing import OCIRegistry
from tests.e2e.test_pull_through import upstream_requests
from tests.e2e.upstreams import USERS, DistributionUpstream, pusher, token_upstream
from tests.interop.auth import AuthServer
from tests.support import (
    OCI_MANIFEST,
    Server,
    counted,
    digest,
    image_manifest,
    push_blob,
)

pytestmark = pytest.mark.e2e
LAYER = 100_000
BASE = hashlib.sha256(b'evict: base').digest() * (50_000 // 32)  # shared by every image
# Two images fit (base once, two layers, configs, manifests); a third does not.
CAP = 300_000
ENV = {'OCI_REF_UPSTREAM_UP_TEST_USERNAME': 'mirror',
       'OCI_REF_UPSTREAM_UP_TEST_PASSWORD': USERS['mirror']}


def layer(name: str) -> bytes:
    return hashlib.sha256(f'evict: {name}'.encode()).digest() * (LAYER // 32)


def config_of(name: str) -> bytes:
    return json.dumps({'architecture': 'amd64', 'os': 'linux', 'name': name,
                       'rootfs': {'type': 'layers', 'diff_ids': []}}).encode()


def push(c: httpx.Client, repo: str, name: str, *, layer_of: str | None = None
         ) -> dict[str, str]:
    """An image of a config, BASE and its own layer (or image ``layer_of``'s),
    tagged v1; its digests."""
    own = layer(layer_of or name)
    for blob in (config_of(name), BASE, own):
        push_blob(c, repo, blob)
    body = image_manifest(config_of(name), [BASE, own])
    r = c.put(f'/v2/{repo}/manifests/v1', content=body,
              headers={'Content-Type': OCI_MANIFEST})
    assert r.status_code == 201, r.content
    return {'manifest': digest(body), 'config': digest(config_of(name)),
            'layer': digest(own), 'base': digest(BASE)}


def config_file(path: Path, url: str, *, cap: int = CAP, min_age: int = 0,
                touch: int = 0) -> Path:
    path.write_text(f'''
[[upstream]]
name = "up.test"
url = "{url}"
tag_ttl = 3600
cache_max_bytes = {cap}
cache_touch_interval = {touch}
cache_min_age = {min_age}
''')
    return path


def pull(c: httpx.Client, repo: str, image: dict[str, str]) -> None:
    """What a client does: the manifest by tag, then every blob."""
    r = c.get(f'/v2/up.test/{repo}/manifests/v1', headers={'Accept': OCI_MANIFEST})
    assert r.status_code == 200, r.content
    assert r.headers['docker-content-digest'] == image['manifest']
    for key in ('config', 'base', 'layer'):
        r = c.get(f'/v2/up.test/{repo}/blobs/{image[key]}')
        assert r.status_code == 200 and digest(r.content) == image[key], key


def evicted(mirror: OCIRegistry, manifests: int, *, at_least: bool = False) -> None:
    """Wait (on the metric) until ``manifests`` cached manifests were evicted
    (exactly, or ``at_least``) by ``mirror`` (a process: its own count)."""
    deadline = time.monotonic() + 90
    with httpx.Client(base_url=mirror.url, timeout=60) as c:
        while True:
            m = re.search(r'^oci_ref_upstream_evicted_total\{kind="manifest",'
                          r'upstream="up\.test"\} (\S+)$', c.get('/metrics').text, re.M)
            seen = int(float(m[1])) if m else 0
            if seen == manifests or (at_least and seen > manifests):
                return
            assert seen < manifests and time.monotonic() < deadline, (seen, manifests)


def fsck(mirror: OCIRegistry, config: Path, stores: dict[str, str]
         ) -> dict[str, object]:
    """fsck of the mirror's stores (``stores``: the pair's environment)."""
    done = subprocess.run([sys.executable, '-m', 'oci_ref', 'fsck', '--root',
                           str(mirror.root), '--config', str(config), '--json'],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, **stores})
    assert done.returncode == 0, done.stdout + done.stderr
    summary: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    assert (summary['problems'], summary['notices']) == (0, 0), done.stdout
    return summary


def lose_blob(mirror: Server, stores: dict[str, str], blob: str) -> None:
    """Remove a blob's content behind the server (its rows stay): its file, or on
    S3 its object."""
    hex_ = blob.removeprefix('sha256:')
    if not stores:
        (mirror.root / 'blobs' / 'sha256' / hex_[:2] / hex_).unlink()
        return
    import boto3
    from botocore.config import Config

    s3 = boto3.client('s3', endpoint_url=stores['OCI_REF_S3_ENDPOINT_URL'],
                      region_name=stores['OCI_REF_S3_REGION'],
                      aws_access_key_id=stores['AWS_ACCESS_KEY_ID'],
                      aws_secret_access_key=stores['AWS_SECRET_ACCESS_KEY'],
                      config=Config(s3={'addressing_style': 'path'}))
    key = f'blobs/sha256/{hex_[:2]}/{hex_}'
    s3.head_object(Bucket=stores['OCI_REF_S3_BUCKET'], Key=key)  # it was there
    s3.delete_object(Bucket=stores['OCI_REF_S3_BUCKET'], Key=key)


@pytest.fixture(scope='module')
def upstream(tmp_path_factory: pytest.TempPathFactory, store_pair: str
             ) -> Iterator[AuthServer]:
    # One per store pair: each counts its own requests.
    server = token_upstream(tmp_path_factory.mktemp('upstream'))
    try:
        yield server
    finally:
        server.stop()


def test_a_full_cache_evicts_the_least_recently_used_image(
        tmp_path: Path, upstream: AuthServer, stores: dict[str, str]) -> None:
    repos = {n: f'mirrored/evict-{n}' for n in 'abc'}
    with pusher(upstream) as u:
        images = {n: push(u, repo, n) for n, repo in repos.items()}
    config = config_file(tmp_path / 'mirror.toml', upstream.url)
    mirror = Server(tmp_path / 'data', '--config', str(config), env={**ENV, **stores})
    try:
        with mirror.client() as c:
            # Pushed content sharing b's own layer: eviction must never touch it.
            push(c, 'mine/app', 'mine', layer_of='b')
            own = image_manifest(config_of('mine'), [BASE, layer('b')])
            pull(c, repos['a'], images['a'])
            pull(c, repos['b'], images['b'])
            # a used again after b: b is now the least recently used.
            assert c.get(f'/v2/up.test/{repos["a"]}/manifests/v1').status_code == 200
            pull(c, repos['c'], images['c'])
            evicted(mirror, 1)
            text = c.get('/metrics').text
            held = re.search(r'^oci_ref_upstream_cache_bytes\{upstream="up\.test"\} (\S+)$',
                             text, re.M)
            assert held is not None and 2 * LAYER < float(held[1]) <= CAP, held
            assert f'oci_ref_upstream_cache_max_bytes{{upstream="up.test"}} {CAP:.1f}' \
                in text
            summary = fsck(mirror, config, stores)
            # Cached blobs: those only the cache holds (a's and c's config and
            # layer); BASE is pushed too.
            assert summary['cached'] == {'manifests': 2, 'blobs': 4}, summary
            assert summary['pushed'] == {'manifests': 1, 'blobs': 3}, summary

            def fetched(n: str, key: str) -> int:
                kind = 'manifests' if key == 'manifest' else 'blobs'
                return upstream_requests(upstream, 'GET',
                                         f'/v2/{repos[n]}/{kind}/{images[n][key]}')

            before = {(n, k): fetched(n, k) for n in 'abc'
                      for k in ('manifest', 'config', 'layer', 'base')}
            assert set(before.values()) == {1}, before
            # a and c were kept: served without asking the upstream.
            for n in 'ac':
                for key in ('config', 'base', 'layer'):
                    r = c.get(f'/v2/up.test/{repos[n]}/blobs/{images[n][key]}')
                    assert r.status_code == 200 and digest(r.content) == images[n][key]
            assert c.get(f'/v2/up.test/{repos["a"]}/manifests/v1').status_code == 200
            # Pushed content is whole, b's layer included (shared with b).
            for blob in (config_of('mine'), BASE, layer('b')):
                r = c.get(f'/v2/mine/app/blobs/{digest(blob)}')
                assert r.status_code == 200 and r.content == blob
            assert c.get('/v2/mine/app/manifests/v1').content == own
            # b was evicted: pulling it again fetches it again (and now c, the
            # least recently used, goes).
            pull(c, repos['b'], images['b'])
            evicted(mirror, 2)
            after = {(n, k): fetched(n, k) for n in 'abc'
                     for k in ('manifest', 'config', 'layer', 'base')}
            assert {k: v - before[k] for k, v in after.items() if v != before[k]} == {
                ('b', 'manifest'): 1, ('b', 'config'): 1, ('b', 'layer'): 1,
                ('b', 'base'): 1}
            text = counted(mirror, r'^oci_ref_upstream_evicted_bytes_total')
            m = re.search(r'^oci_ref_upstream_evicted_bytes_total\{upstream="up\.test"\}'
                          r' (\S+)$', text, re.M)
            assert m is not None and float(m[1]) >= 2 * LAYER
            # c went: a re-pull of it asks the upstream again; a, used once more
            # before, stays and b (used before a) goes.
            assert c.get(f'/v2/up.test/{repos["a"]}/manifests/v1').status_code == 200
            pull(c, repos['c'], images['c'])
            assert fetched('c', 'manifest') == 2 and fetched('c', 'layer') == 2
            evicted(mirror, 3)
            pull(c, repos['a'], images['a'])
            assert {k: fetched('a', k) for k in ('manifest', 'config', 'layer', 'base')
                    } == dict.fromkeys(('manifest', 'config', 'layer', 'base'), 1)
        fsck(mirror, config, stores)
    finally:
        mirror.stop()


def test_eviction_with_distribution_as_the_upstream(tmp_path: Path,
                                                   stores: dict[str, str]) -> None:
    """The same against CNCF distribution (Basic auth): an evicted image is
    fetched again, a kept one is not."""
    dist = DistributionUpstream(tmp_path / 'dist')
    try:
        auth = httpx.BasicAuth('pusher', USERS['pusher'])
        with httpx.Client(base_url=dist.url, timeout=60, auth=auth) as u:
            images = {n: push(u, f'mirrored/dist-{n}', n) for n in 'abc'}
        config = config_file(tmp_path / 'mirror.toml', dist.url)
        mirror = Server(tmp_path / 'data', '--config', str(config),
                        env={**ENV, **stores})
        try:
            with mirror.client() as c:
                for n in 'abc':
                    pull(c, f'mirrored/dist-{n}', images[n])
                evicted(mirror, 1)  # a: the least recently used

                def asked(n: str) -> int:
                    # (distribution logs each attempt, the 401 before the token too)
                    return upstream_requests(
                        dist, 'GET',
                        f'/v2/mirrored/dist-{n}/manifests/{images[n]["manifest"]}')

                before = {n: asked(n) for n in 'ac'}
                assert before['a'] > 0
                pull(c, 'mirrored/dist-c', images['c'])  # kept: the upstream is not asked
                assert asked('c') == before['c']
                pull(c, 'mirrored/dist-a', images['a'])  # evicted: fetched again
                assert asked('a') > before['a']
            fsck(mirror, config, stores)
        finally:
            mirror.stop()
    finally:
        dist.stop()


@pytest.mark.parametrize('workers', [1, 2])
def test_pulls_racing_evictions_get_whole_images(tmp_path: Path, upstream: AuthServer,
                                                 stores: dict[str, str],
                                                 workers: int) -> None:
    """A cap no image fits, and an eviction round every second (purge_interval)
    besides the one after each fetch, removing all that is older than
    cache_min_age (2 s), while 6 clients pull three images over and over until
    the cache's images were evicted a dozen times, and a 7th pushes images of its
    own sharing the base and image a's layer: every answer is whole and correct
    (evicted content is fetched again), every pushed image is whole after, and
    fsck is clean. With two workers (on PostgreSQL: as two replicas), evictions,
    downloads and pushes of both meet in one metadata store."""
    repos = {n: f'mirrored/race{workers}-{n}' for n in 'abc'}
    with pusher(upstream) as u:
        images = {n: push(u, repo, f'race {n}') for n, repo in repos.items()}
    # Uses are recorded once an hour: a manifest counts as used when fetched, so
    # two seconds later it is old enough to go even while it is pulled.
    config = config_file(tmp_path / 'mirror.toml', upstream.url, cap=1, min_age=2,
                         touch=3600)
    mirror = Server(tmp_path / 'data', '--config', str(config), '--purge-interval', '1',
                    '--workers', str(workers), env={**ENV, **stores})
    stop = threading.Event()
    try:
        def pulls(worker: int) -> int:
            rounds = 0
            with mirror.client() as c:
                while not stop.is_set():
                    for n in 'abc'[worker % 3:] + 'abc'[:worker % 3]:
                        pull(c, repos[n], images[n])
                    rounds += 1
            return rounds

        def pushes() -> list[bytes]:
            pushed = []
            with mirror.client() as c:
                while not stop.is_set():
                    own = config_of(f'mine {len(pushed)}')
                    for blob in (own, BASE, layer('race a')):
                        push_blob(c, 'mine/race', blob)
                    body = image_manifest(own, [BASE, layer('race a')])
                    r = c.put(f'/v2/mine/race/manifests/v{len(pushed)}', content=body,
                              headers={'Content-Type': OCI_MANIFEST})
                    assert r.status_code == 201, r.content
                    pushed.append(own)
            return pushed

        with concurrent.futures.ThreadPoolExecutor(7) as pool:
            running = [pool.submit(pulls, w) for w in range(6)]
            pushing = pool.submit(pushes)
            try:
                evicted(mirror, 12, at_least=True)
            finally:
                stop.set()
            assert all(f.result() > 0 for f in running)
            configs = pushing.result()
        with mirror.client() as c:
            for i, own in enumerate(configs):
                r = c.get(f'/v2/mine/race/manifests/v{i}')
                assert r.content == image_manifest(own, [BASE, layer('race a')])
                for blob in (own, BASE, layer('race a')):
                    r = c.get(f'/v2/mine/race/blobs/{digest(blob)}')
                    assert r.status_code == 200 and r.content == blob
        text = counted(mirror, r'^oci_ref_upstream_evicted_total\{kind="blob",'
                               r'upstream="up\.test"\} [1-9]')
        assert 'oci_ref_upstream_evicted_bytes_total{upstream="up.test"}' in text
    finally:
        mirror.stop()
    # Stopped first: eviction rounds would otherwise go on under fsck's feet.
    fsck(mirror, config, stores)


def test_a_cached_blob_gone_between_its_size_and_its_bytes_is_fetched_again(
        tmp_path: Path, upstream: AuthServer, stores: dict[str, str]) -> None:
    """The window eviction leaves (its row read, then its file deleted before the
    response opens it), made wide: the file (on S3, the object) is removed behind
    the server (lost content: its rows stay). The GET fetches the blob again from
    the upstream instead of answering 404, and the cache holds it again."""
    with pusher(upstream) as u:
        image = push(u, 'mirrored/evict-window', 'window')
    config = config_file(tmp_path / 'mirror.toml', upstream.url)
    mirror = Server(tmp_path / 'data', '--config', str(config), env={**ENV, **stores})
    try:
        with mirror.client() as c:
            pull(c, 'mirrored/evict-window', image)
            path = f'/v2/mirrored/evict-window/blobs/{image["layer"]}'
            assert upstream_requests(upstream, 'GET', path) == 1
            lose_blob(mirror, stores, image['layer'])
            r = c.get(f'/v2/up.test{path.removeprefix("/v2")}')
            assert r.status_code == 200 and r.content == layer('window')
            assert upstream_requests(upstream, 'GET', path) == 2
            # Committed again: the next GET is served from the cache.
            r = c.get(f'/v2/up.test{path.removeprefix("/v2")}')
            assert r.status_code == 200 and r.content == layer('window')
            assert upstream_requests(upstream, 'GET', path) == 2
    finally:
        mirror.stop()
    fsck(mirror, config, stores)
