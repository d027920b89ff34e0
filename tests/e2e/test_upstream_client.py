"""The upstream client against real registries on loopback: a second `oci-ref serve`
with Docker token auth, and CNCF distribution with htpasswd (and with a token realm
on another host). Faults that no real registry here can be made to produce are in
tests/e2e/test_upstream_faults.py, against a stub."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from oci_ref.errors import ErrorCode
from oci_ref.testing import free_port
from oci_ref.upstream.client import UpstreamClient
from oci_ref.upstream.errors import (
    UpstreamAuthRefused,
    UpstreamBadContent,
    UpstreamNotFound,
    UpstreamRealmRefused,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from tests.e2e.upstreams import (
    USERS,
    DistributionUpstream,
    client,
    pusher,
    run,
    token_requests,
    token_upstream,
    upstream,
)
from tests.interop.auth import AuthServer, basic_header, make_ca_and_server_cert
from tests.support import (
    DOCKER_MANIFEST,
    OCI_MANIFEST,
    Server,
    digest,
    push_blob,
    push_image,
)

pytestmark = pytest.mark.e2e
Upstreams = Server | DistributionUpstream
MIRROR = {'username': 'mirror', 'password': USERS['mirror']}
BIG = hashlib.sha256(b'seed').digest() * (3 * 1024 * 1024 // 32 + 7)  # ~3 MiB


def env(name: str, **creds: str) -> dict[str, str]:
    prefix = 'OCI_REF_UPSTREAM_' + name.upper().replace('.', '_').replace('-', '_') + '_'
    return {prefix + k.upper(): v for k, v in creds.items()}


def docker_manifest(c: httpx.Client, repo: str, tag: str) -> tuple[str, bytes]:
    """A Docker v2 manifest in an unusual layout, to check it comes back byte-exact."""
    config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers"}}'
    push_blob(c, repo, config)
    layer_digest = push_blob(c, repo, BIG)
    body = json.dumps({
        'schemaVersion': 2, 'mediaType': DOCKER_MANIFEST,
        'config': {'mediaType': 'application/vnd.docker.container.image.v1+json',
                   'size': len(config), 'digest': digest(config)},
        'layers': [{'mediaType': 'application/vnd.docker.image.rootfs.diff.tar.gzip',
                    'size': len(BIG), 'digest': layer_digest}],
    }, indent=3).encode() + b'\n'
    r = c.put(f'/v2/{repo}/manifests/{tag}', content=body,
              headers={'Content-Type': DOCKER_MANIFEST})
    assert r.status_code == 201, r.content
    return digest(body), body


def fill(srv: Upstreams) -> dict[str, Any]:
    """mirrored/app:v1 (Docker manifest, ~3 MiB layer), mirrored/paged with five
    tags, private/app:v1 (the mirror user may not pull it)."""
    facts: dict[str, Any] = {}
    with pusher(srv) as c:
        facts['digest'], facts['body'] = docker_manifest(c, 'mirrored/app', 'v1')
        for i in range(5):
            push_image(c, 'mirrored/paged', f't{i}', seed=f'p{i}')
        push_image(c, 'private/app', 'v1', seed='private')
    return facts


@pytest.fixture(scope='module')
def oci(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AuthServer, dict]]:
    srv = token_upstream(tmp_path_factory.mktemp('oci-token'), '--page-max', '2')
    try:
        yield srv, fill(srv)
    finally:
        srv.stop()


@pytest.fixture(scope='module')
def dist(tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[tuple[DistributionUpstream, dict]]:
    srv = DistributionUpstream(tmp_path_factory.mktemp('distribution'))
    try:
        yield srv, fill(srv)
    finally:
        srv.stop()


@pytest.fixture(params=['oci-ref-token', 'distribution-basic'])
def real(request: pytest.FixtureRequest) -> tuple[Upstreams, dict]:
    return request.getfixturevalue('oci' if request.param == 'oci-ref-token' else 'dist')


def logged_in(srv: Upstreams) -> UpstreamClient:
    return client(upstream('up', srv.url), **env('up', **MIRROR))


# ------------------------------------------------------------ manifests ----
def test_manifest_byte_exact_through_login(real: tuple[Upstreams, dict]) -> None:
    """GET and HEAD of a Docker manifest by tag and by digest: the bytes, media type
    and digest the upstream stored, through token auth (oci-ref) or Basic
    (distribution)."""
    srv, facts = real

    async def go() -> None:
        async with logged_in(srv) as c:
            for ref in ('v1', facts['digest']):
                m = await c.get_manifest('mirrored/app', ref)
                assert m.body == facts['body']
                assert m.media_type == DOCKER_MANIFEST
                assert m.digest == facts['digest']
                h = await c.head_manifest('mirrored/app', ref)
                assert (h.digest, h.media_type, h.size) == (
                    facts['digest'], DOCKER_MANIFEST, len(facts['body']))
    run(go())


def test_token_reused_per_scope_counted_at_the_upstream(oci: tuple[AuthServer, dict]
                                                        ) -> None:
    """20 concurrent requests for one repository cost one token request at the
    upstream; another repository one more; an expired token is renewed once."""
    srv, facts = oci
    before = len(token_requests(srv))

    async def go() -> UpstreamClient:
        async with logged_in(srv) as c:
            results = await asyncio.gather(
                *(c.get_manifest('mirrored/app', 'v1') for _ in range(10)),
                *(c.head_manifest('mirrored/app', 'v1') for _ in range(10)))
            assert {r.digest for r in results} == {facts['digest']}
            assert len(token_requests(srv)) == before + 1
            await c.get_manifest('mirrored/paged', 't0')
            assert len(token_requests(srv)) == before + 2
            await c.get_manifest('mirrored/app', 'v1')
            assert len(token_requests(srv)) == before + 2
            for token in c.auth.tokens.values():
                token.expires = 0  # as if their time had run out
            await asyncio.gather(*(c.head_manifest('mirrored/app', 'v1')
                                   for _ in range(5)))
            assert len(token_requests(srv)) == before + 3
            return c
    c = run(go())
    assert c.auth.token_requests == 3
    new = token_requests(srv)[before:]
    assert all(line.startswith('GET /token?') for line in new), new
    assert 'scope=repository%3Amirrored%2Fapp%3Apull' in new[0]


def test_identity_token_from_auth_json_uses_post(oci: tuple[AuthServer, dict],
                                                 tmp_path: Path) -> None:
    """An ``identitytoken`` in auth.json is sent as an OAuth2 refresh token (POST
    grant_type=refresh_token), and works."""
    srv, facts = oci
    r = httpx.get(srv.url + '/token', params={'offline_token': 'true', 'service': 'oci-ref',
                                               'scope': 'repository:mirrored/app:pull'},
                  headers={'Authorization': basic_header('mirror', USERS['mirror'])})
    refresh = r.json()['refresh_token']
    auth = tmp_path / 'auth.json'
    auth.write_text(json.dumps({'auths': {f'127.0.0.1:{srv.port}': {
        'identitytoken': refresh}}}))
    before = len(token_requests(srv))

    async def go() -> None:
        async with client(upstream('up', srv.url, credentials=str(auth))) as c:
            m = await c.get_manifest('mirrored/app', 'v1')
            assert m.digest == facts['digest']
    run(go())
    assert token_requests(srv)[before:] == ['POST /token']


@pytest.mark.parametrize('kind', ['auth', 'username-password'])
def test_auth_json_basic_credentials(real: tuple[Upstreams, dict], tmp_path: Path,
                                     kind: str) -> None:
    """auth.json entries with base64 ``auth`` or ``username``/``password``."""
    srv, facts = real
    entry = ({'auth': base64.b64encode(f'mirror:{USERS["mirror"]}'.encode()).decode()}
             if kind == 'auth' else dict(MIRROR))
    auth = tmp_path / 'auth.json'
    auth.write_text(json.dumps({'auths': {f'http://127.0.0.1:{srv.port}': entry}}))

    async def go() -> None:
        async with client(upstream('up', srv.url, credentials=str(auth))) as c:
            assert (await c.head_manifest('mirrored/app', 'v1')).digest == facts['digest']
    run(go())


@pytest.mark.parametrize('creds', [{}, {'username': 'mirror', 'password': 'wrong-pw-99'}],
                         ids=['anonymous', 'wrong-password'])
def test_refused_login_is_auth_refused(real: tuple[Upstreams, dict],
                                       creds: dict[str, str]) -> None:
    srv, _ = real

    async def go() -> None:
        async with client(upstream('up', srv.url), **env('up', **creds)) as c:
            await c.get_manifest('mirrored/app', 'v1')
    with pytest.raises(UpstreamAuthRefused) as info:
        run(go())
    e = info.value.to_registry_error('manifest')
    assert (e.status, e.code) == (403, ErrorCode.DENIED)
    assert e.entries[0].detail['upstream'] == 'up'
    assert 'wrong-pw-99' not in json.dumps(e.entries[0].detail) + str(info.value)


def test_repository_outside_the_users_access_is_refused(oci: tuple[AuthServer, dict]
                                                        ) -> None:
    srv, _ = oci

    async def go() -> None:
        async with logged_in(srv) as c:
            await c.get_manifest('private/app', 'v1')
    with pytest.raises(UpstreamAuthRefused):
        run(go())


def test_anonymous(oci: tuple[AuthServer, dict], tmp_path: Path) -> None:
    """Without credentials: an upstream without auth answers directly (no token
    request); a token upstream is asked for an anonymous token (one GET /token,
    counted there), which grants nothing here, so the pull is refused."""
    plain = Server(tmp_path / 'plain-data')
    try:
        with httpx.Client(base_url=plain.url) as c:
            d, _ = push_image(c, 'mirrored/app', 'v1')

        async def go() -> None:
            async with client(upstream('plain', plain.url)) as c:
                assert (await c.get_manifest('mirrored/app', 'v1')).digest == d
                assert c.auth.scheme is None and c.auth.token_requests == 0
        run(go())
    finally:
        plain.stop()
    srv, _ = oci
    before = len(token_requests(srv))

    async def anonymous() -> None:
        async with client(upstream('anon', srv.url)) as c:
            try:
                await c.get_manifest('mirrored/app', 'v1')
            finally:
                assert c.auth.scheme == 'bearer'
    with pytest.raises(UpstreamAuthRefused):
        run(anonymous())
    assert token_requests(srv)[before:] == [
        'GET /token?scope=repository%3Amirrored%2Fapp%3Apull&service=oci-ref']


def test_realm_on_another_host_is_refused(tmp_path: Path) -> None:
    """distribution configured with its token realm on 127.0.0.2: the client refuses
    before it sends anything there (credentials or not), as a 502."""
    trap = socket.socket()
    trap.bind(('127.0.0.2', 0))
    trap.listen(8)
    trap.setblocking(False)
    realm = f'http://127.0.0.2:{trap.getsockname()[1]}/token'
    srv = DistributionUpstream(tmp_path / 'd', auth='token', realm=realm)
    try:
        async def go() -> None:
            async with logged_in(srv) as c:
                await c.get_manifest('mirrored/app', 'v1')
        with pytest.raises(UpstreamRealmRefused) as info:
            run(go())
        assert 'token realm is on host 127.0.0.2' in info.value.reason
        e = info.value.to_registry_error('manifest')
        assert (e.status, e.code) == (502, ErrorCode.DENIED)
        with pytest.raises(BlockingIOError):
            trap.accept()  # nobody ever connected to the realm
        # Allowed by realm_hosts, it is asked (and, never answering, times out).
        allowed = upstream('up', srv.url, realm_hosts=['127.0.0.2'], read_timeout=1)

        async def go_allowed() -> None:
            async with client(allowed, **env('up', **MIRROR)) as c:
                await c.get_manifest('mirrored/app', 'v1')
        with pytest.raises(UpstreamTimeout):
            run(go_allowed())
        conn, _ = trap.accept()
        conn.close()
    finally:
        srv.stop()
        trap.close()


# ---------------------------------------------------------------- blobs ----
def test_blob_streams_verified(real: tuple[Upstreams, dict]) -> None:
    """A ~3 MiB layer arrives in many chunks, verified against its digest and the
    descriptor's size; a wrong size announced up front is refused at once."""
    srv, _ = real
    d = digest(BIG)

    async def go() -> None:
        async with logged_in(srv) as c:
            async with c.blob('mirrored/app', d, size=len(BIG)) as blob:
                assert (blob.size, blob.offset, blob.verifying) == (len(BIG), 0, True)
                chunks = [chunk async for chunk in blob]
            assert len(chunks) > 10 and b''.join(chunks) == BIG
            with pytest.raises(UpstreamBadContent, match='announced'):
                async with c.blob('mirrored/app', d, size=len(BIG) - 1):
                    pass
    run(go())


