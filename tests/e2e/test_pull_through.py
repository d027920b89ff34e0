"""The pull-through cache end to end (issue 13): a real `oci-ref serve` mirroring a
second `oci-ref serve` in token-auth mode (and CNCF distribution with htpasswd),
reached by prefix, by ``ns`` and as the default upstream. Upstream requests are
counted in the upstream's own access log."""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.upstreams import USERS, DistributionUpstream, pusher, token_upstream
from tests.interop.auth import AuthServer
from tests.interop.layout import write_index_layout
from tests.interop.util import push_layout
from tests.support import (
    OCI_MANIFEST,
    Server,
    assert_error,
    digest,
    push_blob,
    push_image,
)

pytestmark = pytest.mark.e2e
BIG = hashlib.sha256(b'pull-through').digest() * (3 * 1024 * 1024 // 32 + 5)  # ~3 MiB
ENV = {'OCI_REF_UPSTREAM_UP_TEST_USERNAME': 'mirror',
       'OCI_REF_UPSTREAM_UP_TEST_PASSWORD': USERS['mirror'],
       'OCI_REF_UPSTREAM_TTL0_TEST_USERNAME': 'mirror',
       'OCI_REF_UPSTREAM_TTL0_TEST_PASSWORD': USERS['mirror']}


def mirror_config(path: Path, url: str, *, default: bool = True) -> Path:
    """Two views of one upstream: ``up.test`` (long tag_ttl, the ``ns`` and default
    upstream) and ``ttl0.test`` (every tag pull revalidates)."""
    path.write_text(f'''
[[upstream]]
name = "up.test"
url = "{url}"
namespaces = ["up.test"]
tag_ttl = 3600
default = {str(default).lower()}

[[upstream]]
name = "ttl0.test"
url = "{url}"
tag_ttl = 0
max_stale = 3600
''')
    return path


def upstream_requests(server: Server | DistributionUpstream, method: str, path: str
                      ) -> int:
    """How often the upstream answered ``method path`` (its access log)."""
    text = Path(server.log).read_text(errors='replace')
    if isinstance(server, DistributionUpstream):
        return len(re.findall(rf'method={method} .*uri="?{re.escape(path)}[ "?]', text)) \
            or text.count(f'"{method} {path} HTTP')
    return len(re.findall(rf'"{method} {re.escape(path)}(?:\?[^ ]*)? HTTP/1.1" 2\d\d',
                          text))


def signature(empty: bytes, subject_type: str, subject: str, subject_size: int
              ) -> bytes:
    """A signature-like artifact manifest (artifactType, the empty config and
    layer ``empty``) whose subject is ``subject``: a referrer to pull through."""
    descriptor = {'mediaType': 'application/vnd.oci.empty.v1+json',
                  'digest': digest(empty), 'size': len(empty)}
    return json.dumps({
        'schemaVersion': 2, 'mediaType': OCI_MANIFEST,
        'artifactType': 'application/vnd.example.sig',
        'config': descriptor, 'layers': [descriptor],
        'subject': {'mediaType': subject_type, 'digest': subject, 'size': subject_size},
    }).encode()


def failed(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """An upstream failure: the spec's envelope with the code of what could not be
    had and the gateway status saying why (oci_ref/upstream/errors.py); its detail."""
    assert r.status_code == status, (r.status_code, r.content[:500])
    error = r.json()['errors'][0]
    assert error['code'] == code, error
    return dict(error['detail'])


@pytest.fixture(scope='module')
def upstream(tmp_path_factory: pytest.TempPathFactory, module_stores: dict[str, str]
             ) -> Iterator[AuthServer]:
    # Per store pair (through ``module_stores``): each counts its own requests.
    server = token_upstream(tmp_path_factory.mktemp('upstream'))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope='module')
def mirror(tmp_path_factory: pytest.TempPathFactory, upstream: AuthServer,
           module_stores: dict[str, str]) -> Iterator[Server]:
    base = tmp_path_factory.mktemp('mirror')
    server = Server(base / 'data', '--config',
                    str(mirror_config(base / 'mirror.toml', upstream.url)),
                    env={**ENV, **module_stores})
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope='module')
def image(upstream: AuthServer) -> dict[str, str]:
    """mirrored/app:v1 at the upstream, with a ~3 MiB blob beside it."""
    with pusher(upstream) as c:
        manifest, _ = push_image(c, 'mirrored/app', 'v1', seed='pull-through')
        big = push_blob(c, 'mirrored/app', BIG)
    return {'manifest': manifest, 'big': big}


