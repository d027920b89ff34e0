"""Routing of a name (+ ``ns``) to own storage or an upstream; refused writes."""

from __future__ import annotations

import pytest

from oci_ref.errors import ErrorCode, RegistryError
from oci_ref.upstream.config import parse_upstreams
from oci_ref.upstream.routing import (
    check_read,
    check_write,
    namespace_header,
    route,
)

UPSTREAMS = parse_upstreams([
    {'name': 'docker.io', 'url': 'https://registry-1.docker.io', 'default': True,
     'repositories': ['library/*', 'bitnami/*']},
    {'name': 'ghcr.io', 'url': 'https://ghcr.io'},
    {'name': 'r.example', 'url': 'https://r.example:8443',
     'namespaces': ['r.example:8443', 'r.example']},
])
NO_DEFAULT = parse_upstreams([{'name': 'ghcr.io', 'url': 'https://ghcr.io'}])


@pytest.mark.parametrize(('name', 'ns', 'upstream', 'repository', 'namespace', 'fallback'),
                         [
    # Prefix form (registries.conf mirror location with a path; override_path).
    ('docker.io/library/alpine', None, 'docker.io', 'library/alpine', None, False),
    ('docker.io/alpine', None, 'docker.io', 'library/alpine', None, False),  # Hub
    ('ghcr.io/org/app', None, 'ghcr.io', 'org/app', None, False),
    ('ghcr.io/app', None, 'ghcr.io', 'app', None, False),  # no library/ off the Hub
    ('r.example/a/b/c', None, 'r.example', 'a/b/c', None, False),
    # ns form (containerd hosts.toml on a bare host).
    ('library/alpine', 'docker.io', 'docker.io', 'library/alpine', 'docker.io', False),
    ('alpine', 'docker.io', 'docker.io', 'library/alpine', 'docker.io', False),
    ('library/alpine', 'registry-1.docker.io', 'docker.io', 'library/alpine',
     'registry-1.docker.io', False),
    ('org/app', 'ghcr.io', 'ghcr.io', 'org/app', 'ghcr.io', False),
    ('team/app', 'r.example:8443', 'r.example', 'team/app', 'r.example:8443', False),
    ('team/app', 'R.Example:8443', 'r.example', 'team/app', 'R.Example:8443', False),
    # containerd with override_path sends the prefix and ns: one upstream.
    ('docker.io/library/alpine', 'docker.io', 'docker.io', 'library/alpine',
     'docker.io', False),
    ('ghcr.io/org/app', 'ghcr.io', 'ghcr.io', 'org/app', 'ghcr.io', False),
    # ns wins over a prefix of another upstream.
    ('ghcr.io/org/app', 'docker.io', 'docker.io', 'ghcr.io/org/app', 'docker.io', False),
    # An ns no upstream claims is ignored (spec: MAY ignore); not echoed.
    ('ghcr.io/org/app', 'quay.io', 'ghcr.io', 'org/app', None, False),
    ('library/alpine', '127.0.0.1:5000', 'docker.io', 'library/alpine', None, True),
    ('library/alpine', 'not a host', 'docker.io', 'library/alpine', None, True),
    ('library/alpine', '', 'docker.io', 'library/alpine', None, True),
    # Default upstream (dockerd registry-mirrors): own name, falls through on a miss.
    ('library/alpine', None, 'docker.io', 'library/alpine', None, True),
    ('alpine', None, 'docker.io', 'library/alpine', None, True),
    ('bitnami/redis', None, 'docker.io', 'bitnami/redis', None, True),
    # ... only for repositories the default upstream may fetch.
    ('myteam/app', None, None, None, None, False),
    # The bare prefix is no repository of the upstream.
    ('docker.io', None, None, None, None, False),
])
def test_route(name: str, ns: str | None, upstream: str | None, repository: str | None,
               namespace: str | None, fallback: bool) -> None:
    r = route(name, ns, UPSTREAMS)
    assert (r.upstream.name if r.upstream else None) == upstream
    assert r.repository == repository
    assert r.namespace == namespace
    assert r.fallback is fallback
    assert r.proxied is (upstream is not None and not fallback)
    assert r.name == name
    if upstream is not None:
        assert r.cache_name == f'{upstream}/{repository}'
    assert namespace_header(r) == ({'OCI-Namespace': namespace} if namespace else {})


