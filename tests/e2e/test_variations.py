"""--variation against a real `oci-ref serve`: each behaviour the spec allows, as a
client sees it on the wire, and the pytest fixture parameter."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from oci_ref.testing import VARIATION_NAMES, OCIRegistry
from oci_ref.variations import VARIATIONS, WARNING
from tests.interop.auth import basic_header, write_htpasswd
from tests.support import (
    EMPTY_JSON,
    OCI_MANIFEST,
    Server,
    assert_error,
    counted,
    descriptor,
    digest,
    push_blob,
    push_image,
)

pytestmark = pytest.mark.e2e

Start = Callable[..., Server]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Start]:
    started: list[Server] = []

    def start(*variations: str, args: tuple[str, ...] = ()) -> Server:
        flags = [a for v in variations for a in ('--variation', v)]
        srv = Server(tmp_path / f'data{len(started)}', *flags, *args)
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


def test_no_referrers(serve: Start) -> None:
    srv = serve('no-referrers')
    with srv.client() as c:
        subject, body = push_image(c, 'a', 'v1')
        push_blob(c, 'a', b'{}')
        referrer = json.dumps({
            'schemaVersion': 2, 'mediaType': OCI_MANIFEST,
            'artifactType': 'application/vnd.example.sig',
            'config': descriptor(EMPTY_JSON, b'{}'), 'layers': [],
            'subject': descriptor(OCI_MANIFEST, body)}).encode()
        r = c.put(f'/v2/a/manifests/{digest(referrer)}', content=referrer,
                  headers={'Content-Type': OCI_MANIFEST})
        assert r.status_code == 201
        # no OCI-Subject: the client must maintain the referrers tag itself
        assert 'oci-subject' not in r.headers
        assert_error(c.get(f'/v2/a/referrers/{subject}'), 404, 'UNSUPPORTED')


def test_no_deletes(serve: Start) -> None:
    srv = serve('no-deletes')
    with srv.client() as c:
        d, _ = push_image(c, 'a', 'v1')
        layer = push_blob(c, 'a', b'another')
        for path in (f'/v2/a/manifests/{d}', '/v2/a/manifests/v1', f'/v2/a/blobs/{layer}'):
            assert_error(c.delete(path), 405, 'UNSUPPORTED')
        assert c.get('/v2/a/manifests/v1', headers={'Accept': OCI_MANIFEST}
                     ).status_code == 200


def test_mount_202(serve: Start) -> None:
    srv = serve('mount-202')
    with srv.client() as c:
        d = push_blob(c, 'a', b'shared')
        r = c.post(f'/v2/b/blobs/uploads/?mount={d}&from=a')
        assert r.status_code == 202
        location = r.headers['location']
        assert location.startswith('/v2/b/blobs/uploads/')
        assert c.head(f'/v2/b/blobs/{d}').status_code == 404
        r = c.put(f'{location}?digest={d}', content=b'shared',
                  headers={'Content-Type': 'application/octet-stream'})
        assert r.status_code == 201


def test_absolute_location(serve: Start) -> None:
    srv = serve('absolute-location')
    with srv.client() as c:
        r = c.post('/v2/a/blobs/uploads/')
        assert r.status_code == 202
        assert r.headers['location'].startswith(f'{srv.url}/v2/a/blobs/uploads/')
        d = digest(b'x')
        r = c.put(f'{r.headers["location"]}?digest={d}', content=b'x',
                  headers={'Content-Type': 'application/octet-stream'})
        assert r.headers['location'] == f'{srv.url}/v2/a/blobs/{d}'
    # default: relative
    srv = serve()
    with srv.client() as c:
        assert c.post('/v2/a/blobs/uploads/').headers['location'].startswith('/v2/')


def test_no_tag_pagination(serve: Start) -> None:
    srv = serve('no-tag-pagination', args=('--page-max', '2'))
    with srv.client() as c:
        push_image(c, 'a', 't0')
        d = c.get('/v2/a/manifests/t0', headers={'Accept': OCI_MANIFEST}).content
        for i in range(1, 5):
            c.put(f'/v2/a/manifests/t{i}', content=d,
                  headers={'Content-Type': OCI_MANIFEST})
        for query in ('', '?n=1', '?n=2&last=t1', '?last=t3'):
            r = c.get(f'/v2/a/tags/list{query}')
            assert r.json()['tags'] == ['t0', 't1', 't2', 't3', 't4'], query
            assert 'link' not in r.headers
        # the catalog keeps its pages
        assert 'link' not in c.get('/v2/_catalog').headers


def test_chunk_min_length(serve: Start) -> None:
    srv = serve('chunk-min-length', args=('--chunk-min-length', '10'))
    data = b'0123456789abcdefghijklmnopqrstuv'
    with srv.client() as c:
        r = c.post('/v2/a/blobs/uploads/')
        assert r.headers['oci-chunk-min-length'] == '10'
        loc = r.headers['location']
        # big enough chunks, and a short last one by PATCH: fine
        r = c.patch(loc, content=data[:12], headers={'Content-Range': '0-11'})
        assert r.status_code == 202
        r = c.patch(r.headers['location'], content=data[12:15],
                    headers={'Content-Range': '12-14'})
        assert r.status_code == 202
        # ... but then it was not the last one: 416 with the session's state
        r = c.patch(r.headers['location'], content=data[15:],
                    headers={'Content-Range': f'15-{len(data) - 1}'})
        err = assert_error(r, 416, 'BLOB_UPLOAD_INVALID')
        assert err['detail']['min'] == 10
        assert r.headers['range'] == '0-14' and r.headers['location'] == loc
        # finishing with the rest in the PUT works
        r = c.put(f'{loc}?digest={digest(data)}', content=data[15:],
                  headers={'Content-Type': 'application/octet-stream'})
        assert r.status_code == 201
        assert c.get(f'/v2/a/blobs/{digest(data)}').content == data


def test_warnings(serve: Start) -> None:
    srv = serve('warnings')
    with srv.client() as c:
        for r in (c.get('/v2/'), c.get('/v2/_catalog'), c.get('/v2/a/tags/list')):
            assert r.headers.get_list('warning') == [WARNING]
        assert WARNING.startswith('299 - "') and len(WARNING) < 4096


def test_blob_redirect(serve: Start) -> None:
    srv = serve('blob-redirect')
    data = bytes(range(256)) * 300
    with srv.client() as c:
        d = push_blob(c, 'a', data)
        r = c.get(f'/v2/a/blobs/{d}')
        assert r.status_code == 307 and r.headers['docker-content-digest'] == d
        target = r.headers['location']
        assert urlsplit(target).hostname == '127.0.0.2'
        assert urlsplit(target).port != srv.port
        # errors are not redirected, and keep their bodies
        assert_error(c.get(f'/v2/a/blobs/{digest(b"absent")}'), 404, 'BLOB_UNKNOWN')
        # HEAD is answered here
        assert c.head(f'/v2/a/blobs/{d}').status_code == 200
    r = httpx.get(target)
    assert r.status_code == 200 and r.content == data
    r = httpx.get(target, headers={'Range': 'bytes=10-19'})
    assert r.status_code == 206 and r.content == data[10:20]
    # credentials must not follow the redirect to another host
    assert_error(httpx.get(target, headers={'Authorization': 'Bearer t'}), 400, 'DENIED')
    tampered = target.replace('name=a', 'name=b')
    assert_error(httpx.get(tampered), 403, 'DENIED')
    base = f'{urlsplit(target).scheme}://{urlsplit(target).netloc}'
    # the target serves signed blob URLs only: it is not a registry
    assert_error(httpx.get(f'{base}/v2/'), 404, 'UNSUPPORTED')
    # a client following redirects ends with the bytes
    r = httpx.get(f'{srv.url}/v2/a/blobs/{d}', follow_redirects=True)
    assert r.content == data


def test_blob_redirect_after_authorization(serve: Start, tmp_path: Path) -> None:
    htpasswd = write_htpasswd(tmp_path / 'htpasswd', {'u': 'pw-for-u-1234'})
    srv = serve('blob-redirect', args=('--auth', 'basic', '--htpasswd', str(htpasswd)))
    auth = {'Authorization': basic_header('u', 'pw-for-u-1234')}
    with httpx.Client(base_url=srv.url, headers=auth) as c:
        d = push_blob(c, 'a', b'secret bytes')
        r = c.get(f'/v2/a/blobs/{d}')
        assert r.status_code == 307
    # no redirect (no presigned URL) without credentials
    assert httpx.get(f'{srv.url}/v2/a/blobs/{d}').status_code == 401
    # httpx, like Go's net/http, drops Authorization on a redirect to another host
    with httpx.Client(base_url=srv.url, headers=auth, follow_redirects=True) as c:
        assert c.get(f'/v2/a/blobs/{d}').content == b'secret bytes'


def test_unknown_variation_stops_the_server(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, '-m', 'oci_ref', 'serve', '--root',
                           str(tmp_path / 'd'), '--variation', 'no-such'],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert 'variations: unknown no-such' in done.stderr


@pytest.mark.parametrize('oci_registry', VARIATION_NAMES, indirect=True)
def test_fixture_parameter(oci_registry: OCIRegistry) -> None:
    """Each variation through the fixture: a push and a pull still work."""
    assert oci_registry.settings['variations'] in VARIATIONS
    with httpx.Client(base_url=oci_registry.url, follow_redirects=True) as c:
        _, body = push_image(c, 'a', 'v1')
        assert c.get('/v2/a/manifests/v1', headers={'Accept': OCI_MANIFEST}
                     ).content == body
        layer = json.loads(body)['layers'][0]
        assert digest(c.get(f'/v2/a/blobs/{layer["digest"]}').content) == layer['digest']


def test_varied_requests_are_counted_under_their_endpoint(serve: Start) -> None:
    srv = serve('no-tag-pagination', 'no-referrers')
    with srv.client() as c:
        assert c.get('/v2/a/tags/list?n=1').status_code == 404
        assert c.get(f'/v2/a/referrers/{digest(b"x")}').status_code == 404
    for endpoint in ('end-8', 'end-12'):
        counted(srv, rf'^oci_ref_requests_total\{{endpoint="{endpoint}",'
                     r'method="GET",status="404"\} 1\.0$')