def test_prefix_pulls_byte_exact_and_fetches_once(mirror: Server, upstream: AuthServer,
                                                  image: dict[str, str]) -> None:
    with mirror.client() as c, pusher(upstream) as u:
        want = u.get('/v2/mirrored/app/manifests/v1',
                     headers={'Accept': OCI_MANIFEST})
        for _ in range(2):
            r = c.get('/v2/up.test/mirrored/app/manifests/v1')
            assert r.status_code == 200, r.content
            assert r.content == want.content
            assert r.headers['content-type'] == want.headers['content-type']
            assert r.headers['docker-content-digest'] == image['manifest']
        r = c.get(f'/v2/up.test/mirrored/app/manifests/{image["manifest"]}')
        assert r.content == want.content
        doc = json.loads(want.content)
        for layer in [*doc['layers'], doc['config']]:
            r = c.get(f'/v2/up.test/mirrored/app/blobs/{layer["digest"]}')
            assert r.status_code == 200 and digest(r.content) == layer['digest']
        for _ in range(2):
            r = c.get(f'/v2/up.test/mirrored/app/blobs/{image["big"]}')
            assert r.status_code == 200 and r.content == BIG
        r = c.get(f'/v2/up.test/mirrored/app/blobs/{image["big"]}',
                  headers={'Range': 'bytes=1000-1999'})
        assert r.status_code == 206 and r.content == BIG[1000:2000]
    assert upstream_requests(upstream, 'GET', f'/v2/mirrored/app/blobs/{image["big"]}') == 1
    # tag_ttl 3600: the second tag pull asked the upstream nothing.
    assert upstream_requests(upstream, 'HEAD', '/v2/mirrored/app/manifests/v1') == 1


def test_ns_routes_and_echoes_namespace(mirror: Server, image: dict[str, str]) -> None:
    with mirror.client() as c:
        r = c.get('/v2/mirrored/app/manifests/v1', params={'ns': 'up.test'})
        assert r.status_code == 200, r.content
        assert r.headers['oci-namespace'] == 'up.test'
        assert r.headers['docker-content-digest'] == image['manifest']
        r = c.get(f'/v2/mirrored/app/blobs/{image["big"]}', params={'ns': 'up.test'})
        assert r.content == BIG and r.headers['oci-namespace'] == 'up.test'
        # An ns naming no upstream is ignored (§Registry Proxying): own storage.
        r = c.get('/v2/mirrored/nothing/manifests/v1', params={'ns': 'elsewhere.test'})
        assert 'oci-namespace' not in r.headers


def test_default_upstream_falls_through_and_own_content_wins(
        mirror: Server, upstream: AuthServer, image: dict[str, str]) -> None:
    with mirror.client() as c:
        r = c.get('/v2/mirrored/app/manifests/v1')
        assert r.status_code == 200, r.content
        assert r.headers['docker-content-digest'] == image['manifest']
        # A push to a name outside the prefixes stays local and then wins.
        own, body = push_image(c, 'mirrored/app', 'v1', seed='own content')
        r = c.get('/v2/mirrored/app/manifests/v1')
        assert r.headers['docker-content-digest'] == own and r.content == body
        r = c.get('/v2/up.test/mirrored/app/manifests/v1')
        assert r.headers['docker-content-digest'] == image['manifest']


@pytest.mark.parametrize('path,params', [
    ('/v2/up.test/mirrored/app/manifests/x', {}),
    ('/v2/mirrored/app/manifests/x', {'ns': 'up.test'}),
])
def test_push_into_an_upstream_is_refused(mirror: Server, path: str,
                                          params: dict[str, str]) -> None:
    with mirror.client() as c:
        r = c.put(path, params=params, content=b'{}',
                  headers={'Content-Type': OCI_MANIFEST})
        assert assert_error(r, 405, 'UNSUPPORTED')['detail']['upstream'] == 'up.test'
        r = c.post(path.replace('manifests/x', 'blobs/uploads/'), params=params)
        assert_error(r, 405, 'UNSUPPORTED')