def test_same_image_three_ways_is_one_cache_name() -> None:
    ways = [route('docker.io/library/alpine', None, UPSTREAMS),
            route('docker.io/alpine', None, UPSTREAMS),
            route('library/alpine', 'docker.io', UPSTREAMS),
            route('alpine', 'docker.io', UPSTREAMS),
            route('docker.io/library/alpine', 'docker.io', UPSTREAMS),
            route('library/alpine', None, UPSTREAMS)]
    assert {r.cache_name for r in ways} == {'docker.io/library/alpine'}


@pytest.mark.parametrize(('name', 'ns'), [('library/alpine', None), ('org/app', 'x.io'),
                                          ('docker.io/alpine', None)])
def test_without_upstreams_everything_is_own(name: str, ns: str | None) -> None:
    r = route(name, ns, ())
    assert r.upstream is None and not r.proxied and r.cache_name is None


def test_no_default_no_fallback() -> None:
    r = route('library/alpine', None, NO_DEFAULT)
    assert r.upstream is None and not r.fallback


WRITES = ['POST', 'PUT', 'PATCH', 'DELETE']


@pytest.mark.parametrize('method', WRITES)
@pytest.mark.parametrize(('name', 'ns', 'upstream', 'how'), [
    ('docker.io/library/alpine', None, 'docker.io', 'names under docker.io/'),
    ('ghcr.io/me/app', None, 'ghcr.io', 'names under ghcr.io/'),
    ('me/app', 'ghcr.io', 'ghcr.io', 'requests with ns=ghcr.io'),
    ('docker.io/library/alpine', 'docker.io', 'docker.io', 'requests with ns=docker.io'),
    ('docker.io', None, 'docker.io', 'names under docker.io/'),  # the bare prefix
])
def test_writes_into_an_upstream_are_refused(method: str, name: str, ns: str | None,
                                             upstream: str, how: str) -> None:
    r = route(name, ns, UPSTREAMS)
    with pytest.raises(RegistryError) as info:
        check_write(r, method, UPSTREAMS)
    error = info.value
    assert error.code is ErrorCode.UNSUPPORTED and error.status == 405
    detail = error.entries[0].detail
    assert detail['upstream'] == upstream and detail['name'] == name
    assert detail['rule'].startswith(how)
    assert upstream in error.entries[0].message


@pytest.mark.parametrize('method', [*WRITES, 'GET', 'HEAD'])
@pytest.mark.parametrize(('name', 'ns'), [
    ('library/alpine', None),  # dockerd: pushes always stay local
    ('myteam/app', None),
    ('myteam/app', 'quay.io'),  # an ns that selects nothing
    ('docker.io-not/app', None),
])
def test_own_names_take_writes(method: str, name: str, ns: str | None) -> None:
    check_write(route(name, ns, UPSTREAMS), method, UPSTREAMS)


@pytest.mark.parametrize('method', ['GET', 'HEAD'])
def test_reads_of_proxied_names_pass(method: str) -> None:
    check_write(route('ghcr.io/org/app', None, UPSTREAMS), method, UPSTREAMS)


def test_reads_outside_the_repository_patterns_are_denied() -> None:
    r = route('docker.io/someone/tool', None, UPSTREAMS)
    with pytest.raises(RegistryError) as info:
        check_read(r)
    assert info.value.code is ErrorCode.DENIED and info.value.status == 403
    assert info.value.entries[0].detail == {
        'name': 'docker.io/someone/tool', 'upstream': 'docker.io',
        'repository': 'someone/tool', 'repositories': ['library/*', 'bitnami/*']}
    check_read(route('docker.io/library/alpine', None, UPSTREAMS))
    check_read(route('myteam/app', None, UPSTREAMS))  # own: not this check's business


def test_pool_routes_and_shares_one_client_per_upstream() -> None:
    import asyncio

    from oci_ref.upstream.pool import Upstreams

    async def go() -> None:
        pool = Upstreams(UPSTREAMS, environ={})
        assert pool and not Upstreams(())
        r = pool.route('ghcr.io/org/app', None)
        assert r.cache_name == 'ghcr.io/org/app'
        assert r.upstream is not None
        c = pool.client(r.upstream)
        assert pool.client(r.upstream) is c
        assert pool.client(UPSTREAMS[0]) is not c
        await pool.aclose()
        assert c.http.is_closed
        assert pool.client(r.upstream) is not c  # reopened after close
        await pool.aclose()
    asyncio.run(go())
