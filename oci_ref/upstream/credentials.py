"""Credentials for an upstream: a docker ``config.json`` / containers ``auth.json``
file, or ``OCI_REF_UPSTREAM_<NAME>_USERNAME`` / ``_PASSWORD`` / ``_IDENTITY_TOKEN``.

They come only from the operator's configuration, never from a client's request
(distribution-spec §Registry Proxying, implementer's note), and their ``repr`` hides
every secret so that no log line can carry one.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oci_ref.config import ConfigError
from oci_ref.upstream.config import DOCKER_HUB_HOSTS, ENV_PREFIX, Upstream, env_name

# Docker's own key for Docker Hub in config.json.
DOCKER_HUB_KEYS = ('https://index.docker.io/v1/', 'index.docker.io', 'docker.io',
                   'registry-1.docker.io')


@dataclass(frozen=True)
class Credentials:
    """A username and password, or an identity (refresh) token for the token flow."""

    username: str = ''
    password: str = field(default='', repr=False)
    identity_token: str = field(default='', repr=False)

    def __repr__(self) -> str:
        kind = 'identity token' if self.identity_token else 'password'
        return f'Credentials(username={self.username!r}, {kind}=<hidden>)'

    __str__ = __repr__

    @property
    def basic(self) -> tuple[str, str] | None:
        return (self.username, self.password) if self.username and self.password else None


def _key_host(key: str) -> str:
    """``https://host:5000/v1/`` or ``host:5000/ns/repo`` -> ``host:5000/ns/repo``."""
    if '://' in key:
        key = key.split('://', 1)[1]
    key = key.rstrip('/')
    for api in ('/v1', '/v2'):
        if key.endswith(api):
            key = key[: -len(api)]
    return key


def _entry(key: str, entry: Any, where: str) -> Credentials:
    if not isinstance(entry, Mapping):
        raise ConfigError(f'{where}: auths[{key!r}] is not an object')
    username = entry.get('username') or ''
    password = entry.get('password') or ''
    token = entry.get('identitytoken') or ''
    encoded = entry.get('auth')
    if encoded:
        try:
            decoded = base64.b64decode(str(encoded), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            # Not echoing the value: it is a secret.
            raise ConfigError(f'{where}: auths[{key!r}].auth is not base64 of '
                              '"user:password"') from None
        user, sep, pw = decoded.partition(':')
        if not sep:
            raise ConfigError(f'{where}: auths[{key!r}].auth is not base64 of '
                              '"user:password"')
        username, password = username or user, password or pw
    if not all(isinstance(v, str) for v in (username, password, token)):
        raise ConfigError(f'{where}: auths[{key!r}]: username, password and '
                          'identitytoken are strings')
    return Credentials(username, password, token)


def read_file(path: Path, where: str = 'credentials') -> dict[str, Credentials]:
    """Every ``auths`` entry of ``path``, keyed by host[/namespace…] (no scheme)."""
    try:
        data = json.loads(path.read_bytes())
    except OSError as ex:
        raise ConfigError(f'{where}: cannot read {str(path)!r}: {ex.strerror}') from None
    except (ValueError, UnicodeDecodeError):
        raise ConfigError(f'{where}: {str(path)!r} is not JSON') from None
    if not isinstance(data, Mapping) or not isinstance(data.get('auths', {}), Mapping):
        raise ConfigError(f'{where}: {str(path)!r} has no "auths" object')
    return {_key_host(k): _entry(k, v, where) for k, v in data.get('auths', {}).items()}


def check_file(path: Path, where: str) -> None:
    """Validate at start; the file is read again when a client is built, so that a
    rotated secret is picked up on restart of the client, not kept in the config."""
    read_file(path, where)


def from_environ(upstream: Upstream, environ: Mapping[str, str]) -> Credentials | None:
    prefix = ENV_PREFIX + env_name(upstream.name) + '_'
    username = environ.get(prefix + 'USERNAME', '')
    password = environ.get(prefix + 'PASSWORD', '')
    token = environ.get(prefix + 'IDENTITY_TOKEN', '')
    if not (username or password or token):
        return None
    if password and not username:
        raise ConfigError(f'{prefix}PASSWORD is set without {prefix}USERNAME')
    return Credentials(username, password, token)


def lookup(entries: Mapping[str, Credentials], upstream: Upstream,
           repository: str) -> Credentials | None:
    """The most specific entry for ``repository`` at ``upstream``, the way
    containers-auth.json(5) matches: ``host/ns/repo``, then ``host/ns``, then
    ``host``; hosts are the upstream's name, namespaces, and API host."""
    hosts = [upstream.name, *upstream.namespaces, upstream.host]
    if upstream.hostname in DOCKER_HUB_HOSTS:
        hosts += DOCKER_HUB_KEYS
    parts = repository.split('/')
    for i in range(len(parts), -1, -1):
        suffix = '/'.join(parts[:i])
        for host in dict.fromkeys(_key_host(h) for h in hosts):
            found = entries.get(f'{host}/{suffix}' if suffix else host)
            if found is not None:
                return found
    return None


class CredentialStore:
    """Credentials for one upstream: the environment wins over the file."""

    def __init__(self, upstream: Upstream, environ: Mapping[str, str]):
        self.upstream = upstream
        self._env = from_environ(upstream, environ)
        self._file = (read_file(upstream.credentials, f'upstream ({upstream.name}): '
                                'credentials')
                      if upstream.credentials is not None else {})

    def __repr__(self) -> str:
        return f'CredentialStore({self.upstream.name})'

    def for_repository(self, repository: str) -> Credentials | None:
        if self._env is not None:
            return self._env
        return lookup(self._file, self.upstream, repository)
