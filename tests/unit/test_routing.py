"""split_path and OCIRouter: ``/v2/<name>/<suffix>`` with any number of slashes in the
name, matched from the right (cf. olareg's TestMatchV2)."""

from __future__ import annotations

from typing import Any

import pytest

from oci_ref.routing import OCIRouter, split_path

D = 'sha256:' + 'a' * 64
UUID = '0f0e0d0c-0b0a-4908-8706-050403020100'


@pytest.mark.parametrize(('path', 'expected'), [
    # single and multi-component names
    ('/v2/repo/manifests/latest', ('repo', 'manifests/latest')),
    ('/v2/repo/with/sub/path/manifests/latest',
     ('repo/with/sub/path', 'manifests/latest')),
    (f'/v2/repo/manifests/{D}', ('repo', f'manifests/{D}')),
    (f'/v2/repo/blobs/{D}', ('repo', f'blobs/{D}')),
    ('/v2/repo/blobs/uploads/', ('repo', 'blobs/uploads/')),
    ('/v2/repo/blobs/uploads', ('repo', 'blobs/uploads')),
    (f'/v2/repo/blobs/uploads/{UUID}', ('repo', f'blobs/uploads/{UUID}')),
    ('/v2/repo/tags/list', ('repo', 'tags/list')),
    (f'/v2/a/b/referrers/{D}', ('a/b', f'referrers/{D}')),
    # names holding the suffix keywords as components
    ('/v2/a/manifests/b/manifests/v1', ('a/manifests/b', 'manifests/v1')),
    ('/v2/manifests/manifests/manifests', ('manifests', 'manifests/manifests')),
    ('/v2/blobs/blobs/blobs', ('blobs', 'blobs/blobs')),
    ('/v2/tags/tags/list', ('tags', 'tags/list')),
    ('/v2/a/tags/list/tags/list', ('a/tags/list', 'tags/list')),
    ('/v2/x/blobs/uploads/blobs/uploads/', ('x/blobs/uploads', 'blobs/uploads/')),
    (f'/v2/x/referrers/y/referrers/{D}', ('x/referrers/y', f'referrers/{D}')),
    (f'/v2/a/blobs/b/blobs/{D}', ('a/blobs/b', f'blobs/{D}')),
    ('/v2/a/manifests/tags/list', ('a/manifests', 'tags/list')),
    # the name is matched leniently here; validation (400 NAME_INVALID) comes later
    ('/v2/UPPER/manifests/v1', ('UPPER', 'manifests/v1')),
    ('/v2/a//b/manifests/v1', ('a//b', 'manifests/v1')),
])
def test_split_path_matches(path, expected):
    assert split_path(path) == expected


@pytest.mark.parametrize('path', [
    '/v2/',
    '/v2',
    '/v2/_catalog',
    '/v3/repo/manifests/latest',  # mismatch v2
    '/v2/repo/manifests',  # short: no reference
    '/v2/repo/manifests/',  # empty reference
    '/v2/manifests/latest',  # empty repo
    '/v2//manifests/latest',  # empty repo
    '/v2/repo/manifests/latest/extra',  # extra segment
    '/v2/repo/tags/list/',  # trailing slash
    '/v2/repo/tags',
    '/v2/repo/referrers/',
    '/v2/repo/blobs/',
    '/v2/repo/unknown/x',
    '/v2/repo/blobs/uploads/id/extra',
    'v2/repo/manifests/latest',  # not anchored at /
    '/x/v2/repo/manifests/latest',
])
def test_split_path_mismatches(path):
    assert split_path(path) is None


class Resource:
    def __init__(self, label: str):
        self.label = label

    # A plain CompiledRouter takes synchronous responders (the app's are async).
    def on_get(self, req: Any, resp: Any, **params: Any) -> None: ...

    def on_get_session(self, req: Any, resp: Any, **params: Any) -> None: ...


@pytest.fixture
def router() -> OCIRouter:
    r = OCIRouter()
    r.add_route('/v2/', Resource('ping'))
    r.add_route('/v2/_catalog', Resource('catalog'))
    r.add_route('/v2/{name}/manifests/{reference}', Resource('manifest'))
    r.add_route('/v2/{name}/blobs/{digest}', Resource('blob'))
    uploads = Resource('uploads')
    r.add_route('/v2/{name}/blobs/uploads/', uploads)
    r.add_route('/v2/{name}/blobs/uploads/{session_id}', uploads, suffix='session')
    r.add_route('/v2/{name}/tags/list', Resource('tags'))
    r.add_route('/v2/{name}/referrers/{digest}', Resource('referrers'))
    return r


@pytest.mark.parametrize(('path', 'label', 'params'), [
    ('/v2/a/b/c/manifests/v1', 'manifest', {'name': 'a/b/c', 'reference': 'v1'}),
    ('/v2/a/manifests/b/manifests/v1', 'manifest',
     {'name': 'a/manifests/b', 'reference': 'v1'}),
    (f'/v2/a/b/blobs/{D}', 'blob', {'name': 'a/b', 'digest': D}),
    ('/v2/a/b/blobs/uploads/', 'uploads', {'name': 'a/b'}),
    ('/v2/a/b/blobs/uploads', 'uploads', {'name': 'a/b'}),
    (f'/v2/a/b/blobs/uploads/{UUID}', 'uploads', {'name': 'a/b', 'session_id': UUID}),
    ('/v2/x/tags/list/tags/list', 'tags', {'name': 'x/tags/list'}),
    (f'/v2/n/referrers/{D}', 'referrers', {'name': 'n', 'digest': D}),
    ('/v2/', 'ping', {}),
    ('/v2/_catalog', 'catalog', {}),
])
def test_oci_router_finds_resource_and_params(router, path, label, params):
    found = router.find(path)
    assert found is not None
    resource, method_map, got, _ = found
    assert resource.label == label
    assert got == params
    assert 'GET' in method_map


def test_oci_router_upload_session_uses_the_session_responders(router):
    resource, method_map, _, _ = router.find(f'/v2/a/blobs/uploads/{UUID}')
    assert method_map['GET'] == resource.on_get_session
    resource, method_map, _, _ = router.find('/v2/a/blobs/uploads/')
    assert method_map['GET'] == resource.on_get


@pytest.mark.parametrize('path', ['/v2/repo/unknown/x', '/v2/repo/manifests', '/v3/',
                                  '/v2/a/tags/list/extra'])
def test_oci_router_unknown_paths_are_not_found(router, path):
    assert router.find(path) is None