def test_blob_range(real: tuple[Upstreams, dict]) -> None:
    """From byte N: unverified alone; verified when continuing a hasher of 0..N."""
    srv, _ = real
    d, start = digest(BIG), 1_000_003

    async def go() -> None:
        async with logged_in(srv) as c:
            async with c.blob('mirrored/app', d, start=start) as blob:
                assert (blob.size, blob.offset, blob.verifying) == (len(BIG), start, False)
                assert b''.join([chunk async for chunk in blob]) == BIG[start:]
            hasher = hashlib.sha256(BIG[:start])
            async with c.blob('mirrored/app', d, start=start, hasher=hasher) as blob:
                assert blob.verifying
                assert b''.join([chunk async for chunk in blob]) == BIG[start:]
            bad = hashlib.sha256(b'not the start')
            with pytest.raises(UpstreamBadContent, match='do not match'):
                async with c.blob('mirrored/app', d, start=start, hasher=bad) as blob:
                    async for _ in blob:
                        pass
    run(go())


# ------------------------------------------------------------------ 404 ----
@pytest.mark.parametrize(('call', 'kind', 'code'), [
    (lambda c: c.get_manifest('mirrored/app', 'no-such-tag'), 'manifest',
     ErrorCode.MANIFEST_UNKNOWN),
    (lambda c: c.head_manifest('mirrored/app', 'sha256:' + '0' * 64), 'manifest',
     ErrorCode.MANIFEST_UNKNOWN),
    (lambda c: c.list_tags('mirrored/never-pushed'), 'tags', ErrorCode.NAME_UNKNOWN),
    (lambda c: _open_blob(c, 'sha256:' + '1' * 64), 'blob', ErrorCode.BLOB_UNKNOWN),
], ids=['manifest', 'head', 'tags', 'blob'])
def test_not_found(real: tuple[Upstreams, dict], call: Any, kind: str,
                   code: ErrorCode) -> None:
    srv, _ = real

    async def go() -> None:
        async with logged_in(srv) as c:
            await call(c)
    with pytest.raises(UpstreamNotFound) as info:
        run(go())
    assert info.value.kind == kind
    e = info.value.to_registry_error()
    assert (e.status, e.code) == (404, code)
    assert e.entries[0].detail['upstream'] == 'up'


