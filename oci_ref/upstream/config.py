"""``[[upstream]]`` tables: the registries oci-ref mirrors, validated at start.

One table per upstream registry; every key can be overridden per upstream from the
environment as ``OCI_REF_UPSTREAM_<NAME>_<KEY>`` (``<NAME>`` is the upstream's name in
upper case with every other character as ``_``: ``docker.io`` -> ``DOCKER_IO``).
``OCI_REF_UPSTREAM`` (or ``--upstream``) gives upstreams without a file, as
``name=url`` pairs separated by commas. Credentials are never part of this value
(it is handed to every worker): see oci_ref/upstream/credentials.py.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from oci_ref.config import ConfigError, parse_bool

ENV_PREFIX = 'OCI_REF_UPSTREAM_'
# Read by credentials.py at run time, never stored in the config value.
SECRET_KEYS = ('username', 'password', 'identity_token')
# distribution-spec §Pulling manifests: one path component of a repository name. The
# upstream's name is the first component of every name it serves (the prefix form).
_COMPONENT = re.compile(r'[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*')
# A source host as containerd sends it in `ns` (host[:port]).
_HOST = re.compile(r'[A-Za-z0-9.-]+(?::\d{1,5})?|\[[0-9A-Fa-f:.]+\](?::\d{1,5})?')
_SIZE = re.compile(r'\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*', re.IGNORECASE)
_UNITS = {'': 1, 'b': 1, 'k': 1000, 'kb': 1000, 'kib': 1024, 'm': 1000**2, 'mb': 1000**2,
          'mib': 1024**2, 'g': 1000**3, 'gb': 1000**3, 'gib': 1024**3, 't': 1000**4,
          'tb': 1000**4, 'tib': 1024**4, 'ki': 1024, 'mi': 1024**2, 'gi': 1024**3,
          'ti': 1024**4}
# Docker Hub: the registry API host differs from the source host clients use, and
# its token realm lives on another host (auth.docker.io).
DOCKER_HUB_HOSTS = ('registry-1.docker.io', 'index.docker.io')
DOCKER_HUB_NAMESPACES = ('docker.io', 'index.docker.io', 'registry-1.docker.io')
DOCKER_HUB_REALMS = ('auth.docker.io',)


@dataclass(frozen=True)
class Upstream:
    """One upstream registry. Times are seconds, sizes bytes."""

    name: str
    url: str
    namespaces: tuple[str, ...] = ()
    credentials: Path | None = None
    tag_ttl: int = 300
    max_stale: int = 86400
    tls_verify: bool = True
    ca_file: Path | None = None
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    repositories: tuple[str, ...] = ('*',)
    cache_max_bytes: int = 0
    cache_touch_interval: int = 60
    cache_min_age: int = 60
    realm_hosts: tuple[str, ...] = ()
    library: bool = False
    default: bool = False

    @property
    def host(self) -> str:
        """host[:port] of the upstream's API, as in its URL."""
        return urlsplit(self.url).netloc

    @property
    def hostname(self) -> str:
        return urlsplit(self.url).hostname or ''

    def allows(self, repository: str) -> bool:
        """May ``repository`` (the upstream's own name for it) be fetched?"""
        for p in self.repositories:
            if p == '*' or fnmatch.fnmatchcase(repository, p):  # '*': the default
                return True
        return False

    def upstream_repository(self, repository: str) -> str:
        """Docker Hub keeps official images under ``library/``: ``alpine`` is
        ``library/alpine`` there (what docker and containers/image send anyway)."""
        if self.library and '/' not in repository:
            return f'library/{repository}'
        return repository


# Field types as written (``from __future__ import annotations``: strings).
_KEYS: dict[str, str] = {f.name: str(f.type) for f in fields(Upstream)}


def env_name(name: str) -> str:
    """``docker.io`` -> ``DOCKER_IO`` (the per-upstream part of environment names)."""
    return re.sub(r'[^A-Z0-9]', '_', name.upper())


