"""`skopeo experimental-image-proxy` through oci-ref (issue 13): the containers/image
streaming proxy protocol, the interface non-Go programs (ostree, bootc) use to fetch
images piece by piece. The test speaks the protocol itself: JSON requests on a
SOCK_SEQPACKET socketpair, replies carrying the read end of a pipe (SCM_RIGHTS) for
payloads, each pipe drained while ``FinishPipe`` waits for skopeo's writer and
reports its digest check (the protocol as cmd/skopeo/proxy.go documents it).

It opens one own (pushed) image and one proxied (pull-through, by prefix) image,
both multi-arch indexes that skopeo resolves to this host's platform, and reads the
manifest, the config (as a blob and as GetFullConfig) and every layer, checking
each against the digests pushed. The proxied one is fetched from the upstream once."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.interop.conftest import find_client
from tests.interop.layout import write_index_layout
from tests.interop.test_pull_through_clients import SOURCE, assert_fetched_once
from tests.interop.test_pull_through_clients import mirror as mirror
from tests.interop.test_pull_through_clients import upstream as upstream
from tests.interop.util import host, push_layout
from tests.support import Server

pytestmark = [pytest.mark.interop, pytest.mark.skopeo]
MAX_MESSAGE = 32 * 1024  # the proxy's packet limit (proxy.go maxMsgSize)


class ProxyError(Exception):
    """A reply with ``success: false``."""


class ImageProxy:
    """One `skopeo experimental-image-proxy --sockfd 3` process and its socket."""

    def __init__(self, exe: str, *flags: str):
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with theirs:
            os.set_inheritable(theirs.fileno(), True)
            self.proc = subprocess.Popen(
                [exe, '--insecure-policy', 'experimental-image-proxy', '--sockfd',
                 str(theirs.fileno()), *flags],
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.sock.settimeout(120)
        self.version: tuple[int, ...] = ()

    def initialize(self) -> tuple[int, ...]:
        """The protocol version skopeo speaks (the methods it has follow from it)."""
        version = self.call('Initialize')[0]
        assert isinstance(version, str) and version.startswith('0.2.'), version
        self.version = tuple(int(part) for part in version.split('.'))
        return self.version

    def call(self, method: str, *args: Any) -> tuple[Any, int | None, int]:
        """(value, pipe fd or None, pipeid) of one request."""
        self.sock.send(json.dumps({'method': method, 'args': list(args)}).encode())
        data, fds, _, _ = socket.recv_fds(self.sock, MAX_MESSAGE, 1)
        assert data, f'skopeo closed the socket: {self.output()}'
        reply = json.loads(data)
        if not reply['success']:
            for fd in fds:
                os.close(fd)
            raise ProxyError(reply['error'])
        return reply['value'], (fds[0] if fds else None), int(reply['pipeid'])

    def payload(self, method: str, *args: Any) -> tuple[Any, bytes]:
        """A call answered with a pipe: drained by a thread while FinishPipe waits
        for skopeo's writer (the write end closes only then) and reports its
        errors (digest and size checks of GetBlob)."""
        value, fd, pipeid = self.call(method, *args)
        assert fd is not None, f'{method} passed no pipe'
        chunks: list[bytes] = []

        def drain() -> None:
            with os.fdopen(fd, 'rb') as pipe:
                while chunk := pipe.read(1 << 16):
                    chunks.append(chunk)

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        self.call('FinishPipe', pipeid)
        reader.join(120)
        assert not reader.is_alive(), f'{method}: the pipe never ended'
        return value, b''.join(chunks)

    def output(self) -> str:
        if self.proc.poll() is None:
            return ''
        assert self.proc.stdout is not None
        return self.proc.stdout.read().decode(errors='replace')[-3000:]

    def close(self) -> None:
        """Shutdown (no reply), then skopeo exits 0."""
        try:
            self.sock.send(json.dumps({'method': 'Shutdown', 'args': []}).encode())
            assert self.proc.wait(60) == 0, self.output()
        finally:
            self.sock.close()
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def proxy(request: pytest.FixtureRequest) -> Iterator[ImageProxy]:
    p = ImageProxy(find_client(request.param), '--tls-verify=false')
    try:
        p.initialize()
        yield p
    finally:
        p.close()


def blob(layout: Path, digest: str) -> bytes:
    return (layout / 'blobs' / 'sha256' / digest.split(':', 1)[1]).read_bytes()


def sha256(data: bytes) -> str:
    return 'sha256:' + hashlib.sha256(data).hexdigest()


def read_image(proxy: ImageProxy, ref: str, layout: Path, index_digest: str) -> None:
    """Open ``ref``, read everything the protocol offers, compare with ``layout``."""
    index = json.loads(blob(layout, index_digest))
    (want,) = [m for m in index['manifests']
               if m['platform']['architecture'] == 'amd64']
    image = proxy.call('OpenImage', ref)[0]
    assert isinstance(image, int) and image > 0
    digest, manifest = proxy.payload('GetManifest', image)
    # OCI manifests pass unconverted: the same bytes, under their own digest.
    assert digest == want['digest'] == sha256(manifest)
    assert manifest == blob(layout, want['digest'])
    doc = json.loads(manifest)
    for d in [doc['config'], *doc['layers']]:
        size, data = proxy.payload('GetBlob', image, d['digest'], d['size'])
        assert size == d['size'] == len(data) and sha256(data) == d['digest']
        assert data == blob(layout, d['digest'])
    _, full = proxy.payload('GetFullConfig', image)
    config = json.loads(blob(layout, doc['config']['digest']))
    got = json.loads(full)
    assert (got['architecture'], got['rootfs']) == (config['architecture'],
                                                    config['rootfs'])
    proxy.call('CloseImage', image)


BOTH = pytest.mark.parametrize('proxy', ['skopeo', 'skopeo-1.18'], indirect=True)


@BOTH
def test_image_proxy_reads_an_own_image(proxy: ImageProxy, mirror: Server,
                                        workdir: Path) -> None:
    repo = f'interop/image-proxy-own-{proxy.proc.pid}'
    digest = write_index_layout(workdir / 'src', 'v1', seed=repo)
    push_layout(mirror, workdir / 'src', repo, 'v1')
    read_image(proxy, f'docker://{host(mirror)}/{repo}:v1', workdir / 'src', digest)


@BOTH
def test_image_proxy_reads_a_proxied_image(proxy: ImageProxy, mirror: Server,
                                           upstream: Server,
                                           workdir: Path) -> None:
    repo = f'interop/image-proxy-cached-{proxy.proc.pid}'
    digest = write_index_layout(workdir / 'src', 'v1', seed=repo)
    push_layout(upstream, workdir / 'src', repo, 'v1')
    ref = f'docker://{host(mirror)}/{SOURCE}/{repo}'
    read_image(proxy, f'{ref}:v1', workdir / 'src', digest)
    # Opening it again is served from the cache: each piece came from upstream once.
    read_image(proxy, f'{ref}@{digest}', workdir / 'src', digest)
    assert_fetched_once(upstream, repo)
    # What the upstream does not have is "not found" to the protocol, an image
    # error, not a broken proxy (OpenImageOptional: protocol 0.2.4 on).
    with pytest.raises(ProxyError, match=r'(?i)manifest unknown|not found'):
        proxy.call('OpenImage', f'{ref}-missing:v1')
    if proxy.version >= (0, 2, 4):
        assert proxy.call('OpenImageOptional', f'{ref}-missing:v1')[0] == 0