async def _open_blob(c: UpstreamClient, d: str) -> None:
    async with c.blob('mirrored/app', d):
        pass


# ------------------------------------------------------- tags, referrers ----
def test_tags_pages(real: tuple[Upstreams, dict]) -> None:
    """One page with n and last passed on and the next page's last from Link; all
    tags by following Link (oci-ref here pages by 2 by itself)."""
    srv, _ = real
    names = [f't{i}' for i in range(5)]

    async def go() -> None:
        async with logged_in(srv) as c:
            if isinstance(srv, DistributionUpstream):
                # distribution 2.8 ignores n and last: one page, no Link.
                page = await c.list_tags('mirrored/paged', n=2)
                assert (sorted(page.tags), page.next_last) == (names, None)
                assert sorted([t async for t in c.all_tags('mirrored/paged')]) == names
                return
            page = await c.list_tags('mirrored/paged', n=2)
            assert (page.name, page.tags, page.next_last) == ('mirrored/paged',
                                                              names[:2], 't1')
            page = await c.list_tags('mirrored/paged', n=2, last='t3')
            assert page.tags == ['t4']
            assert [t async for t in c.all_tags('mirrored/paged', page_max=2)] == names
    run(go())


def test_referrers_api_and_fallback_tag(oci: tuple[AuthServer, dict],
                                        dist: tuple[DistributionUpstream, dict]) -> None:
    """oci-ref answers the referrers API; distribution 2.8 has none, so the
    ``sha256-<hex>`` tag is read; with neither, an empty index."""
    subject = {'mediaType': DOCKER_MANIFEST, 'digest': oci[1]['digest'],
               'size': len(oci[1]['body'])}
    with pusher(oci[0]) as c:
        ref, _ = push_image(c, 'mirrored/app', 'sig', seed='sig', subject=subject,
                            artifactType='application/vnd.example.sig')
    hexpart = dist[1]['digest'].split(':')[1]
    with pusher(dist[0]) as c:
        dist_ref, body = push_image(c, 'mirrored/app', 'sig', seed='dist-sig')
        index = json.dumps({'schemaVersion': 2, 'mediaType': 'application/vnd.oci.image.'
                            'index.v1+json', 'manifests': [{'mediaType': OCI_MANIFEST,
                            'digest': dist_ref, 'size': len(body)}]}).encode()
        r = c.put(f'/v2/mirrored/app/manifests/sha256-{hexpart}', content=index,
                  headers={'Content-Type': 'application/vnd.oci.image.index.v1+json'})
        assert r.status_code == 201, r.content

    async def go() -> None:
        async with logged_in(oci[0]) as c:
            got = await c.referrers('mirrored/app', oci[1]['digest'])
            assert got.source == 'api'
            assert [m['digest'] for m in json.loads(got.body)['manifests']] == [ref]
            got = await c.referrers('mirrored/app', oci[1]['digest'],
                                    artifact_type='application/vnd.example.sig')
            assert got.filtered
        async with logged_in(dist[0]) as c:
            got = await c.referrers('mirrored/app', dist[1]['digest'])
            assert (got.source, got.body) == ('tag', index)
            got = await c.referrers('mirrored/paged', 'sha256:' + 'e' * 64)
            assert got.source == 'none'
            assert json.loads(got.body)['manifests'] == []
    run(go())


