"""Test helpers shared by tests/api (in-process) and tests/e2e (real socket).

Both kinds of client expose the httpx call shape: ``c.request(method, url, headers=,
content=)`` and ``c.get/head/put/post/patch/delete``, returning objects with
``status_code``, ``headers`` (case-insensitive) and ``content``/``json()``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import falcon.testing
import httpx

from oci_ref.testing import OCIRegistry, Process

OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json'
OCI_INDEX = 'application/vnd.oci.image.index.v1+json'
OCI_CONFIG = 'application/vnd.oci.image.config.v1+json'
OCI_LAYER = 'application/vnd.oci.image.layer.v1.tar+gzip'
EMPTY_JSON = 'application/vnd.oci.empty.v1+json'
DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json'
DOCKER_LIST = 'application/vnd.docker.distribution.manifest.list.v2+json'
SPEC_CODES = {
    'BLOB_UNKNOWN', 'BLOB_UPLOAD_INVALID', 'BLOB_UPLOAD_UNKNOWN', 'DIGEST_INVALID',
    'MANIFEST_BLOB_UNKNOWN', 'MANIFEST_INVALID', 'MANIFEST_UNKNOWN', 'NAME_INVALID',
    'NAME_UNKNOWN', 'SIZE_INVALID', 'UNAUTHORIZED', 'DENIED', 'UNSUPPORTED',
    'TOOMANYREQUESTS',
}
# errors.ExtensionCode: only ever with a 5xx status.
SERVER_CODES = {'UNAVAILABLE'}


class Resp:
    def __init__(self, status_code: int, headers: Any, content: bytes):
        self.status_code = status_code
        self.headers = headers
        self.content = content

    def json(self) -> Any:
        return json.loads(self.content)


class InProcess:
    """falcon.testing.TestClient behind the httpx call shape."""

    def __init__(self, app: Any):
        self.tc = falcon.testing.TestClient(app)

    def request(self, method: str, url: str, *, headers: dict[str, str] | None = None,
                content: bytes | None = None, **simulate: Any) -> Resp:
        """``simulate``: more falcon.testing arguments (``protocol``, ``host``,
        ``remote_addr``)."""
        path, _, query = url.partition('?')
        r = self.tc.simulate_request(method, path, query_string=query or None,
                                     headers=headers, body=content or b'', **simulate)
        return Resp(r.status_code, r.headers, r.content)

    def __getattr__(self, method: str) -> Any:
        if method in ('get', 'head', 'put', 'post', 'patch', 'delete'):
            return lambda url, **kw: self.request(method.upper(), url, **kw)
        raise AttributeError(method)


def digest(data: bytes, algorithm: str = 'sha256') -> str:
    return f'{algorithm}:{hashlib.new(algorithm, data).hexdigest()}'


def assert_error(r: Any, status: int, code: str) -> dict[str, Any]:
    """The response is the spec's error envelope with ``code`` first."""
    assert r.status_code == status, (r.status_code, r.content[:500])
    assert r.headers['content-type'].startswith('application/json')
    body = r.json()
    assert body['errors'], body
    for e in body['errors']:
        assert e['code'] in (SERVER_CODES if status >= 500 else SPEC_CODES)
    assert body['errors'][0]['code'] == code, body
    return body['errors'][0]


def push_blob(c: Any, name: str, data: bytes, algorithm: str = 'sha256') -> str:
    """POST then PUT with the whole body (end-4a + end-6)."""
    d = digest(data, algorithm)
    r = c.post(f'/v2/{name}/blobs/uploads/')
    assert r.status_code == 202, r.content
    location = r.headers['location']
    # distribution's Location already carries a query (_state=…).
    sep = '&' if '?' in location else '?'
    r = c.put(f'{location}{sep}digest={d}', content=data,
              headers={'Content-Type': 'application/octet-stream'})
    assert r.status_code == 201, r.content
    return d


def descriptor(media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {'mediaType': media_type, 'digest': digest(data), 'size': len(data), **extra}


def image_manifest(config: bytes, layers: list[bytes], **extra: Any) -> bytes:
    return json.dumps({
        'schemaVersion': 2,
        'mediaType': OCI_MANIFEST,
        'config': descriptor(OCI_CONFIG, config),
        'layers': [descriptor(OCI_LAYER, layer) for layer in layers],
        **extra,
    }).encode()


def push_image(c: Any, name: str, reference: str, *, seed: str = 'x',
               **extra: Any) -> tuple[str, bytes]:
    """Push a config, one layer and an OCI image manifest; return (digest, bytes)."""
    config = json.dumps({'architecture': 'amd64', 'os': 'linux', 'seed': seed,
                         'rootfs': {'type': 'layers', 'diff_ids': []}}).encode()
    layer = f'layer {seed}'.encode()
    push_blob(c, name, config)
    push_blob(c, name, layer)
    body = image_manifest(config, [layer], **extra)
    r = c.put(f'/v2/{name}/manifests/{reference}', content=body,
              headers={'Content-Type': OCI_MANIFEST})
    assert r.status_code == 201, r.content
    return digest(body), body


class Server(OCIRegistry):
    """A real `oci-ref serve` on a free loopback port (`oci_ref.testing.OCIRegistry`),
    given raw `serve` arguments, with an httpx client. ``proc`` is its
    `oci_ref.testing.Process` (``pid``, ``poll()``, ``wait()``)."""

    def __init__(self, root: Path, *args: str, env: dict[str, str] | None = None):
        super().__init__(root, args=args, env=env)

    @property
    def proc(self) -> Process:
        return self.process

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60)


def rss_kib(pid: int) -> int:
    text = Path(f'/proc/{pid}/status').read_text()
    m = re.search(r'VmRSS:\s+(\d+) kB', text)
    return int(m[1]) if m else 0


def zeros(total: int, chunk: int = 1 << 20) -> Iterator[bytes]:
    """A body generator: `total` bytes without holding them in memory."""
    block = b'\0' * chunk
    sent = 0
    while sent < total:
        n = min(chunk, total - sent)
        yield block[:n]
        sent += n


def counted(srv: Server, pattern: str, timeout: float = 15.0) -> str:
    """Scrape /metrics until a line matches ``pattern`` (a request is counted once
    its exchange is over, a moment after the client read the answer); the text."""
    import time

    deadline = time.monotonic() + timeout
    with srv.client() as c:
        while True:
            text = c.get('/metrics').text
            if re.search(pattern, text, re.M):
                return text
            assert time.monotonic() < deadline, (pattern, text)


def stored_token_key(root: Path, metadata_store: str = 'sqlite') -> bytes | None:
    """The token signing key a registry keeps in its metadata store (issue 14), read
    behind the store's back (tests forge tokens with it)."""
    if metadata_store.startswith(('postgresql://', 'postgres://')):
        import psycopg

        with psycopg.connect(metadata_store) as conn:
            row = conn.execute("SELECT key FROM signing_keys WHERE name = 'token'"
                               ).fetchone()
    else:
        import sqlite3

        conn = sqlite3.connect(root / 'oci-ref.db')
        try:
            row = conn.execute("SELECT key FROM signing_keys WHERE name = 'token'"
                               ).fetchone()
        finally:
            conn.close()
    return None if row is None else bytes(row[0])