def parse_upstreams(value: Any, environ: Mapping[str, str] | None = None
                    ) -> tuple[Upstream, ...]:
    """``[[upstream]]`` tables (a list of dicts), or the ``name=url,…`` string form,
    with ``OCI_REF_UPSTREAM_<NAME>_<KEY>`` overrides from ``environ``; every error
    names the table and the key."""
    if isinstance(value, tuple) and all(isinstance(u, Upstream) for u in value):
        tables: list[dict[str, Any]] = [_as_table(u) for u in value]
    elif isinstance(value, str):
        tables = _parse_compact(value)
    elif isinstance(value, (list, tuple)):
        tables = []
        for i, table in enumerate(value):
            if not isinstance(table, Mapping):
                raise ConfigError(f'upstream[{i}]: must be a table ([[upstream]]), '
                                  f'not {type(table).__name__}')
            tables.append(dict(table))
    else:
        raise ConfigError('upstream: must be an array of tables ([[upstream]])')
    environ = environ or {}
    upstreams = tuple(_parse_one(i, t, environ) for i, t in enumerate(tables))
    _check_all(upstreams, environ)
    return upstreams


def _as_table(u: Upstream) -> dict[str, Any]:
    return {f.name: getattr(u, f.name) for f in fields(Upstream)}


def _parse_compact(text: str) -> list[dict[str, Any]]:
    tables = []
    for item in (s.strip() for s in text.split(',')):
        if not item:
            continue
        name, sep, url = item.partition('=')
        if not sep:
            raise ConfigError(f'upstream: {item!r} is not name=url '
                              '(e.g. docker.io=https://registry-1.docker.io)')
        tables.append({'name': name.strip(), 'url': url.strip()})
    return tables


def _parse_one(index: int, table: dict[str, Any], environ: Mapping[str, str]) -> Upstream:
    where = f'upstream[{index}]'
    name = table.get('name')
    if not isinstance(name, str) or not name:
        raise ConfigError(f'{where}: name is required (the source host, e.g. "docker.io")')
    where = f'upstream[{index}] ({name})'
    if not _COMPONENT.fullmatch(name):
        raise ConfigError(
            f'{where}: name must be one repository-name component ([a-z0-9] joined '
            f'by ".", "_" or "-"), since it is the local prefix; list a source host '
            f'with a port in namespaces')
    prefix = ENV_PREFIX + env_name(name) + '_'
    for var, text in environ.items():
        if not var.startswith(prefix):
            continue
        key = var[len(prefix):].lower()
        if key in SECRET_KEYS:
            continue
        if key not in _KEYS or key == 'name':
            raise ConfigError(f'{var}: {key!r} is not an upstream setting')
        table[key] = text
    unknown = set(table) - set(_KEYS)
    if unknown:
        raise ConfigError(f'{where}: unknown keys: {", ".join(sorted(unknown))} '
                          f'(known: {", ".join(_KEYS)})')
    values = {k: _convert(where, k, v) for k, v in table.items()}
    return _validated(where, values)


def _convert(where: str, key: str, value: Any) -> Any:
    kind = _KEYS[key]
    bad = ConfigError(f'{where}: {key}: invalid value {value!r} (expected {_EXPECT[kind]})')
    if kind == 'bool':
        try:
            return parse_bool(value)
        except ValueError:
            raise bad from None
    if kind == 'int':
        if key == 'cache_max_bytes':
            return _size(value, bad)
        if isinstance(value, bool):
            raise bad
        try:
            return int(value)
        except (TypeError, ValueError):
            raise bad from None
    if kind == 'float':
        if isinstance(value, bool):
            raise bad
        try:
            return float(value)
        except (TypeError, ValueError):
            raise bad from None
    if kind == 'Path | None':
        if value in (None, ''):
            return None
        if not isinstance(value, (str, Path)):
            raise bad
        return Path(value)
    if kind == 'tuple[str, ...]':
        items: Iterable[Any] = (value if isinstance(value, (list, tuple))
                                else str(value).split(','))
        out = tuple(str(v).strip() for v in items)
        if any(not v for v in out):
            raise bad
        return out
    if not isinstance(value, str):
        raise bad
    return value


_EXPECT = {'bool': 'true or false', 'int': 'an integer', 'float': 'a number of seconds',
           'Path | None': 'a file path', 'tuple[str, ...]': 'an array of strings',
           'str': 'a string'}


