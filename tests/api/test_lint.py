"""The client linter, in-process: every rule is proved by a hand-made request that
breaks it (the rule is reported, with a redacted example) and one that does not
(nothing is reported), while the registry answers both as it would without --lint."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from oci_ref.app import create_app
from oci_ref.config import Config
from oci_ref.lint import RULES, recorder
from oci_ref.lint.rules import Exchange, evaluate
from tests.support import (
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    InProcess,
    image_manifest,
    push_blob,
    push_image,
)

NAME = 'lint/repo'


def report(c: InProcess) -> dict[str, Any]:
    r = c.get('/lint/report')
    assert r.status_code == 200, r.content
    return r.json()


def found(c: InProcess) -> dict[str, dict[str, Any]]:
    """rule id -> its entry, across clients."""
    return {rule['id']: rule for client in report(c)['clients'] for rule in client['rules']}


def lint_client(tmp_path: Path, **settings: Any) -> InProcess:
    config = Config.load({'root': tmp_path / 'data', 'lint': True, **settings}, {})
    return InProcess(create_app(config))


# --------------------------------------------------------------- scenarios ----
# Each returns nothing; the registry's answers are asserted where they matter.

def _manifest_body() -> bytes:
    return image_manifest(b'{}', [b'layer'])


def _seed(c: InProcess) -> None:
    push_image(c, NAME, 'v1')


def manifest_type_bad(c: InProcess) -> None:
    push_blob(c, NAME, b'{}')
    push_blob(c, NAME, b'layer')
    r = c.put(f'/v2/{NAME}/manifests/v1', content=_manifest_body(),
              headers={'Content-Type': OCI_INDEX})
    assert r.status_code == 400  # the registry refuses it as it would anyway


def manifest_type_good(c: InProcess) -> None:
    push_blob(c, NAME, b'{}')
    push_blob(c, NAME, b'layer')
    r = c.put(f'/v2/{NAME}/manifests/v1', content=_manifest_body(),
              headers={'Content-Type': OCI_MANIFEST})
    assert r.status_code == 201


def manifest_params_bad(c: InProcess) -> None:
    push_blob(c, NAME, b'{}')
    push_blob(c, NAME, b'layer')
    r = c.put(f'/v2/{NAME}/manifests/v1', content=_manifest_body(),
              headers={'Content-Type': OCI_MANIFEST + '; charset=utf-8'})
    assert r.status_code == 201


def accept_bad(c: InProcess) -> None:
    _seed(c)
    assert c.get(f'/v2/{NAME}/manifests/v1').status_code == 200
    r = c.head(f'/v2/{NAME}/manifests/v1', headers={'Accept': DOCKER_MANIFEST})
    assert r.status_code == 200  # served all the same (RFC 9110 lets us)


def accept_good(c: InProcess) -> None:
    _seed(c)
    for accept in (f'{DOCKER_MANIFEST}, {OCI_MANIFEST}', 'application/*', '*/*'):
        assert c.get(f'/v2/{NAME}/manifests/v1',
                     headers={'Accept': accept}).status_code == 200


def _post(c: InProcess) -> str:
    r = c.post(f'/v2/{NAME}/blobs/uploads/', headers={'Content-Length': '0'})
    assert r.status_code == 202
    assert '_lint=' in r.headers['location']
    return r.headers['location']


def _patch(c: InProcess, location: str, data: bytes, start: int,
           **headers: str) -> Any:
    return c.patch(location, content=data, headers={
        'Content-Type': 'application/octet-stream',
        'Content-Range': f'{start}-{start + len(data) - 1}',
        'Content-Length': str(len(data)), **headers})


def chunks_out_of_order(c: InProcess) -> None:
    r = _patch(c, _post(c), b'abc', 5)
    assert r.status_code == 416


def chunks_in_order(c: InProcess) -> None:
    location = _post(c)
    r = _patch(c, location, b'abc', 0)
    assert r.status_code == 202
    r = _patch(c, r.headers['location'], b'def', 3)
    assert r.status_code == 202
    sep = '&' if '?' in r.headers['location'] else '?'
    r = c.put(r.headers['location'] + sep + 'digest=sha256:'
              'bef57ec7f53a6d40beb640a780a639c83bc29ac8a9816f1fc6c5c6dcd93c4721')
    assert r.status_code == 201, r.content


def chunk_header_bad(c: InProcess) -> None:
    r = _patch(c, _post(c), b'abc', 0, **{'Content-Range': 'bytes 0-2/3'})
    assert r.status_code == 202  # accepted: the RFC 9110 form is tolerated


def streamed(c: InProcess) -> None:
    r = c.patch(_post(c), content=b'abc',
                headers={'Content-Type': 'application/octet-stream'})
    assert r.status_code == 202


def hand_built(c: InProcess) -> None:
    location = _post(c)
    r = _patch(c, location.split('?')[0], b'abc', 0)
    assert r.status_code == 202


def stale(c: InProcess) -> None:
    first = _post(c)
    assert _patch(c, first, b'abc', 0).status_code == 202
    assert _patch(c, first, b'def', 3).status_code == 202


def stale_status_is_fine(c: InProcess) -> None:
    first = _post(c)
    assert _patch(c, first, b'abc', 0).status_code == 202
    # §Pushing a blob in chunks: GET status may use any earlier Location.
    assert c.get(first).status_code == 204
    assert c.delete(first).status_code == 204


def _tags(c: InProcess) -> None:
    for tag in ('a', 'b', 'c'):
        push_image(c, NAME, tag, seed=tag)


def pagination_bad(c: InProcess) -> None:
    _tags(c)
    r = c.get(f'/v2/{NAME}/tags/list?n=1')
    assert r.headers['link'] == f'</v2/{NAME}/tags/list?n=1&last=a>; rel="next"'
    r = c.get(f'/v2/{NAME}/tags/list?n=2&last=a')  # its own n
    assert r.json()['tags'] == ['b', 'c']


def pagination_good(c: InProcess) -> None:
    _tags(c)
    url = f'/v2/{NAME}/tags/list?n=1'
    while url:
        r = c.get(url)
        url = r.headers.get('link', '')[1:].partition('>')[0]


def docker_header_bad(c: InProcess) -> None:
    _seed(c)
    c.get(f'/v2/{NAME}/manifests/v1', headers={
        'Accept': OCI_MANIFEST, 'Docker-Content-Digest': 'sha256:' + '0' * 64})


def ns_bad(c: InProcess) -> None:
    _seed(c)
    r = c.get(f'/v2/{NAME}/manifests/v1?ns=docker.io', headers={'Accept': OCI_MANIFEST})
    assert r.status_code == 200  # §Registry Proxying: a registry MAY ignore ns


def basic_over_http(c: InProcess) -> None:
    c.get('/v2/', headers={'Authorization': 'Basic dXNlcjpzZWNyZXQ='},
          host='registry.example.org')


def basic_over_https(c: InProcess) -> None:
    c.get('/v2/', headers={'Authorization': 'Basic dXNlcjpzZWNyZXQ='},
          protocol='https', host='registry.example.org')
    c.get('/v2/', headers={'Authorization': 'Basic dXNlcjpzZWNyZXQ='}, host='127.0.0.1')


def token_in_query(c: InProcess) -> None:
    _seed(c)
    r = c.get(f'/v2/{NAME}/tags/list?access_token=s3cr3t-t0k3n')
    assert r.status_code == 200


def clean_pull(c: InProcess) -> None:
    _seed(c)
    r = c.get(f'/v2/{NAME}/tags/list')
    assert r.status_code == 200
    assert c.get(f'/v2/{NAME}/manifests/v1', headers={'Accept': OCI_MANIFEST}
                 ).status_code == 200


Scenario = Callable[[InProcess], None]
CASES: list[tuple[str, Scenario, Scenario]] = [
    ('manifest-content-type', manifest_type_bad, manifest_type_good),
    ('manifest-content-type-params', manifest_params_bad, manifest_type_good),
    ('manifest-accept', accept_bad, accept_good),
    ('chunk-out-of-order', chunks_out_of_order, chunks_in_order),
    ('chunk-range-syntax', chunk_header_bad, chunks_in_order),
    ('chunk-streamed', streamed, chunks_in_order),
    ('upload-url-hand-built', hand_built, chunks_in_order),
    ('upload-url-stale', stale, stale_status_is_fine),
    ('pagination-link', pagination_bad, pagination_good),
    ('docker-headers', docker_header_bad, clean_pull),
    ('ns-not-proxy', ns_bad, clean_pull),
    ('credentials-cleartext', basic_over_http, basic_over_https),
    ('credentials-in-query', token_in_query, clean_pull),
]


@pytest.mark.parametrize(('rule', 'bad', 'good'), CASES, ids=[c[0] for c in CASES])
def test_rule_breaks_and_keeps(tmp_path: Path, rule: str, bad: Scenario,
                               good: Scenario) -> None:
    c = lint_client(tmp_path / 'bad')
    bad(c)
    findings = found(c)
    assert rule in findings, findings
    example = findings[rule]['example']
    assert example['detail'] and example['method'] and example['status']
    meta = report(c)['rules'][rule]
    assert meta['section'] and meta['spec'] and meta['level'] in ('MUST', 'SHOULD', 'FORM')

    c = lint_client(tmp_path / 'good')
    good(c)
    assert found(c) == {}, json.dumps(found(c), indent=1)


def test_every_rule_is_proved() -> None:
    # The other three: test_retry_after_is_per_client_and_endpoint and
    # test_credentials_to_proxy_* here, chunk-length-missing in tests/e2e/test_lint.py
    # (an in-process request always has a Content-Length).
    proved = {case[0] for case in CASES} | {'retry-after-ignored', 'credentials-to-proxy',
                                            'chunk-length-missing'}
    assert proved == set(RULES)


def test_retry_after_is_per_client_and_endpoint(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1_000_000.0]
    monkeypatch.setattr(recorder, 'now', lambda: clock[0])
    c = lint_client(tmp_path, max_upload_sessions=1)
    _post(c)
    r = c.post(f'/v2/{NAME}/blobs/uploads/')
    assert r.status_code == 429
    wait = int(r.headers['retry-after'])
    # Another client, another endpoint: not a retry.
    c.post(f'/v2/{NAME}/blobs/uploads/', headers={'User-Agent': 'other/1.0'})
    c.get('/v2/')
    assert found(c) == {}
    clock[0] += wait + 1
    c.post(f'/v2/{NAME}/blobs/uploads/')  # waited: fine (and 429 again: a new deadline)
    assert found(c) == {}
    clock[0] += 1
    c.post(f'/v2/{NAME}/blobs/uploads/')  # did not wait
    rule = found(c)['retry-after-ignored']
    assert rule['count'] == 1
    assert rule['example']['endpoint'] == 'end-4a'


def _exchange(**kw: Any) -> Exchange:
    base: dict[str, Any] = {'method': 'GET', 'path': f'/v2/{NAME}/manifests/v1',
                            'query': '', 'headers': [('accept', OCI_MANIFEST)],
                            'status': 200, 'response_headers':
                                {'content-type': OCI_MANIFEST}, 'endpoint': 'end-3'}
    return Exchange(**{**base, **kw})


class _NoState:
    def upload_tokens(self, session: str) -> list[str]:
        return []

    def link_issued(self, path: str, query: str) -> bool:
        return False

    def retry_not_before(self, client: str, key: str) -> float | None:
        return None


def test_credentials_to_proxy_and_ns_on_a_proxy() -> None:
    """A registry with upstreams is a proxy: ns is expected there, and credentials
    sent to it when it asked for none are an upstream's (§Registry Proxying)."""
    auth = [('accept', OCI_MANIFEST), ('authorization', 'Bearer abc')]
    rules = [r for r, _ in evaluate(_exchange(headers=auth, is_proxy=True), _NoState())]
    assert rules == ['credentials-to-proxy']
    assert evaluate(_exchange(headers=auth, is_proxy=True, auth_on=True), _NoState()) == []
    assert evaluate(_exchange(headers=auth), _NoState()) == []  # not a proxy
    assert evaluate(_exchange(query='ns=docker.io', is_proxy=True), _NoState()) == []


