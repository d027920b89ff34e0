"""--faults against a real `oci-ref serve`: each kind as a client sees it on the wire,
writes refused before they are stored or reset after, the seed, and storage that
stays intact (fsck)."""

from __future__ import annotations

import hashlib
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.faults import assert_fsck_clean
from tests.support import (
    OCI_MANIFEST,
    Server,
    assert_error,
    counted,
    push_blob,
    push_image,
)

pytestmark = pytest.mark.e2e


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[type[Server]]:
    started: list[Server] = []

    def start(*args: str, root: str = 'data') -> Server:
        srv = Server(tmp_path / root, *args)
        started.append(srv)
        return srv

    yield start  # type: ignore[misc]
    for srv in started:
        srv.stop()


def seeded(serve: type[Server], faults: str, *content: str) -> tuple[Server, dict]:
    """Content pushed through a fault-free server, then the same root served with
    ``faults``: {repository: (manifest digest, manifest bytes)}."""
    clean = serve()  # type: ignore[call-arg]
    pushed = {}
    with clean.client() as c:
        for name in content:
            pushed[name] = push_image(c, name, 'v1', seed=name)
    clean.stop()
    return serve('--faults', faults, '--faults-seed', '1'), pushed  # type: ignore[call-arg]


@pytest.mark.parametrize('kind, status, retry_after', [
    ('429', 429, '1'), ('429(7)', 429, '7'), ('503', 503, '1'), ('503(2)', 503, '2'),
    ('500', 500, None),
])
def test_refusals(serve: type[Server], kind: str, status: int,
                  retry_after: str | None) -> None:
    srv = serve('--faults', f'manifest-get:{kind}=1')  # type: ignore[call-arg]
    with srv.client() as c:
        r = c.get('/v2/a/manifests/v1')
        code = 'TOOMANYREQUESTS' if status == 429 else 'UNAVAILABLE'
        err = assert_error(r, status, code)
        assert err['detail'] == {'fault': kind[:3]}
        assert r.headers['oci-ref-fault'] == kind[:3]
        assert r.headers.get('retry-after') == retry_after
        assert r.headers['docker-distribution-api-version'] == 'registry/2.0'
        # other endpoints are untouched
        assert c.get('/v2/').status_code == 200
        assert 'oci-ref-fault' not in c.get('/v2/').headers


def test_refused_writes_store_nothing(serve: type[Server]) -> None:
    srv = serve('--faults', 'manifest-put:503=1,end-4a:429=1')  # type: ignore[call-arg]
    config, layer = b'{}', b'layer'
    with srv.client() as c:
        assert_error(c.post('/v2/a/blobs/uploads/'), 429, 'TOOMANYREQUESTS')
        for blob in (config, layer):  # end-4b is not faulted
            d = 'sha256:' + hashlib.sha256(blob).hexdigest()
            assert c.post(f'/v2/a/blobs/uploads/?digest={d}', content=blob,
                          headers={'Content-Type': 'application/octet-stream'}
                          ).status_code == 201
        body = (b'{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":'
                b'"application/vnd.oci.image.config.v1+json","digest":"sha256:%s",'
                b'"size":2},"layers":[]}' % (OCI_MANIFEST.encode(),
                                             hashlib.sha256(config).hexdigest().encode()))
        r = c.put('/v2/a/manifests/v1', content=body,
                  headers={'Content-Type': OCI_MANIFEST})
        assert_error(r, 503, 'UNAVAILABLE')
        assert c.get('/v2/a/manifests/v1').status_code == 404
        assert c.get('/v2/a/tags/list').json()['tags'] == []
        metrics = c.get('/metrics').text
        assert re.search(r'^oci_ref_upload_sessions 0\.0$', metrics, re.M), metrics
    srv.stop()
    assert_fsck_clean(srv.root)


def _raw_get(port: int, path: str) -> tuple[bytes, bytes, BaseException | None]:
    """(head, body so far, the error that ended the read) of a raw GET."""
    sock = socket.create_connection(('127.0.0.1', port), timeout=30)
    data, error = b'', None
    try:
        sock.sendall(f'GET {path} HTTP/1.1\r\nHost: x\r\n\r\n'.encode())
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except OSError as ex:
        error = ex
    finally:
        sock.close()
    head, _, body = data.partition(b'\r\n\r\n')
    return head, body, error


def test_reset_mid_body_of_a_read(serve: type[Server]) -> None:
    srv = serve()  # type: ignore[call-arg]
    data = bytes(range(256)) * 4096  # 1 MiB
    with srv.client() as c:
        d = push_blob(c, 'a', data)
    srv.stop()
    srv = serve('--faults', 'blob-get:reset=1')  # type: ignore[call-arg]
    head, body, error = _raw_get(srv.port, f'/v2/a/blobs/{d}')
    assert head.startswith(b'HTTP/1.1 200'), head
    assert b'content-length: 1048576' in head.lower()
    assert b'oci-ref-fault: reset' in head.lower()
    assert len(body) <= len(data) // 2 and data.startswith(body)
    # a reset (RST), not an orderly close
    assert isinstance(error, ConnectionResetError), error
    with srv.client() as c, pytest.raises(httpx.TransportError):
        c.get(f'/v2/a/blobs/{d}')