def _size(value: Any, bad: ConfigError) -> int:
    if isinstance(value, bool):
        raise bad
    if isinstance(value, int):
        return value
    m = _SIZE.fullmatch(str(value))
    if m is None:
        raise bad
    unit = (m[2] or '').lower()
    if unit not in _UNITS:
        raise bad
    return int(float(m[1]) * _UNITS[unit])


def _validated(where: str, v: dict[str, Any]) -> Upstream:
    if 'url' not in v:
        raise ConfigError(f'{where}: url is required (e.g. "https://registry-1.docker.io")')
    parts = urlsplit(v['url'])
    if parts.scheme not in ('http', 'https') or not parts.hostname:
        raise ConfigError(f'{where}: url must be an http(s) URL, not {v["url"]!r}')
    if parts.path not in ('', '/') or parts.query or parts.fragment:
        raise ConfigError(f'{where}: url is the registry root (no path, query or '
                          f'fragment), not {v["url"]!r}')
    if parts.username or parts.password:
        # Secrets in a URL end up in logs and in the worker hand-over.
        raise ConfigError(f'{where}: url must not carry credentials; use credentials '
                          'or the environment')
    v['url'] = f'{parts.scheme}://{parts.netloc}'
    docker_hub = parts.hostname in DOCKER_HUB_HOSTS
    v.setdefault('library', docker_hub)
    namespaces = v.get('namespaces') or (
        (v['name'], *DOCKER_HUB_NAMESPACES) if docker_hub else (v['name'],))
    v['namespaces'] = tuple(dict.fromkeys(namespaces))
    for ns in v['namespaces']:
        if not _HOST.fullmatch(ns):
            raise ConfigError(f'{where}: namespaces: {ns!r} is not a host[:port]')
    if 'realm_hosts' not in v and docker_hub:
        v['realm_hosts'] = DOCKER_HUB_REALMS
    for host in v.get('realm_hosts', ()):
        if not _HOST.fullmatch(host):
            raise ConfigError(f'{where}: realm_hosts: {host!r} is not a host[:port]')
    for key in ('tag_ttl', 'max_stale', 'cache_max_bytes', 'cache_touch_interval',
                'cache_min_age'):
        if v.get(key, 0) < 0:
            raise ConfigError(f'{where}: {key} must not be negative')
    for key in ('connect_timeout', 'read_timeout'):
        if key in v and not 0 < v[key] <= 3600:
            raise ConfigError(f'{where}: {key} must be between 0 and 3600 seconds')
    if not v.get('repositories', ('*',)):
        raise ConfigError(f'{where}: repositories must name at least one pattern')
    if v.get('ca_file') is not None:
        if v.get('tls_verify') is False:
            raise ConfigError(f'{where}: ca_file has no effect with tls_verify = false')
        if parts.scheme != 'https':
            raise ConfigError(f'{where}: ca_file needs an https url')
    for key in ('credentials', 'ca_file'):
        path = v.get(key)
        if path is not None and not path.is_file():
            raise ConfigError(f'{where}: {key}: no such file {str(path)!r}')
    upstream = Upstream(**v)
    if upstream.credentials is not None:
        from oci_ref.upstream.credentials import check_file  # here: an import cycle

        check_file(upstream.credentials, f'{where}: credentials')
    return upstream


def _check_all(upstreams: tuple[Upstream, ...], environ: Mapping[str, str]) -> None:
    seen: dict[str, str] = {}
    for u in upstreams:
        if u.name in seen:
            raise ConfigError(f'upstream ({u.name}): name is used twice')
        seen[u.name] = u.name
    owners: dict[str, str] = {}
    for u in upstreams:
        for ns in u.namespaces:
            if ns in owners and owners[ns] != u.name:
                raise ConfigError(f'upstream ({u.name}): namespaces: {ns!r} is also '
                                  f'claimed by {owners[ns]}')
            owners[ns] = u.name
    defaults = [u.name for u in upstreams if u.default]
    if len(defaults) > 1:
        raise ConfigError(f'upstream: default = true on more than one upstream: '
                          f'{", ".join(defaults)}')
    known = {ENV_PREFIX + env_name(u.name) + '_' for u in upstreams}
    for var in environ:
        if var.startswith(ENV_PREFIX) and not any(var.startswith(p) for p in known):
            raise ConfigError(f'{var}: no upstream is named like that '
                              f'(upstreams: {", ".join(seen) or "none"})')
