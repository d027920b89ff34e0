"""The HTTP client and the registry operations the figures time: one keep-alive
connection per client, request bodies streamed from a file with sendfile(2)."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.plan import (
    CONFIG_TYPE,
    HTTP_TIMEOUT,
    LAYER_TYPE,
    MANIFEST_TYPE,
    KiB,
    MiB,
)


class HTTPFailure(Exception):
    pass


@dataclass
class Resp:
    status: int
    headers: http.client.HTTPMessage
    body: bytes
    # Client.pull: time.perf_counter() when the first body byte was read.
    first_byte: float | None = None

    def expect(self, *status: int, what: str = '') -> Resp:
        if self.status not in status:
            raise HTTPFailure(
                f'{what}: HTTP {self.status}, expected {status}: {self.body[:300]!r}'
            )
        return self


@dataclass(frozen=True)
class Body:
    """``length`` bytes of ``path`` from ``offset``, then ``suffix``: sent with
    sendfile(2), never read into the client's memory."""

    path: Path
    offset: int
    length: int
    suffix: bytes = b''

    @property
    def size(self) -> int:
        return self.length + len(self.suffix)


def url_path(location: str) -> str:
    """A Location (absolute or relative) as path?query on this connection."""
    u = urllib.parse.urlsplit(location)
    return u.path + (f'?{u.query}' if u.query else '')


def with_digest(location: str, digest: str) -> str:
    path = url_path(location)
    sep = '&' if '?' in path else '?'
    return f'{path}{sep}digest={urllib.parse.quote(digest, safe="")}'