def test_reset_after_a_write_keeps_the_write(serve: type[Server]) -> None:
    """A write runs to its end and loses its answer: stored, and the retry works."""
    srv = serve('--faults', 'manifest-put:reset=1')  # type: ignore[call-arg]
    with srv.client() as c:
        with pytest.raises(httpx.TransportError):
            push_image(c, 'a', 'v1', seed='s')
        # the manifest is there although its PUT got no answer
        r = c.get('/v2/a/manifests/v1', headers={'Accept': OCI_MANIFEST})
        assert r.status_code == 200
    srv.stop()
    assert_fsck_clean(srv.root)


def test_truncate_keeps_http_whole_but_breaks_the_digest(serve: type[Server]) -> None:
    srv, pushed = seeded(serve, 'blob-get:truncate=1', 'a')
    r = httpx.get(f'{srv.url}/v2/a/manifests/v1', headers={'Accept': OCI_MANIFEST})
    assert r.content == pushed['a'][1]  # manifests are not truncated by blob-get
    manifest = r.json()
    layer = manifest['layers'][0]
    with srv.client() as c:
        r = c.get(f'/v2/a/blobs/{layer["digest"]}')
        assert r.status_code == 200
        assert r.headers['oci-ref-fault'] == 'truncate'
        assert int(r.headers['content-length']) == len(r.content) == layer['size'] // 2
        assert 'sha256:' + hashlib.sha256(r.content).hexdigest() != layer['digest']
        # a range (206) and a HEAD are left alone
        r = c.get(f'/v2/a/blobs/{layer["digest"]}', headers={'Range': 'bytes=0-1'})
        assert r.status_code == 206 and 'oci-ref-fault' not in r.headers
        r = c.head(f'/v2/a/blobs/{layer["digest"]}')
        assert int(r.headers['content-length']) == layer['size']
    srv.stop()
    assert_fsck_clean(srv.root)


def test_slow_first_byte(serve: type[Server]) -> None:
    srv = serve('--faults', 'catalog:slow(0.3)=1')  # type: ignore[call-arg]
    with srv.client() as c:
        r = c.get('/v2/_catalog')
        assert r.status_code == 200 and r.headers['oci-ref-fault'] == 'slow'
    # a client with a shorter read timeout gives up
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(f'{srv.url}/v2/_catalog', timeout=httpx.Timeout(5, read=0.01))


def _statuses(srv: Server, paths: list[str]) -> list[int]:
    with srv.client() as c:
        return [c.get(p).status_code for p in paths]


def test_the_seed_replays_a_run(serve: type[Server]) -> None:
    spec = 'tags:500=0.3,tags:503=0.3'
    paths = [f'/v2/r{i % 5}/tags/list' for i in range(60)]
    runs = []
    for seed, root in (('11', 'a'), ('11', 'b'), ('12', 'c')):
        srv = serve('--faults', spec, '--faults-seed', seed, root=root)  # type: ignore[call-arg]
        runs.append(_statuses(srv, paths))
        srv.stop()
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]
    assert {500, 503, 404} == set(runs[0])


def test_the_seed_is_logged_when_drawn(serve: type[Server]) -> None:
    srv = serve('--faults', 'tags:500=0.5')  # type: ignore[call-arg]
    assert re.search(r'faults tags:500=0\.5 seed \d+', srv.log.read_text())


@pytest.mark.parametrize('spec', ['*:boom=1', 'nowhere:500=1', 'tags:500=2'])
def test_a_bad_spec_stops_the_server(tmp_path: Path, spec: str) -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, '-m', 'oci_ref', 'serve', '--root',
                           str(tmp_path / 'd'), '--faults', spec],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.startswith('oci-ref: faults: ')


def test_faults_are_counted_under_their_endpoint(serve: type[Server]) -> None:
    srv = serve('--faults', 'tags:503=1')  # type: ignore[call-arg]
    with srv.client() as c:
        assert c.get('/v2/a/tags/list').status_code == 503
    # counted once the exchange is over, a moment after the client has the answer
    counted(srv, r'^oci_ref_requests_total\{endpoint="end-8",method="GET",'
                 r'status="503"\} 1\.0$')


def test_the_linter_sees_a_retry_that_ignores_an_injected_retry_after(
        serve: type[Server]) -> None:
    """--lint wraps the faults: their Retry-After is one it holds clients to."""
    srv = serve('--lint', '--faults', 'manifest-get:429(60)=x1')  # type: ignore[call-arg]
    with srv.client() as c:
        first = c.get('/v2/a/manifests/v1')
        assert first.status_code == 429 and first.headers['retry-after'] == '60'
        assert c.get('/v2/a/manifests/v1').status_code == 404  # at once: too early
        report = c.get('/lint/report').json()
    rules = {r['id']: r for client in report['clients'] for r in client['rules']}
    assert rules['retry-after-ignored']['count'] == 1, report
