"""Helpers for the interop tests: run a client, check over HTTP what it pushed, seed
a registry from an OCI layout without any client."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlencode, urljoin

import httpx

from tests.interop.layout import ALL_MANIFEST_TYPES, INDEX_TYPES


class Registry(Protocol):
    port: int
    url: str
    log: Path


# Where the server log was at a moment: one position per log file (replicas behind a
# load balancer have one each, tests/replicas.py).
Mark = tuple[int, ...]


def host(registry: Registry) -> str:
    return f'127.0.0.1:{registry.port}'


def _logs(registry: Registry) -> list[Path]:
    return list(getattr(registry, 'logs', None) or [registry.log])


def _log_file(path: Path) -> str:
    try:
        return path.read_text(errors='replace')
    except OSError:
        return ''


def log_text(registry: Registry) -> str:
    return ''.join(_log_file(p) for p in _logs(registry))


def log_mark(registry: Registry) -> Mark:
    """Position in the server log(s): `log_since` returns what came after it."""
    return tuple(len(_log_file(p)) for p in _logs(registry))


def log_since(registry: Registry, mark: Mark) -> str:
    return ''.join(_log_file(p)[at:] for p, at in zip(_logs(registry), mark, strict=True))


def run(args: list[str], *, registry: Registry | None = None,
        env: dict[str, str] | None = None, timeout: float = 180, check: bool = True,
        cwd: Path | None = None, input: str | None = None
        ) -> subprocess.CompletedProcess[str]:
    """Run a client; on failure the assertion shows the command, its output and the
    server log lines written while it ran."""
    mark = log_mark(registry) if registry is not None else ()
    full_env = {**os.environ, **(env or {})}
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout,
                              env=full_env, cwd=cwd, input=input)
    except subprocess.TimeoutExpired as ex:
        raise AssertionError(f'timed out after {timeout}s: {shlex.join(args)}\n'
                             f'stdout: {_tail(ex.stdout)}\nstderr: {_tail(ex.stderr)}'
                             + _server_tail(registry, mark)) from None
    if check and done.returncode != 0:
        raise AssertionError(
            f'exit {done.returncode}: {shlex.join(args)}\n'
            f'stdout: {_tail(done.stdout)}\nstderr: {_tail(done.stderr)}'
            + _server_tail(registry, mark))
    return done


def _tail(text: str | bytes | None, lines: int = 40) -> str:
    if text is None:
        return ''
    if isinstance(text, bytes):
        text = text.decode(errors='replace')
    return '\n'.join(text.rstrip().splitlines()[-lines:])


def _server_tail(registry: Registry | None, mark: Mark) -> str:
    if registry is None:
        return ''
    return f'\nserver log during the command:\n{_tail(log_since(registry, mark), 60)}'


def sha256(data: bytes) -> str:
    return 'sha256:' + hashlib.sha256(data).hexdigest()


def served(registry: Registry, repo: str, digest: str,
           media_type: str | None = None) -> dict[str, Any]:
    """The manifest ``digest`` is served by digest (GET and HEAD) with the right
    Content-Type and Docker-Content-Digest; return it parsed."""
    url = f'{registry.url}/v2/{repo}/manifests/{digest}'
    accept = {'Accept': ', '.join(ALL_MANIFEST_TYPES)}
    r = httpx.get(url, headers=accept, timeout=30)
    assert r.status_code == 200, (url, r.status_code, r.text[:500])
    body = r.json()
    expected_type = media_type or body.get('mediaType')
    assert expected_type, f'{digest} has no mediaType and none was expected'
    assert r.headers['content-type'] == expected_type, (url, r.headers['content-type'])
    assert r.headers['docker-content-digest'] == digest, (url, dict(r.headers))
    assert sha256(r.content) == digest
    h = httpx.head(url, headers=accept, timeout=30)
    assert h.status_code == 200, (url, h.status_code)
    assert h.headers['content-type'] == expected_type
    assert h.headers['docker-content-digest'] == digest
    assert int(h.headers['content-length']) == len(r.content)
    return body


def resolve(registry: Registry, repo: str, ref: str) -> str:
    """Digest of ``repo:ref`` as the registry reports it (HEAD)."""
    r = httpx.head(f'{registry.url}/v2/{repo}/manifests/{ref}',
                   headers={'Accept': ', '.join(ALL_MANIFEST_TYPES)}, timeout=30)
    assert r.status_code == 200, (repo, ref, r.status_code)
    return r.headers['docker-content-digest']


def manifest_status(registry: Registry, repo: str, ref: str) -> int:
    return httpx.get(f'{registry.url}/v2/{repo}/manifests/{ref}',
                     headers={'Accept': ', '.join(ALL_MANIFEST_TYPES)},
                     timeout=30).status_code


def tags(registry: Registry, repo: str) -> list[str]:
    """Every tag of ``repo`` (following `Link` pages), sorted."""
    found: list[str] = []
    url: str | None = f'{registry.url}/v2/{repo}/tags/list'
    while url:
        r = httpx.get(url, timeout=30)
        assert r.status_code == 200, (repo, r.status_code, r.text[:300])
        found += r.json().get('tags') or []
        nxt = r.links.get('next', {}).get('url')
        url = urljoin(registry.url, nxt) if nxt else None
    return sorted(found)


def referrers(registry: Registry, repo: str, digest: str) -> list[dict[str, Any]]:
    """The referrers API's answer (fails on a registry without the API)."""
    r = httpx.get(f'{registry.url}/v2/{repo}/referrers/{digest}', timeout=30)
    assert r.status_code == 200, ('referrers API', repo, digest, r.status_code,
                                  r.text[:300])
    assert r.headers['content-type'] == 'application/vnd.oci.image.index.v1+json'
    return list(r.json()['manifests'])