# ------------------------------------------------ unreachable, timeout ----
def test_unreachable(tmp_path: Path) -> None:
    """Nothing listens (a free port; then a real upstream, stopped): 503."""
    port = free_port()
    srv = Server(tmp_path / 'gone-data')
    srv.stop()
    for url in (f'http://127.0.0.1:{port}', srv.url):
        async def go(url: str = url) -> None:
            async with client(upstream('gone', url)) as c:
                await c.head_manifest('a/b', 'v1')
        with pytest.raises(UpstreamUnreachable) as info:
            run(go())
        e = info.value.to_registry_error('manifest')
        assert (e.status, e.code) == (503, ErrorCode.MANIFEST_UNKNOWN)
        assert e.entries[0].detail == {'upstream': 'gone', 'reason': 'cannot connect'}


def test_timeout_of_a_stopped_process(tmp_path: Path) -> None:
    """A real upstream frozen with SIGSTOP accepts connections but never answers:
    the read timeout (1 s here) turns into 504; after SIGCONT it answers again."""
    srv = Server(tmp_path / 'frozen-data')
    try:
        with httpx.Client(base_url=srv.url) as c:
            d, _ = push_image(c, 'a/b', 'v1')
        u = upstream('frozen', srv.url, read_timeout=1, connect_timeout=1)
        os.kill(srv.proc.pid, signal.SIGSTOP)
        try:
            async def go() -> None:
                async with client(u) as c:
                    await c.get_manifest('a/b', 'v1')
            with pytest.raises(UpstreamTimeout) as info:
                run(go())
            e = info.value.to_registry_error('manifest')
            assert (e.status, e.code) == (504, ErrorCode.MANIFEST_UNKNOWN)
        finally:
            os.kill(srv.proc.pid, signal.SIGCONT)

        async def again() -> str:
            async with client(u) as c:
                return (await c.get_manifest('a/b', 'v1')).digest
        assert run(again()) == d
    finally:
        srv.stop()


def test_tls_upstream(tmp_path: Path) -> None:
    """An https upstream with a private CA: trusted through ca_file, refused
    without it (503 naming TLS), accepted with tls_verify = false."""
    tls = make_ca_and_server_cert(tmp_path / 'tls')
    srv = AuthServer(tmp_path / 'data', '--tls-cert', str(tls['cert']),
                     '--tls-key', str(tls['key']), ca=tls['ca'])
    try:
        with srv.client() as c:
            d, _ = push_image(c, 'a/b', 'v1')

        async def get(**table: Any) -> str:
            async with client(upstream('tls', srv.url, **table)) as c:
                return (await c.get_manifest('a/b', 'v1')).digest
        assert srv.url.startswith('https://')
        assert run(get(ca_file=str(tls['ca']))) == d
        assert run(get(tls_verify=False)) == d
        with pytest.raises(UpstreamUnreachable, match='TLS certificate is not trusted'):
            run(get())
    finally:
        srv.stop()