def test_tags_list_and_referrers_pass_through(mirror: Server, upstream: AuthServer,
                                              image: dict[str, str]) -> None:
    with pusher(upstream) as u:
        push_image(u, 'mirrored/app', 'v2', seed='second')
        config = b'{}'
        push_blob(u, 'mirrored/app', config)
        sig = signature(config, OCI_MANIFEST, image['manifest'],
                        len(u.get('/v2/mirrored/app/manifests/v1').content))
        r = u.put(f'/v2/mirrored/app/manifests/{digest(sig)}', content=sig,
                  headers={'Content-Type': OCI_MANIFEST})
        assert r.status_code == 201, r.content
    with mirror.client() as c:
        r = c.get('/v2/up.test/mirrored/app/tags/list')
        assert r.status_code == 200
        assert {'v1', 'v2'} <= set(r.json()['tags'])
        r = c.get('/v2/up.test/mirrored/app/tags/list', params={'n': 1})
        assert r.json()['tags'] == ['v1'] and 'last=v1' in r.headers['link']
        r = c.get(f'/v2/up.test/mirrored/app/referrers/{image["manifest"]}')
        assert r.status_code == 200
        assert [m['digest'] for m in r.json()['manifests']] == [digest(sig)]


def test_tag_revalidation_heads_once_and_follows_a_moved_tag(
        mirror: Server, upstream: AuthServer, image: dict[str, str]) -> None:
    path = '/v2/mirrored/app/manifests/moving'
    with pusher(upstream) as u:
        first, _ = push_image(u, 'mirrored/app', 'moving', seed='first')
    with mirror.client() as c:
        for _ in range(3):
            r = c.get('/v2/ttl0.test/mirrored/app/manifests/moving')
            assert r.headers['docker-content-digest'] == first
        # tag_ttl 0: every pull HEADs; the body came once (by digest).
        assert upstream_requests(upstream, 'HEAD', path) == 3
        assert upstream_requests(upstream, 'GET', path) == 0
        assert upstream_requests(upstream, 'GET',
                                 f'/v2/mirrored/app/manifests/{first}') == 1
        with pusher(upstream) as u:
            moved, body = push_image(u, 'mirrored/app', 'moving', seed='moved')
        r = c.get('/v2/ttl0.test/mirrored/app/manifests/moving')
        assert r.headers['docker-content-digest'] == moved and r.content == body


