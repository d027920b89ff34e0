"""`oci-ref serve --lint` as a process: findings shared by every worker, the report
on the command line, and the pytest fixture's one-liner in a user's project."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import OCI_MANIFEST, Server, digest

pytestmark = pytest.mark.e2e

NAME = 'lint/e2e'


@pytest.fixture(scope='module')
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp('lint') / 'data', '--lint', '--workers', '2')
    yield srv
    srv.stop()


def fresh(method: str, url: str, **kw: Any) -> httpx.Response:
    """One request on a new connection: the kernel picks either worker."""
    return httpx.request(method, url, timeout=60, **kw)


def findings(srv: Server, agent: str) -> dict[str, int]:
    return {rule['id']: rule['count'] for client in srv.lint_report()['clients']
            if client['user_agent'] == agent for rule in client['rules']}


def test_findings_and_locations_are_shared_by_workers(two_workers: Server) -> None:
    srv = two_workers
    good, bad = {'User-Agent': 'lint-good/1'}, {'User-Agent': 'lint-bad/1'}
    for i in range(12):
        data = f'blob {i}'.encode()
        # The POST and the PUT to its Location go on separate connections: a worker
        # that did not hand out the Location must still know it.
        r = fresh('POST', f'{srv.url}/v2/{NAME}/blobs/uploads/', headers=good)
        assert r.status_code == 202
        location = r.headers['location']
        r = fresh('PUT', f'{srv.url}{location}&digest={digest(data)}', content=data,
                  headers={**good, 'Content-Type': 'application/octet-stream'})
        assert r.status_code == 201
        # The same with the URL built by hand (the Location without its query).
        r = fresh('POST', f'{srv.url}/v2/{NAME}/blobs/uploads/', headers=bad)
        hand_built = r.headers['location'].partition('?')[0]
        r = fresh('PUT', f'{srv.url}{hand_built}?digest={digest(data)}', content=data,
                  headers={**bad, 'Content-Type': 'application/octet-stream'})
        assert r.status_code == 201  # answered as the spec says all the same
    assert findings(srv, 'lint-good/1') == {}
    # Each finding counted once, whichever worker saw it.
    assert findings(srv, 'lint-bad/1') == {'upload-url-hand-built': 12}
    srv.assert_no_lint_violations('lint-good/1')
    with pytest.raises(AssertionError, match='upload-url-hand-built x12'):
        srv.assert_no_lint_violations('lint-bad/1')


def oci_ref(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, '-m', 'oci_ref', *args], capture_output=True,
                          text=True, timeout=120)


def test_lint_report_command(two_workers: Server, tmp_path: Path) -> None:
    srv = two_workers
    agent = {'User-Agent': 'lint-cli/2'}
    fresh('GET', f'{srv.url}/v2/{NAME}/tags/list?n=1&last=zzz&token=s3cr3t',
          headers=agent)
    for where in (['--root', str(srv.root)], ['--url', srv.url]):
        done = oci_ref('lint', 'report', *where, '--format', 'json')
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        client = next(c for c in report['clients'] if c['user_agent'] == 'lint-cli/2')
        assert {r['id'] for r in client['rules']} == {'pagination-link',
                                                       'credentials-in-query'}
        assert 's3cr3t' not in done.stdout
        text = oci_ref('lint', 'report', *where)
        assert 'lint-cli/2 [127.0.0.1]' in text.stdout
        assert 'pagination-link x1' in text.stdout
        assert oci_ref('lint', 'report', *where, '--fail').returncode == 1
        html = oci_ref('lint', 'report', *where, '--format', 'html')
        assert '<table>' in html.stdout
    empty = oci_ref('lint', 'report', '--root', str(tmp_path))
    assert empty.returncode == 2 and 'serve with --lint' in empty.stderr


USER_TESTS = r'''
import urllib.request

import pytest


@pytest.mark.oci_registry(lint=True)
def test_my_client_follows_the_spec(oci_registry):
    req = urllib.request.Request(f'{oci_registry.url}/v2/',
                                 headers={'User-Agent': 'my-client/1.0'})
    assert urllib.request.urlopen(req).status == 200
    oci_registry.assert_no_lint_violations('my-client')


@pytest.mark.oci_registry(lint=True)
def test_my_client_breaks_a_rule(oci_registry):
    req = urllib.request.Request(
        f'{oci_registry.url}/v2/demo/app/tags/list?ns=docker.io',
        headers={'User-Agent': 'my-client/1.0'})
    try:
        urllib.request.urlopen(req)
    except urllib.error.HTTPError:
        pass  # 404: no such repository; the request is linted all the same
    oci_registry.assert_no_lint_violations('my-client')
'''


def test_fixture_one_liner_in_a_user_project(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest_subprocess('-q', '-p', 'no:cacheprovider')
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*'my-client/1.0': ns-not-proxy x1 (SHOULD "
                                 "distribution-spec §Registry Proxying)*"])


def test_manifest_accept_seen_through_a_real_socket(two_workers: Server) -> None:
    srv = two_workers
    r = fresh('GET', f'{srv.url}/v2/{NAME}/manifests/missing',
              headers={'Accept': OCI_MANIFEST, 'User-Agent': 'lint-404/1'})
    assert r.status_code == 404
    # Only a served manifest has a stored type to cover: a 404 is not linted.
    assert findings(srv, 'lint-404/1') == {}


def test_chunk_without_content_length(two_workers: Server) -> None:
    """chunk-length-missing: a chunk in the chunked transfer coding (an in-process
    request always has a Content-Length, so this rule is proved here)."""
    srv = two_workers
    agent = {'User-Agent': 'lint-chunked/1', 'Content-Type': 'application/octet-stream'}
    r = fresh('POST', f'{srv.url}/v2/{NAME}/blobs/uploads/', headers=agent)
    location = r.headers['location']

    def stream() -> Iterator[bytes]:
        yield b'abc'

    r = fresh('PATCH', f'{srv.url}{location}', content=stream(),
              headers={**agent, 'Content-Range': '0-2'})
    assert r.status_code == 202
    assert 'content-length' not in r.request.headers
    r = fresh('PATCH', f'{srv.url}{r.headers["location"]}', content=b'def',
              headers={**agent, 'Content-Range': '3-5'})
    assert r.status_code == 202
    assert findings(srv, 'lint-chunked/1') == {'chunk-length-missing': 1}
