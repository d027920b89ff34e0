"""Routing of ``/v2/<name>/<suffix>`` where ``<name>`` holds any number of slashes.

Falcon's templates cannot put a multi-segment field in the middle of a path, so the
router splits the path from the right: every OCI suffix has a fixed number of
segments and is anchored at the end, so ``/v2/a/manifests/b/manifests/v1`` routes
as name ``a/manifests/b``, reference ``v1``. The name is matched leniently here and
validated once, in middleware, so a bad name is a 400 NAME_INVALID, never a 404.
Paths without an OCI suffix (``/v2/``, ``/v2/_catalog``) use Falcon's own routing.
"""

from __future__ import annotations

import re
from typing import Any

from falcon.routing import CompiledRouter

# Stand-in single segment used to look up the registered `/v2/{name}/…` templates.
_PLACEHOLDER = 'n'

# One group per suffix: its parameter (or the suffix itself when it has none).
_SPLIT = re.compile(
    r'/v2/(?P<name>.+?)/(?:'
    r'(?P<uploads>blobs/uploads/?)'  # end-4a/4b/11 (with or without the trailing slash)
    r'|blobs/uploads/(?P<session_id>[^/]+)'  # end-5/6/13/14
    r'|blobs/(?P<digest>[^/]+)'  # end-2/10
    r'|manifests/(?P<reference>[^/]+)'  # end-3/7/9
    r'|(?P<tags>tags/list)'  # end-8
    r'|referrers/(?P<subject>[^/]+)'  # end-12
    r')'
)
# group -> (the suffix Falcon's router knows it by, the route's parameter or None)
_SUFFIXES = {
    'uploads': ('blobs/uploads/', None),
    'session_id': ('blobs/uploads/{}', 'session_id'),
    'digest': ('blobs/{}', 'digest'),
    'reference': ('manifests/{}', 'reference'),
    'tags': ('tags/list', None),
    'subject': ('referrers/{}', 'digest'),
}


def split_path(path: str) -> tuple[str, str] | None:
    """``(name, suffix)`` of an OCI path, or None for paths without an OCI suffix."""
    m = _SPLIT.fullmatch(path)
    if m is None:
        return None
    return m['name'], path[m.end('name') + 1:]


class OCIRouter(CompiledRouter):
    def __init__(self) -> None:
        super().__init__()
        # group -> (resource, method map, template), looked up once per suffix: the
        # compiled router's match is the same for every name and parameter.
        self._oci: dict[str, tuple[Any, Any, str | None] | None] = {}

    def add_route(self, uri_template: str, resource: object, **kwargs: Any) -> None:
        self._oci.clear()
        super().add_route(uri_template, resource, **kwargs)

    def find(self, uri: str, req: Any = None) -> Any:
        m = _SPLIT.fullmatch(uri)
        if m is None:
            return super().find(uri, req)
        group = m.lastgroup
        assert group is not None and group != 'name'
        suffix, param = _SUFFIXES[group]
        if group not in self._oci:
            found = super().find(f'/v2/{_PLACEHOLDER}/{suffix.format(_PLACEHOLDER)}')
            self._oci[group] = None if found is None else (found[0], found[1], found[3])
        route = self._oci[group]
        if route is None:
            return None
        resource, method_map, template = route
        params = {'name': m['name']}
        if param is not None:
            params[param] = m[group]
        return resource, method_map, params, template
