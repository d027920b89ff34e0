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

_SPLIT = re.compile(
    r'/v2/(?P<name>.+?)/(?P<suffix>'
    r'blobs/uploads/?'  # end-4a/4b/11 (with or without the trailing slash)
    r'|blobs/uploads/[^/]+'  # end-5/6/13/14
    r'|blobs/[^/]+'  # end-2/10
    r'|manifests/[^/]+'  # end-3/7/9
    r'|tags/list'  # end-8
    r'|referrers/[^/]+'  # end-12
    r')'
)


def split_path(path: str) -> tuple[str, str] | None:
    """``(name, suffix)`` of an OCI path, or None for paths without an OCI suffix."""
    m = _SPLIT.fullmatch(path)
    if m is None:
        return None
    return m['name'], m['suffix']


class OCIRouter(CompiledRouter):
    def find(self, uri: str, req: Any = None) -> Any:
        parts = split_path(uri)
        if parts is None:
            return super().find(uri, req)
        name, suffix = parts
        if suffix == 'blobs/uploads':
            suffix = 'blobs/uploads/'
        found = super().find(f'/v2/{_PLACEHOLDER}/{suffix}', req)
        if found is None:
            return None
        resource, method_map, params, template = found
        params['name'] = name
        return resource, method_map, params, template