class Client:
    """One keep-alive HTTP/1.1 connection to a registry."""

    def __init__(self, port: int):
        self.port = port
        self._conn: http.client.HTTPConnection | None = None

    def _c(self) -> http.client.HTTPConnection:
        if self._conn is None:
            self._conn = http.client.HTTPConnection(
                '127.0.0.1', self.port, timeout=HTTP_TIMEOUT, blocksize=MiB
            )
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _finish(self, conn: http.client.HTTPConnection) -> Resp:
        resp = conn.getresponse()
        body = resp.read()
        if resp.will_close:
            self.close()
        return Resp(resp.status, resp.headers, body)

    def request(
        self,
        method: str,
        url: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Resp:
        conn = self._c()
        try:
            conn.request(method, url, body=body, headers=headers or {})
            return self._finish(conn)
        except (OSError, http.client.HTTPException):
            self.close()
            raise

    def send_file(
        self, method: str, url: str, body: Body, headers: dict[str, str] | None = None
    ) -> Resp:
        """A request whose body is streamed from a file with sendfile(2)."""
        conn = self._c()
        try:
            conn.putrequest(method, url, skip_accept_encoding=True)
            hdrs = {
                'Content-Type': 'application/octet-stream',
                **(headers or {}),
                'Content-Length': str(body.size),
            }
            for k, v in hdrs.items():
                conn.putheader(k, v)
            conn.endheaders()
            sock = conn.sock
            try:
                with open(body.path, 'rb') as f:
                    sent = sock.sendfile(f, body.offset, body.length)
                if sent != body.length:
                    raise HTTPFailure(f'sendfile sent {sent} of {body.length} bytes')
                if body.suffix:
                    sock.sendall(body.suffix)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server answered early (an error): read that answer
            return self._finish(conn)
        except (OSError, http.client.HTTPException):
            self.close()
            raise

    def pull(self, url: str, sink: int) -> tuple[Resp, int]:
        """GET, the body written to the file descriptor ``sink`` 1 MiB at a time."""
        conn = self._c()
        try:
            conn.request('GET', url)
            resp = conn.getresponse()
            total = 0
            body = b''
            first = None
            if resp.status == 200:
                buf = memoryview(bytearray(MiB))
                # The first read takes what has arrived: its end is the first byte.
                if n := resp.readinto(buf[:1]):
                    first = time.perf_counter()
                    os.write(sink, buf[:n])
                    total += n
                while n := resp.readinto(buf):
                    os.write(sink, buf[:n])
                    total += n
            else:
                body = resp.read()
            if resp.will_close:
                self.close()
            return Resp(resp.status, resp.headers, body, first), total
        except (OSError, http.client.HTTPException):
            self.close()
            raise


# -- registry operations -----------------------------------------------------------


def sha256_digest(data: bytes) -> str:
    return 'sha256:' + hashlib.sha256(data).hexdigest()


def start_upload(c: Client, repo: str) -> str:
    r = c.request('POST', f'/v2/{repo}/blobs/uploads/').expect(202, what='POST upload')
    loc = r.headers.get('Location')
    if not loc:
        raise HTTPFailure('POST upload: no Location')
    return loc


def push_bytes(c: Client, repo: str, data: bytes, digest: str | None = None) -> str:
    """POST + PUT with a small in-memory body (what docker and crane do)."""
    digest = digest or sha256_digest(data)
    loc = start_upload(c, repo)
    c.request(
        'PUT',
        with_digest(loc, digest),
        body=data,
        headers={'Content-Type': 'application/octet-stream'},
    ).expect(201, what='PUT blob')
    return digest


def push_file(c: Client, repo: str, body: Body, digest: str) -> None:
    """Monolithic: POST, then one PUT ?digest= carrying the whole body."""
    loc = start_upload(c, repo)
    c.send_file('PUT', with_digest(loc, digest), body).expect(201, what='PUT blob')


def push_chunked(
    c: Client, repo: str, chunks: list[Body], last: bytes, digest: str
) -> None:
    """POST, one PATCH per chunk (with Content-Range), then PUT ?digest= with
    ``last`` as the final chunk."""
    loc = start_upload(c, repo)
    offset = 0
    for chunk in chunks:
        r = c.send_file(
            'PATCH',
            url_path(loc),
            chunk,
            headers={'Content-Range': f'{offset}-{offset + chunk.size - 1}'},
        ).expect(202, what='PATCH chunk')
        offset += chunk.size
        loc = r.headers.get('Location') or loc
    c.request(
        'PUT',
        with_digest(loc, digest),
        body=last,
        headers={'Content-Type': 'application/octet-stream'},
    ).expect(201, what='PUT last chunk')


def mount(c: Client, repo: str, digest: str, source: str) -> None:
    q = urllib.parse.urlencode({'mount': digest, 'from': source})
    c.request('POST', f'/v2/{repo}/blobs/uploads/?{q}').expect(201, what='mount')


def manifest_for(config: tuple[str, int], layers: list[tuple[str, int]]) -> bytes:
    return json.dumps(
        {
            'schemaVersion': 2,
            'mediaType': MANIFEST_TYPE,
            'config': {'mediaType': CONFIG_TYPE, 'digest': config[0], 'size': config[1]},
            'layers': [
                {'mediaType': LAYER_TYPE, 'digest': d, 'size': s} for d, s in layers
            ],
        },
        separators=(',', ':'),
    ).encode()


def put_manifest(c: Client, repo: str, ref: str, body: bytes) -> None:
    c.request(
        'PUT',
        f'/v2/{repo}/manifests/{ref}',
        body=body,
        headers={'Content-Type': MANIFEST_TYPE},
    ).expect(201, what='PUT manifest')


def config_blob(layer_digests: list[str]) -> bytes:
    return json.dumps(
        {
            'architecture': 'amd64',
            'os': 'linux',
            'rootfs': {'type': 'layers', 'diff_ids': layer_digests},
        },
        separators=(',', ':'),
    ).encode()


@dataclass(frozen=True)
class Image:
    manifest: bytes
    config: tuple[str, int]
    layer: tuple[str, int]


def seed_image(c: Client, repo: str, tag: str) -> Image:
    """A config and one 4 KiB layer in ``repo``, and a manifest tagged ``tag``."""
    layer = os.urandom(4 * KiB)
    ld = push_bytes(c, repo, layer)
    cfg = config_blob([ld])
    cd = push_bytes(c, repo, cfg)
    manifest = manifest_for((cd, len(cfg)), [(ld, len(layer))])
    put_manifest(c, repo, tag, manifest)
    return Image(manifest, (cd, len(cfg)), (ld, len(layer)))


# -- the source file ---------------------------------------------------------------


class Source:
    """Random data in a file, created once per run. The sha256 states of its slices
    are computed once, so a unique suffix per push (the stores deduplicate) costs
    one small hash update, outside any timing."""

    def __init__(self, path: Path, size: int):
        self.path = path
        self.size = size
        self._states: dict[tuple[int, int], Any] = {}
        with open(path, 'wb') as f:
            left = size
            while left:
                n = min(left, 16 * MiB)
                f.write(os.urandom(n))
                left -= n

    def _state(self, offset: int, length: int) -> Any:
        key = (offset, length)
        if key not in self._states:
            h = hashlib.sha256()
            with open(self.path, 'rb', buffering=0) as f:
                f.seek(offset)
                left = length
                while left:
                    chunk = f.read(min(left, 4 * MiB))
                    h.update(chunk)
                    left -= len(chunk)
            self._states[key] = h
        return self._states[key]

    def body(self, offset: int, length: int, suffix: bytes) -> tuple[Body, str]:
        h = self._state(offset, length).copy()
        h.update(suffix)
        return Body(self.path, offset, length, suffix), 'sha256:' + h.hexdigest()

    def chunked(self, chunks: int, suffix: bytes) -> tuple[list[Body], str]:
        step = self.size // chunks
        h = self._state(0, self.size).copy()
        h.update(suffix)
        return (
            [Body(self.path, i * step, step) for i in range(chunks)],
            'sha256:' + h.hexdigest(),
        )


_nonce = 0


def unique(tag: str) -> bytes:
    """A suffix no earlier push of this run had."""
    global _nonce
    _nonce += 1
    return f'\n#{tag}#{_nonce}#{time.time_ns()}'.encode()
