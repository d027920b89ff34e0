"""The oci_registry fixtures, used from a temporary project as a user would."""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.e2e

USER_TESTS = r'''
import hashlib
import json
import os
import urllib.request

import pytest


def call(method, url, data=None):
    req = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(req) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


def push(registry, name, data):
    digest = 'sha256:' + hashlib.sha256(data).hexdigest()
    status, headers, _ = call('POST', f'{registry.url}/v2/{name}/blobs/uploads/')
    assert status == 202
    status, _, _ = call('PUT', f'{registry.url}{headers["Location"]}?digest={digest}', data)
    assert status == 201
    return digest


def test_function_registry_serves_pushes(oci_registry):
    assert oci_registry.url == f'http://{oci_registry.host}'
    assert oci_registry.host.startswith('127.0.0.1:')
    assert oci_registry.ref('a/b', 'v1') == f'{oci_registry.host}/a/b:v1'
    digest = push(oci_registry, 'demo/app', b'hello')
    status, headers, body = call('GET', f'{oci_registry.url}/v2/demo/app/blobs/{digest}')
    assert (status, body) == (200, b'hello')
    with open(os.environ['PIDS'], 'a') as f:
        f.write(f'{oci_registry.process.pid}\n')


def test_function_registry_is_fresh_each_test(oci_registry):
    digest = 'sha256:' + hashlib.sha256(b'hello').hexdigest()
    status, _, _ = call('HEAD', f'{oci_registry.url}/v2/demo/app/blobs/{digest}')
    assert status == 404
    with open(os.environ['PIDS'], 'a') as f:
        f.write(f'{oci_registry.process.pid}\n')


def test_session_registry_push(oci_registry_session):
    push(oci_registry_session, 'shared/app', b'kept')


def test_session_registry_is_shared(oci_registry_session):
    digest = 'sha256:' + hashlib.sha256(b'kept').hexdigest()
    status, _, _ = call('HEAD', f'{oci_registry_session.url}/v2/shared/app/blobs/{digest}')
    assert status == 200
    with open(os.environ['PIDS'], 'a') as f:
        f.write(f'{oci_registry_session.process.pid}\n')


@pytest.mark.oci_registry(page_max=2)
def test_marker_passes_serve_settings(oci_registry):
    config = b'{}'
    push(oci_registry, 'paged/app', config)
    manifest = json.dumps({
        'schemaVersion': 2, 'mediaType': 'application/vnd.oci.image.manifest.v1+json',
        'config': {'mediaType': 'application/vnd.oci.image.config.v1+json',
                   'digest': 'sha256:' + hashlib.sha256(config).hexdigest(), 'size': 2},
        'layers': []}).encode()
    for tag in ('a', 'b', 'c'):
        req = urllib.request.Request(
            f'{oci_registry.url}/v2/paged/app/manifests/{tag}', data=manifest, method='PUT',
            headers={'Content-Type': 'application/vnd.oci.image.manifest.v1+json'})
        assert urllib.request.urlopen(req).status == 201
    status, headers, body = call('GET', f'{oci_registry.url}/v2/paged/app/tags/list')
    assert json.loads(body)['tags'] == ['a', 'b']
    assert 'rel="next"' in headers['Link']
'''


def test_pytest_plugin_fixtures_in_a_user_project(pytester: pytest.Pytester,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(test_user=USER_TESTS)
    pids = pytester.path / 'pids.txt'
    monkeypatch.setenv('PIDS', str(pids))
    result = pytester.runpytest_subprocess('-q', '-p', 'no:cacheprovider')
    result.assert_outcomes(passed=5)
    # Every registry the fixtures started was stopped again.
    started = [int(line) for line in pids.read_text().split()]
    assert len(started) == 3 and started[0] != started[1]
    for pid in started:
        assert not os.path.exists(f'/proc/{pid}'), f'registry {pid} still running'