def test_concurrent_pulls_of_one_uncached_blob_fetch_it_once(
        mirror: Server, upstream: AuthServer) -> None:
    data = hashlib.sha256(b'concurrent').digest() * (4 * 1024 * 1024 // 32)
    with pusher(upstream) as u:
        d = push_blob(u, 'mirrored/concurrent', data)
        manifest, body = push_image(u, 'mirrored/concurrent', 'v1', seed='concurrent')

    def pull(path: str) -> bytes:
        with httpx.Client(base_url=mirror.url, timeout=60) as c:
            r = c.get(path)
            assert r.status_code == 200, r.content
            return r.content

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        blobs = list(pool.map(pull, [f'/v2/up.test/mirrored/concurrent/blobs/{d}'] * 20))
        manifests = list(pool.map(
            pull, ['/v2/up.test/mirrored/concurrent/manifests/v1'] * 20))
    assert all(b == data for b in blobs)
    assert all(m == body for m in manifests)
    assert upstream_requests(upstream, 'GET', f'/v2/mirrored/concurrent/blobs/{d}') == 1
    assert upstream_requests(upstream, 'HEAD', '/v2/mirrored/concurrent/manifests/v1') == 1
    assert upstream_requests(upstream, 'GET',
                             f'/v2/mirrored/concurrent/manifests/{manifest}') == 1


def test_upstream_stopped_cached_content_still_pulls(tmp_path: Path) -> None:
    up = token_upstream(tmp_path / 'up')
    try:
        with pusher(up) as u:
            manifest, _ = push_image(u, 'mirrored/offline', 'v1', seed='offline')
            big = push_blob(u, 'mirrored/offline', BIG)
        m = Server(tmp_path / 'mirror', '--config',
                   str(mirror_config(tmp_path / 'm.toml', up.url)), env=ENV)
    except BaseException:
        up.stop()
        raise
    try:
        with m.client() as c:
            for prefix in ('up.test', 'ttl0.test'):
                r = c.get(f'/v2/{prefix}/mirrored/offline/manifests/v1')
                assert r.status_code == 200
                assert c.get(f'/v2/{prefix}/mirrored/offline/blobs/{big}').content == BIG
            up.stop()
            for prefix in ('up.test', 'ttl0.test'):
                r = c.get(f'/v2/{prefix}/mirrored/offline/manifests/{manifest}')
                assert r.status_code == 200
                assert c.get(f'/v2/{prefix}/mirrored/offline/blobs/{big}').content == BIG
            r = c.get('/v2/up.test/mirrored/offline/manifests/v1')
            assert r.status_code == 200 and 'warning' not in r.headers
            # Past tag_ttl, within max_stale: served stale with a Warning.
            r = c.get('/v2/ttl0.test/mirrored/offline/manifests/v1')
            assert r.status_code == 200 and r.headers['docker-content-digest'] == manifest
            assert r.headers['warning'].startswith('299 - "upstream ttl0.test')
            # A miss fails clearly, naming the upstream, never 500.
            r = c.get('/v2/up.test/mirrored/offline/manifests/v2')
            assert failed(r, 503, 'MANIFEST_UNKNOWN')['upstream'] == 'up.test'
            r = c.get(f'/v2/up.test/mirrored/offline/blobs/{digest(b"never")}')
            assert failed(r, 503, 'BLOB_UNKNOWN')['upstream'] == 'up.test'
    finally:
        m.stop()
        up.stop()


def test_distribution_upstream_with_basic_auth(tmp_path: Path) -> None:
    dist = DistributionUpstream(tmp_path / 'dist')
    try:
        auth = httpx.BasicAuth('pusher', USERS['pusher'])
        with httpx.Client(base_url=dist.url, timeout=60, auth=auth) as u:
            _, body = push_image(u, 'mirrored/dist', 'v1', seed='distribution')
            big = push_blob(u, 'mirrored/dist', BIG)
        m = Server(tmp_path / 'mirror', '--config',
                   str(mirror_config(tmp_path / 'm.toml', dist.url)), env=ENV)
        try:
            with m.client() as c:
                r = c.get('/v2/up.test/mirrored/dist/manifests/v1')
                assert r.status_code == 200 and r.content == body
                assert c.get(f'/v2/up.test/mirrored/dist/blobs/{big}').content == BIG
                r = c.get('/v2/up.test/mirrored/nope/manifests/v1')
                assert_error(r, 404, 'MANIFEST_UNKNOWN')
        finally:
            m.stop()
    finally:
        dist.stop()


def test_metrics_and_fsck_know_cached_content(mirror: Server, upstream: AuthServer,
                                              image: dict[str, str],
                                              module_stores: dict[str, str]) -> None:
    with pusher(upstream) as u:
        push_image(u, 'mirrored/fsck', 'v1', seed='fsck: manifest only')
    with mirror.client() as c:
        # What is counted below comes from this test's own pulls (tests of this
        # module run in any order, on any pytest worker): mirrored/app whole, its
        # manifest twice (the second a hit), and the ~3 MiB blob beside it.
        for _ in range(2):
            r = c.get('/v2/up.test/mirrored/app/manifests/v1')
            assert r.status_code == 200, r.content
        doc = json.loads(r.content)
        for d in [*(layer['digest'] for layer in doc['layers']), doc['config']['digest'],
                  image['big']]:
            assert c.get(f'/v2/up.test/mirrored/app/blobs/{d}').status_code == 200, d
        # Only the manifest is pulled (a miss): its layers are not cached, and that
        # is fine.
        assert c.get('/v2/up.test/mirrored/fsck/manifests/v1').status_code == 200
        text = c.get('/metrics').text
    for event in ('hit', 'miss'):
        m = re.search(rf'oci_ref_upstream_cache_events_total\{{event="{event}",'
                      rf'upstream="up.test"\}} (\d+)', text)
        assert m is not None and float(m[1]) > 0, event
    m = re.search(r'oci_ref_upstream_fetched_bytes_total\{upstream="up.test"\} (\S+)',
                  text)
    assert m is not None and float(m[1]) >= len(BIG)
    config = mirror.root.parent / 'mirror.toml'
    done = subprocess.run([sys.executable, '-m', 'oci_ref', 'fsck', '--root',
                           str(mirror.root), '--config', str(config), '--json'],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, **module_stores})
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads(done.stdout.splitlines()[-1])
    counts = {k: summary.pop(k) for k in ('pushed', 'cached')}
    assert summary == {'kind': 'summary', 'problems': 0, 'notices': 0,
                       'repaired': False}
    # Cached content is counted apart from pushed content (the fsck image: its
    # manifest, cached, and nothing of it pushed).
    assert counts['cached']['manifests'] >= 1 and counts['cached']['blobs'] >= 1, counts
    if module_stores:  # the scale-out pair: the cache lives in the shared stores
        import psycopg

        with psycopg.connect(module_stores['OCI_REF_METADATA_STORE']) as db:
            assert db.execute('SELECT count(*) FROM cache_tags').fetchone()[0] > 0
            assert db.execute("SELECT count(*) FROM repo_blobs WHERE repo = "
                              "'up.test/mirrored/app'").fetchone()[0] >= 3
        assert not (mirror.root / 'blobs').exists()  # blobs went to S3



