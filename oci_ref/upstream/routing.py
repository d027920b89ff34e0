"""Which registry a request's name belongs to: own storage or an upstream.

Pure functions of the requested name, the ``ns`` query parameter and the configured
upstreams; no I/O. Three ways reach an upstream:

1. ``ns`` (distribution-spec §Registry Proxying): containerd sends the source host
   as ``?ns=<host>`` on every manifest, blob and referrers request (and on pushes)
   to a mirror. An ``ns`` naming a configured upstream routes there and is echoed in
   ``OCI-Namespace``; any other ``ns`` is ignored, as the spec allows.
2. Prefix: ``/v2/<upstream name>/<repository>/…`` (containers-registries.conf
   mirrors with a path, containerd's ``override_path``).
3. Default upstream: a name outside every prefix that own storage does not hold
   falls through to the ``default`` upstream on pulls (dockerd ``registry-mirrors``).

Every name maps to one cache name, ``<upstream name>/<repository>``, so that the
same image reached in any of the three ways is fetched and stored once.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from oci_ref.errors import ErrorCode, RegistryError

if TYPE_CHECKING:  # with no upstream configured, the start never needs it (issue 17)
    from oci_ref.upstream.config import Upstream

# Methods that change a repository (push, delete, upload sessions).
WRITE_METHODS = frozenset({'POST', 'PUT', 'PATCH', 'DELETE'})
_NS = re.compile(r'[A-Za-z0-9.-]+(?::\d{1,5})?|\[[0-9A-Fa-f:.]+\](?::\d{1,5})?')


@dataclass(frozen=True, slots=True)
class Route:
    """Where a name is served from.

    ``upstream`` is None for an own repository. With ``fallback`` the name is own,
    but a pull that own storage cannot answer goes to ``upstream`` (the default).
    ``repository`` is the upstream's name for it; ``namespace`` is the ``ns`` value
    that selected the upstream (to echo in ``OCI-Namespace``), or None.
    """

    name: str
    upstream: Upstream | None = None
    repository: str | None = None
    namespace: str | None = None
    fallback: bool = False

    @property
    def proxied(self) -> bool:
        """Served from the upstream only (prefix or ``ns``): never own content."""
        return self.upstream is not None and not self.fallback

    @property
    def cache_name(self) -> str | None:
        """The local name cached content of this route is recorded under."""
        if self.upstream is None or self.repository is None:
            return None
        return f'{self.upstream.name}/{self.repository}'

    @property
    def allowed(self) -> bool:
        return (self.upstream is not None and self.repository is not None
                and self.upstream.allows(self.repository))


def by_namespace(upstreams: Sequence[Upstream], ns: str | None) -> Upstream | None:
    if not ns or not _NS.fullmatch(ns):
        return None
    ns = ns.lower()
    for u in upstreams:
        if ns in u.namespaces:
            return u
    return None


def by_prefix(upstreams: Sequence[Upstream], name: str) -> tuple[Upstream, str] | None:
    """``docker.io/library/alpine`` -> (docker.io, ``library/alpine``)."""
    first, sep, rest = name.partition('/')
    if not sep:
        return None
    for u in upstreams:
        if u.name == first:
            return u, rest
    return None


def default_upstream(upstreams: Sequence[Upstream]) -> Upstream | None:
    return next((u for u in upstreams if u.default), None)


def route(name: str, ns: str | None, upstreams: Sequence[Upstream]) -> Route:
    """Route a request for ``name`` carrying ``?ns=`` (or None)."""
    if not upstreams:
        return Route(name)
    upstream = by_namespace(upstreams, ns)
    if upstream is not None:
        # containerd with override_path sends the prefix *and* ns: one upstream.
        prefixed = by_prefix([upstream], name)
        repository = prefixed[1] if prefixed is not None else name
        return Route(name, upstream, upstream.upstream_repository(repository),
                     namespace=ns)
    prefixed = by_prefix(upstreams, name)
    if prefixed is not None:
        upstream, repository = prefixed
        return Route(name, upstream, upstream.upstream_repository(repository))
    fallback = default_upstream(upstreams)
    if fallback is not None and not any(u.name == name for u in upstreams):
        repository = fallback.upstream_repository(name)
        if fallback.allows(repository):
            return Route(name, fallback, repository, fallback=True)
    return Route(name)


def reserved_by(name: str, upstreams: Sequence[Upstream]) -> Upstream | None:
    """The upstream whose prefix ``name`` is, or lies under."""
    first = name.partition('/')[0]
    return next((u for u in upstreams if u.name == first), None)


def check_write(r: Route, method: str, upstreams: Sequence[Upstream]) -> None:
    """Refuse a push, delete or upload into an upstream's names: they are a cache.

    405 UNSUPPORTED, as for the spec's disabled deletes (§Deleting) and our
    read-only mode; the detail names the upstream and where pushes may go.
    """
    if method not in WRITE_METHODS:
        return
    upstream = r.upstream if r.proxied else reserved_by(r.name, upstreams)
    if upstream is None:
        return
    how = (f'requests with ns={r.namespace}' if r.namespace is not None
           else f'names under {upstream.name}/')
    raise RegistryError(
        ErrorCode.UNSUPPORTED,
        f'{r.name} is a read-only mirror of upstream {upstream.name}',
        detail={
            'name': r.name,
            'upstream': upstream.name,
            'url': upstream.url,
            'rule': f'{how} are pulled from {upstream.url} and cached; push, '
                    f'delete and upload only to names outside the upstream '
                    f'prefixes, without an ns naming an upstream',
        },
    )


def check_read(r: Route) -> None:
    """Refuse a pull through an upstream of a repository its patterns exclude."""
    if not r.proxied or r.allowed:
        return
    assert r.upstream is not None
    raise RegistryError(
        ErrorCode.DENIED,
        f'upstream {r.upstream.name} does not serve {r.repository}',
        detail={
            'name': r.name,
            'upstream': r.upstream.name,
            'repository': r.repository,
            'repositories': list(r.upstream.repositories),
        },
    )


def namespace_header(r: Route) -> dict[str, str]:
    """§Registry Proxying: a registry that scoped the request by ``ns`` SHOULD return
    its value in ``OCI-Namespace``."""
    return {'OCI-Namespace': r.namespace} if r.namespace is not None else {}