def test_credentials_to_proxy_in_process(tmp_path: Path) -> None:
    c = lint_client(tmp_path, upstream='hub=http://127.0.0.1:9')
    c.get('/v2/', headers={'Authorization': 'Bearer abc'}, host='127.0.0.1')
    assert set(found(c)) == {'credentials-to-proxy'}


def test_examples_are_redacted(tmp_path: Path) -> None:
    c = lint_client(tmp_path)
    c.get(f'/v2/{NAME}/tags/list?access_token=s3cr3t-t0k3n&n=1',
          headers={'Authorization': 'Bearer s3cr3t-b34r3r', 'Cookie': 'sid=s3cr3t'},
          host='registry.example.org')
    text = json.dumps(report(c))
    assert 's3cr3t' not in text
    rules = found(c)
    assert rules['credentials-in-query']['example']['path'].endswith(
        'access_token=%3Credacted%3E&n=1')
    assert rules['credentials-cleartext']['example']['headers']['authorization'] == \
        'Bearer <redacted>'


def test_report_html_and_off_by_default(tmp_path: Path) -> None:
    c = lint_client(tmp_path)
    accept_bad(c)
    for r in (c.get('/lint/report.html'),
              c.get('/lint/report', headers={'Accept': 'text/html,*/*'})):
        assert r.status_code == 200
        assert r.headers['content-type'].startswith('text/html')
        assert b'manifest-accept' in r.content and b'<table>' in r.content
    plain = InProcess(create_app(Config(root=tmp_path / 'plain')))
    assert plain.get('/lint/report').status_code == 404
    r = plain.post(f'/v2/{NAME}/blobs/uploads/')
    assert '_lint' not in r.headers['location']


def test_report_needs_login_with_auth_on(tmp_path: Path) -> None:
    import bcrypt

    htpasswd = tmp_path / 'htpasswd'
    htpasswd.write_text('u:' + bcrypt.hashpw(b'p', bcrypt.gensalt(4)).decode() + '\n')
    c = lint_client(tmp_path, auth='basic', htpasswd=htpasswd)
    assert c.get('/lint/report').status_code == 401
    r = c.get('/lint/report', headers={'Authorization': 'Basic dTpw'})
    assert r.status_code == 200