def test_prefetch_fills_the_cache_for_offline_pulls(tmp_path: Path) -> None:
    """`oci-ref prefetch` fetches an index, every platform, every blob and the
    referrers; afterwards, with the upstream stopped, all of it pulls."""
    up = Server(tmp_path / 'up')
    try:
        index = write_index_layout(tmp_path / 'layout', 'v1', seed='prefetch')
        push_layout(up, tmp_path / 'layout', 'mirrored/pre', 'v1')
        with up.client() as u:
            config = b'{}'
            push_blob(u, 'mirrored/pre', config)
            size = len(u.get(f'/v2/mirrored/pre/manifests/{index}').content)
            sig = signature(config, 'application/vnd.oci.image.index.v1+json', index,
                            size)
            assert u.put(f'/v2/mirrored/pre/manifests/{digest(sig)}', content=sig,
                         headers={'Content-Type': OCI_MANIFEST}).status_code == 201
        cfg = mirror_config(tmp_path / 'm.toml', up.url)
        done = subprocess.run([sys.executable, '-m', 'oci_ref', 'prefetch', '--root',
                               str(tmp_path / 'mirror'), '--config', str(cfg),
                               'up.test/mirrored/pre:v1'],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.startswith('4 manifests, '), done.stdout
        wanted = {p.name for p in (tmp_path / 'layout' / 'blobs' / 'sha256').iterdir()}
    finally:
        up.stop()
    m = Server(tmp_path / 'mirror', '--config', str(cfg))
    try:
        with m.client() as c:
            assert c.get('/v2/up.test/mirrored/pre/manifests/v1').status_code == 200
            for hex_ in wanted:
                for kind in ('manifests', 'blobs'):
                    r = c.get(f'/v2/up.test/mirrored/pre/{kind}/sha256:{hex_}')
                    if r.status_code == 200:
                        assert hashlib.sha256(r.content).hexdigest() == hex_
                        break
                else:
                    raise AssertionError(f'sha256:{hex_} was not prefetched')
            r = c.get(f'/v2/up.test/mirrored/pre/manifests/{digest(sig)}')
            assert r.status_code == 200 and r.content == sig
            # The upstream is gone: the referrers the cache holds, with a Warning.
            r = c.get(f'/v2/up.test/mirrored/pre/referrers/{index}')
            assert r.status_code == 200 and r.headers['warning'].startswith('299 - ')
            assert [d['digest'] for d in r.json()['manifests']] == [digest(sig)]
            assert r.json()['manifests'][0]['artifactType'] == \
                'application/vnd.example.sig'
    finally:
        m.stop()
