"""Helpers for the e2e tests: raw HTTP/1.1 on a socket, RSS sampling, process probes.

httpx and http.client hide what is on the wire (they drop HEAD bodies, de-chunk
responses, never wait for ``100 Continue``); these helpers show the bytes.
"""

from __future__ import annotations

import hashlib
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import httpx

from oci_ref.testing import Process, http_ready
from tests.support import Server, rss_kib

MIB = 1 << 20


# Servers already stop themselves when they never become ready (oci_ref.testing).
Started = Server


class Launched:
    """A server whose whole command line, environment and cwd the test chooses.

    `Server` always passes ``--listen``/``--root`` flags, which would win over every
    other source; the settings-precedence tests need to leave them out. ``port`` is
    where the test expects the server to end up listening (a free loopback port).
    """

    def __init__(self, log_dir: Path, port: int, args: list[str],
                 env: dict[str, str], cwd: Path):
        self.root = cwd
        self.port = port
        self.url = f'http://127.0.0.1:{port}'
        self.log = log_dir / f'server-{port}.log'
        clean = {k: v for k, v in os.environ.items() if not k.startswith('OCI_REF_')}
        self.proc = Process.spawn([sys.executable, '-m', 'oci_ref', 'serve', *args],
                                  log=self.log, env={**clean, **env}, cwd=cwd,
                                  name='oci-ref')
        self.proc.wait_ready(http_ready(self.url + '/healthz'))

    def stop(self) -> int:
        return self.proc.stop()

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60)


# -- raw HTTP/1.1 -------------------------------------------------------------------


@dataclass
class RawResponse:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    raw_head: bytes = field(repr=False, default=b'')

    def header(self, name: str) -> str | None:
        values = self.all(name)
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name.lower()]


def parse_head(head: bytes) -> tuple[int, str, list[tuple[str, str]]]:
    lines = head.decode('latin-1').split('\r\n')
    _version, status, reason = [*lines[0].split(' ', 2), ''][:3]
    headers = []
    for line in lines[1:]:
        if line:
            k, _, v = line.partition(':')
            headers.append((k.strip().lower(), v.strip()))
    return int(status), reason, headers


def request_bytes(method: str, path: str, port: int,
                  headers: dict[str, str] | None = None, body: bytes = b'') -> bytes:
    lines = [f'{method} {path} HTTP/1.1', f'Host: 127.0.0.1:{port}']
    hdrs = {'Connection': 'close', **(headers or {})}
    if body and not any(k.lower() in ('content-length', 'transfer-encoding')
                        for k in hdrs):
        hdrs['Content-Length'] = str(len(body))
    lines += [f'{k}: {v}' for k, v in hdrs.items()]
    return ('\r\n'.join(lines) + '\r\n\r\n').encode('latin-1') + body


def read_until(sock: socket.socket, buf: bytearray, marker: bytes) -> bytes:
    """Read into ``buf`` until ``marker``; return everything up to and including it."""
    while marker not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f'EOF before {marker!r}; got {bytes(buf[:500])!r}')
        buf += chunk
    i = buf.index(marker) + len(marker)
    head = bytes(buf[:i])
    del buf[:i]
    return head


def read_to_eof(sock: socket.socket, buf: bytearray) -> bytes:
    while chunk := sock.recv(1 << 20):
        buf += chunk
    return bytes(buf)


def raw(port: int, method: str, path: str, headers: dict[str, str] | None = None,
        body: bytes = b'', timeout: float = 30) -> RawResponse:
    """One request with ``Connection: close``; the body is *everything* the server
    sent after the header block until it closed the connection (no de-chunking,
    no Content-Length trimming, no HEAD special case)."""
    with socket.create_connection(('127.0.0.1', port), timeout=timeout) as s:
        s.sendall(request_bytes(method, path, port, headers, body))
        buf = bytearray()
        head = read_until(s, buf, b'\r\n\r\n')
        rest = read_to_eof(s, buf)
    status, reason, hdrs = parse_head(head)
    return RawResponse(status, reason, hdrs, rest, head)


def chunked_frames(pieces: list[bytes]) -> bytes:
    """A Transfer-Encoding: chunked body, written by hand."""
    out = b''.join(b'%x\r\n%s\r\n' % (len(p), p) for p in pieces if p)
    return out + b'0\r\n\r\n'


# -- memory and process probes -------------------------------------------------------


class RssSampler:
    """Samples the RSS of some processes in a background thread; ``peak_kib`` is the
    largest single-process value seen (and the largest sum, in ``peak_total_kib``)."""

    def __init__(self, pids: list[int], interval: float = 0.01):
        self.pids = pids
        self.interval = interval
        self.peak_kib = 0
        self.peak_total_kib = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        values = []
        for pid in self.pids:
            try:
                values.append(rss_kib(pid))
            except (FileNotFoundError, ProcessLookupError):
                values.append(0)
        self.peak_kib = max(self.peak_kib, *values)
        self.peak_total_kib = max(self.peak_total_kib, sum(values))
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def children(pid: int) -> list[int]:
    """Direct child processes of ``pid`` (from /proc)."""
    found = []
    for entry in Path('/proc').iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / 'stat').read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...; comm may hold spaces and parentheses.
        ppid = int(stat.rsplit(')', 1)[1].split()[1])
        if ppid == pid:
            found.append(int(entry.name))
    return sorted(found)


def cmdline(pid: int) -> str:
    try:
        return Path(f'/proc/{pid}/cmdline').read_bytes().replace(b'\0', b' ').decode()
    except OSError:
        return ''


def alive(pid: int) -> bool:
    try:
        state = Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[0]
    except OSError:
        return False
    return state != 'Z'


def write_bytes(pid: int) -> int:
    """Bytes the process has passed to write(2) and friends (/proc/<pid>/io wchar)."""
    for line in Path(f'/proc/{pid}/io').read_text().splitlines():
        if line.startswith('wchar:'):
            return int(line.split()[1])
    raise AssertionError(f'no wchar for {pid}')


def port_refuses(port: int) -> bool:
    try:
        with socket.create_connection(('127.0.0.1', port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


# -- big bodies ---------------------------------------------------------------------


class PatternBody:
    """A body generator of ``total`` bytes in ``chunk``-sized pieces, each piece
    different (its index repeated), hashed as it is produced: the expected digest
    without holding the body in memory. Distinct pieces catch reordered, dropped or
    duplicated chunks, which an all-zero body would not. Several bodies can share
    one ``hasher`` (the pieces of one blob sent in several requests)."""

    def __init__(self, total: int, *, chunk: int = MIB, first_piece: int = 0,
                 hasher: hashlib._Hash | None = None):
        self.total = total
        self.chunk = chunk
        self.first_piece = first_piece
        self.hasher = hasher if hasher is not None else hashlib.sha256()
        self.sent = 0

    def __iter__(self) -> Iterator[bytes]:
        index = self.first_piece
        while self.sent < self.total:
            n = min(self.chunk, self.total - self.sent)
            block = (index.to_bytes(8, 'big') * (n // 8 + 1))[:n]
            self.hasher.update(block)
            self.sent += n
            index += 1
            yield block

    @property
    def digest(self) -> str:
        assert self.sent == self.total, (self.sent, self.total)
        return f'sha256:{self.hasher.hexdigest()}'


class Stopwatch:
    def __enter__(self) -> Stopwatch:
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.t0