# ------------------------------------------------------------------- seeding ----
def push_layout(registry: Registry, layout: Path, repo: str, tag: str) -> str:
    """Push the image or index tagged ``tag`` in an OCI layout over plain HTTP (no
    client involved): the way tests get content into a registry for a client to pull.
    Return the top-level digest."""
    index = json.loads((layout / 'index.json').read_text())
    desc = next(m for m in index['manifests']
                if m.get('annotations', {}).get('org.opencontainers.image.ref.name') == tag)
    with httpx.Client(base_url=registry.url, timeout=60) as c:
        _push_manifest(c, layout, repo, desc, tag)
    return str(desc['digest'])


def _read(layout: Path, digest: str) -> bytes:
    return (layout / 'blobs' / 'sha256' / digest.split(':', 1)[1]).read_bytes()


def _push_manifest(c: httpx.Client, layout: Path, repo: str, desc: dict[str, Any],
                   ref: str) -> None:
    body = _read(layout, desc['digest'])
    doc = json.loads(body)
    if desc['mediaType'] in INDEX_TYPES:
        for child in doc['manifests']:
            _push_manifest(c, layout, repo, child, child['digest'])
    else:
        for blob in [doc['config'], *doc['layers']]:
            _push_blob(c, repo, _read(layout, blob['digest']))
    r = c.put(f'/v2/{repo}/manifests/{ref}', content=body,
              headers={'Content-Type': desc['mediaType']})
    assert r.status_code == 201, (r.status_code, r.text[:500])


def _push_blob(c: httpx.Client, repo: str, data: bytes) -> None:
    d = sha256(data)
    if c.head(f'/v2/{repo}/blobs/{d}').status_code == 200:
        return
    r = c.post(f'/v2/{repo}/blobs/uploads/')
    assert r.status_code == 202, (r.status_code, r.text[:300])
    location = urljoin(str(c.base_url), r.headers['location'])
    sep = '&' if '?' in location else '?'
    r = c.put(f'{location}{sep}{urlencode({"digest": d})}', content=data,
              headers={'Content-Type': 'application/octet-stream'})
    assert r.status_code == 201, (r.status_code, r.text[:300])


# ------------------------------------------------- podman / buildah storage ----
class ContainersTool:
    """podman or buildah with private storage under ``base`` (``--root``/``--runroot``),
    a registries.conf that marks the registry insecure (CONTAINERS_REGISTRIES_CONF),
    and the overlay driver, or vfs where overlay cannot work."""

    def __init__(self, exe: str, registry: Registry, base: Path, driver: str):
        self.exe = exe
        self.registry = registry
        self.base = base
        for sub in ('root', 'run', 'tmp', 'home'):
            (base / sub).mkdir(parents=True, exist_ok=True)
        conf = base / 'registries.conf'
        conf.write_text('unqualified-search-registries = []\n\n'
                        f'[[registry]]\nlocation = "{host(registry)}"\ninsecure = true\n')
        (base / 'auth.json').write_text('{"auths": {}}')
        self.flags = ['--root', str(base / 'root'), '--runroot', str(base / 'run'),
                      '--storage-driver', driver]
        if Path(exe).name == 'podman':
            self.flags += ['--tmpdir', str(base / 'tmp'), '--cgroup-manager', 'cgroupfs',
                           '--events-backend', 'file']
        self.env = {'CONTAINERS_REGISTRIES_CONF': str(conf), 'TMPDIR': str(base / 'tmp'),
                    'REGISTRY_AUTH_FILE': str(base / 'auth.json'),
                    'HOME': str(base / 'home')}

    def __call__(self, *args: str, check: bool = True) -> str:
        return run([self.exe, *self.flags, *args], registry=self.registry, env=self.env,
                   check=check).stdout

    def cleanup(self) -> None:
        """Remove the containers and images the test left (and with them their
        mounts)."""
        if Path(self.exe).name == 'buildah':
            self('rm', '--all', check=False)
        self('rmi', '--all', '--force', check=False)


def mounted(log: str, repo: str) -> bool:
    """A cross-repository mount into ``repo`` succeeded (201) in this log text."""
    return re.search(rf'"POST /v2/{re.escape(repo)}/blobs/uploads/\?\S*mount=\S* '
                     r'HTTP/1\.1" 201', log) is not None
