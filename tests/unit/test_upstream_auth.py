"""Challenge parsing, the realm rule, and the OCI errors upstream failures become."""

from __future__ import annotations

import pytest

from oci_ref.errors import ErrorCode
from oci_ref.upstream.auth import parse_challenge, realm_allowed
from oci_ref.upstream.config import parse_upstreams
from oci_ref.upstream.errors import (
    UpstreamAuthRefused,
    UpstreamBadContent,
    UpstreamBadResponse,
    UpstreamNotFound,
    UpstreamRateLimited,
    UpstreamRealmRefused,
    UpstreamTimeout,
    UpstreamUnreachable,
)

HUB, GHCR, PLAIN = parse_upstreams([
    {'name': 'docker.io', 'url': 'https://registry-1.docker.io'},
    {'name': 'ghcr.io', 'url': 'https://ghcr.io', 'realm_hosts': ['auth.example']},
    {'name': 'local', 'url': 'http://127.0.0.1:5001'},
])


@pytest.mark.parametrize(('header', 'expected'), [
    ('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
     'scope="repository:library/alpine:pull"',
     ('bearer', {'realm': 'https://auth.docker.io/token', 'service': 'registry.docker.io',
                 'scope': 'repository:library/alpine:pull'})),
    ('bearer realm="http://h/token", service="s"',
     ('bearer', {'realm': 'http://h/token', 'service': 's'})),
    ('Basic realm="oci-ref", charset="UTF-8"',
     ('basic', {'realm': 'oci-ref', 'charset': 'UTF-8'})),
    ('Bearer realm=https://h/t,service=s', ('bearer', {'realm': 'https://h/t',
                                                       'service': 's'})),
    ('Bearer realm="a\\"b"', ('bearer', {'realm': 'a"b'})),
    ('', ('', {})),
])
def test_parse_challenge(header: str, expected: tuple[str, dict[str, str]]) -> None:
    assert parse_challenge(header) == expected


@pytest.mark.parametrize(('upstream', 'realm', 'why'), [
    (HUB, 'https://auth.docker.io/token', None),  # Docker Hub's default allow-list
    (HUB, 'https://registry-1.docker.io/token', None),  # same host
    (HUB, 'https://evil.example/token', 'on host evil.example'),
    (HUB, 'http://auth.docker.io/token', 'plain http for an https upstream'),
    (GHCR, 'https://ghcr.io/token', None),
    (GHCR, 'https://auth.example/token', None),  # realm_hosts
    (GHCR, 'https://auth.docker.io/token', 'neither the upstream'),
    (GHCR, 'https://ghcr.io:8443/token', 'on host ghcr.io:8443'),  # other port
    (PLAIN, 'http://127.0.0.1:5001/token', None),
    (PLAIN, 'http://127.0.0.2:5001/token', 'on host 127.0.0.2:5001'),
    (PLAIN, 'http://localhost:5001/token', 'on host localhost:5001'),
    (PLAIN, 'file:///etc/passwd', 'not an http(s) URL'),
    (PLAIN, '/token', 'not an http(s) URL'),
])
def test_realm_rule(upstream: object, realm: str, why: str | None) -> None:
    got = realm_allowed(upstream, realm)  # type: ignore[arg-type]
    if why is None:
        assert got is None
    else:
        assert got is not None and why in got


@pytest.mark.parametrize(('error', 'kind', 'status', 'code'), [
    (UpstreamUnreachable('u', 'cannot connect'), 'blob', 503, ErrorCode.BLOB_UNKNOWN),
    (UpstreamTimeout('u', 'timed out'), 'manifest', 504, ErrorCode.MANIFEST_UNKNOWN),
    (UpstreamBadResponse('u', 'answered 500'), 'tags', 502, ErrorCode.NAME_UNKNOWN),
    (UpstreamBadContent('u', 'bad'), 'blob', 502, ErrorCode.BLOB_UNKNOWN),
    (UpstreamNotFound('u', 'nope'), 'blob', 404, ErrorCode.BLOB_UNKNOWN),
    (UpstreamNotFound('u', 'nope'), 'manifest', 404, ErrorCode.MANIFEST_UNKNOWN),
    (UpstreamNotFound('u', 'nope'), 'tags', 404, ErrorCode.NAME_UNKNOWN),
    (UpstreamNotFound('u', 'nope'), 'referrers', 404, ErrorCode.MANIFEST_UNKNOWN),
    (UpstreamRateLimited('u', 'slow', retry_after='7'), 'blob', 429,
     ErrorCode.TOOMANYREQUESTS),
    (UpstreamAuthRefused('u', 'no'), 'manifest', 403, ErrorCode.DENIED),
    (UpstreamRealmRefused('u', 'elsewhere'), 'manifest', 502, ErrorCode.DENIED),
])
def test_oci_error_of_each_failure(error: object, kind: str, status: int,
                                   code: ErrorCode) -> None:
    e = error.to_registry_error(kind)  # type: ignore[attr-defined]
    assert (e.status, e.code) == (status, code)
    assert e.entries[0].detail['upstream'] == 'u'
    assert e.entries[0].message.startswith('upstream u: ')
    assert e.status != 500
    if isinstance(error, UpstreamRateLimited):
        assert e.headers == {'Retry-After': '7'}
