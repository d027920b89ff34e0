"""Shared helpers for the robustness tests (crash safety, concurrency, bad input).

- killing a whole `oci-ref serve` process tree with SIGKILL (the parent is the one
  ``Server.proc``; ``--workers N`` children are found through /proc);
- looking at a storage root from the outside, the way an auditor would: every file
  under ``blobs/`` re-hashed, the SQLite metadata read through a read-only URI and
  cross-checked (manifests against the blobs they name, tags against manifests,
  sessions against spools), and ``python -m oci_ref fsck --json``;
- raw HTTP that reads the response while the body is still being sent, for the
  requests a server may answer (and close) before it has read them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.e2e._helpers import RawResponse, alive, children, parse_head, read_until
from tests.support import SPEC_CODES, Server

ALGORITHMS = {'sha256': 64, 'sha512': 128}
HEX = re.compile(r'[0-9a-f]+')
SESSION_ID = re.compile(r'[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}')


# -- processes -------------------------------------------------------------------------


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, grandchildren, ...), from /proc.
    (/proc/<pid>/task/*/children needs CONFIG_PROC_CHILDREN; parents in
    /proc/*/stat are always there.)"""
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children(todo.pop()):
            if child not in found:
                found.append(child)
                todo.append(child)
    return found


def kill_server(srv: Server, known: Iterable[int] = (), timeout: float = 15.0
                ) -> list[int]:
    """SIGKILL the server and every process it started; return the children's PIDs.

    ``known`` are its children as seen earlier (``descendants(srv.proc.pid)`` once
    the workers are up): they are killed first, at once, so the moment of the kill
    is the caller's and not "after a scan of /proc". The parent (uvicorn's
    supervisor with ``--workers``) is stopped before that, so it can neither notice
    a dead worker nor spawn a replacement; then anything else below it is found
    and killed, and the parent last. Only ``srv.proc`` and its descendants (checked
    by their parent PID) are signalled.
    """
    parent = srv.proc.pid
    kids: list[int] = []
    if srv.proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(parent, signal.SIGSTOP)
        for pid in known:
            if parent_of(pid) == parent:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                kids.append(pid)
        for pid in descendants(parent):
            if pid not in kids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                kids.append(pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(parent, signal.SIGKILL)
    srv.proc.wait(timeout=timeout)
    deadline = time.monotonic() + timeout
    while any(alive(pid) for pid in kids):
        if time.monotonic() > deadline:
            raise AssertionError(f'still alive after SIGKILL: '
                                 f'{[p for p in kids if alive(p)]}')
        time.sleep(0.01)
    srv.stop()  # only closes the log now
    return kids


def parent_of(pid: int) -> int | None:
    try:
        stat = Path(f'/proc/{pid}/stat').read_text()
    except OSError:
        return None
    return int(stat.rsplit(')', 1)[1].split()[1])


def worker_pids(srv: Server, count: int, timeout: float = 15.0) -> list[int]:
    """The ``--workers`` processes (multiprocessing spawn children) of ``srv``."""
    deadline = time.monotonic() + timeout
    while True:
        pids = [p for p in children(srv.proc.pid)
                if b'spawn_main' in _cmdline(p)]
        if len(pids) >= count or time.monotonic() > deadline:
            return pids
        time.sleep(0.05)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f'/proc/{pid}/cmdline').read_bytes()
    except OSError:
        return b''


def log_size(srv: Server) -> int:
    try:
        return srv.log.stat().st_size
    except FileNotFoundError:
        return 0


def log_problems(srv: Server, since: int = 0) -> list[str]:
    """Lines of the server log (from byte ``since`` on) that show an unhandled
    exception."""
    try:
        with open(srv.log, 'rb') as f:
            f.seek(since)
            text = f.read().decode(errors='replace')
    except FileNotFoundError:
        return []
    markers = ('Traceback', 'unhandled error', 'Exception in ASGI application')
    return [line for line in text.splitlines() if any(m in line for m in markers)]


# -- the storage root, from the outside ------------------------------------------------


def blob_files(root: Path) -> dict[str, Path]:
    """digest -> path of every well-named file under ``blobs/``."""
    found: dict[str, Path] = {}
    for path in _files(root / 'blobs'):
        rel = path.relative_to(root / 'blobs').parts
        if len(rel) == 3 and rel[0] in ALGORITHMS:
            found[f'{rel[0]}:{rel[2]}'] = path
    return found


def _files(top: Path) -> Iterator[Path]:
    for base, _dirs, names in os.walk(top):
        for name in names:
            yield Path(base) / name


def hash_file(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, 'rb') as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def blob_file_problems(root: Path) -> list[str]:
    """Every file under blobs/ is ``<alg>/<2hex>/<hex>`` and hashes to its name:
    nothing unverified (a spool, a partial copy, a temp file) is ever there."""
    problems = []
    for path in _files(root / 'blobs'):
        rel = path.relative_to(root / 'blobs').parts
        if (len(rel) != 3 or rel[0] not in ALGORITHMS
                or len(rel[2]) != ALGORITHMS[rel[0]] or not HEX.fullmatch(rel[2])
                or rel[1] != rel[2][:2]):
            problems.append(f'unexpected file in blobs/: {"/".join(rel)}')
            continue
        actual = hash_file(path, rel[0])
        if actual != rel[2]:
            problems.append(f'blobs/{"/".join(rel)} hashes to {rel[0]}:{actual}')
    return problems


def spools(root: Path) -> set[str]:
    try:
        return {p.name for p in (root / 'uploads').iterdir()}
    except FileNotFoundError:
        return set()


@contextlib.contextmanager
def ro_db(root: Path) -> Iterator[sqlite3.Connection]:
    """The metadata, read-only (works on a live server's WAL and on a killed one's)."""
    conn = sqlite3.connect(f'file:{root / "oci-ref.db"}?mode=ro', uri=True, timeout=30)
    try:
        yield conn
    finally:
        conn.close()


@dataclass
class DbState:
    repositories: set[str] = field(default_factory=set)
    blobs: dict[str, int] = field(default_factory=dict)
    links: set[tuple[str, str]] = field(default_factory=set)
    manifests: dict[tuple[str, str], tuple[str, bytes]] = field(default_factory=dict)
    refs: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    tags: dict[tuple[str, str], str] = field(default_factory=dict)
    uploads: dict[str, tuple[str, int]] = field(default_factory=dict)


def db_state(root: Path) -> DbState:
    s = DbState()
    with ro_db(root) as db:
        # One read transaction: a consistent snapshot even while the server writes.
        db.execute('BEGIN')
        s.repositories = {r for (r,) in db.execute('SELECT name FROM repositories')}
        s.blobs = dict(db.execute('SELECT digest, size FROM blobs'))
        s.links = set(db.execute('SELECT repo, digest FROM repo_blobs'))
        s.manifests = {(r, d): (mt, bytes(c)) for r, d, mt, c in db.execute(
            'SELECT repo, digest, media_type, content FROM manifests')}
        for r, d, child in db.execute('SELECT repo, digest, child FROM manifest_refs'):
            s.refs.setdefault((r, d), set()).add(child)
        s.tags = {(r, t): d for r, t, d in db.execute('SELECT repo, tag, digest FROM tags')}
        s.uploads = {i: (r, n) for i, r, n in db.execute(
            'SELECT id, repo, size FROM uploads')}
        db.execute('COMMIT')
    return s


def expected_refs(content: bytes) -> tuple[set[str], set[str]]:
    """(blobs, child manifests) a stored manifest must have in its repository."""
    doc = json.loads(content)
    if 'manifests' in doc:
        return set(), {m['digest'] for m in doc['manifests']}
    return {doc['config']['digest'], *(layer['digest'] for layer in doc['layers'])}, set()


def integrity_problems(root: Path, state: DbState | None = None) -> list[str]:
    """What must hold in the metadata at any moment, even right after a SIGKILL:
    every link has a blob row and every blob row a file of its size; every manifest
    hashes to its digest and everything it references is in its repository (and is
    recorded in manifest_refs, which GC trusts); every tag names a stored manifest;
    every open session has a spool holding at least the bytes it acknowledged."""
    s = state or db_state(root)
    files = blob_files(root)
    problems = []
    for repo, d in sorted(s.links):
        if d not in s.blobs:
            problems.append(f'{repo} links {d}, which has no blob row')
    for d, size in sorted(s.blobs.items()):
        path = files.get(d)
        if path is None:
            problems.append(f'blob row {d} has no file')
        elif path.stat().st_size != size:
            problems.append(f'blob {d}: file {path.stat().st_size} bytes, row {size}')
    for (repo, d), (_media_type, content) in sorted(s.manifests.items()):
        algorithm, _, encoded = d.partition(':')
        if hashlib.new(algorithm, content).hexdigest() != encoded:
            problems.append(f'manifest {repo}@{d} does not hash to its digest')
            continue
        blobs, kids = expected_refs(content)
        for b in sorted(blobs):
            if (repo, b) not in s.links:
                problems.append(f'manifest {repo}@{d} references blob {b}, not in {repo}')
            elif b not in files:
                problems.append(f'manifest {repo}@{d} references blob {b}, no file')
        for k in sorted(kids):
            if (repo, k) not in s.manifests and (repo, k) not in s.links:
                problems.append(f'index {repo}@{d} references {k}, not in {repo}')
        recorded = s.refs.get((repo, d), set())
        if recorded != blobs | kids:
            problems.append(f'manifest_refs of {repo}@{d}: {sorted(recorded)} != '
                            f'{sorted(blobs | kids)}')
    for (repo, d) in sorted(set(s.refs) - set(s.manifests)):
        problems.append(f'manifest_refs rows for {repo}@{d}, which is not stored')
    for (repo, tag), d in sorted(s.tags.items()):
        if (repo, d) not in s.manifests:
            problems.append(f'tag {repo}:{tag} -> {d}, which is not stored')
    for sid, (repo, size) in sorted(s.uploads.items()):
        spool = root / 'uploads' / sid
        if not spool.is_file():
            problems.append(f'session {sid} ({repo}) has no spool')
        elif spool.stat().st_size < size:
            problems.append(f'session {sid}: spool {spool.stat().st_size} bytes, '
                            f'{size} acknowledged')
    return problems


@dataclass
class Fsck:
    returncode: int
    problems: list[dict[str, Any]]
    output: str

    @property
    def serious(self) -> list[dict[str, Any]]:
        return [p for p in self.problems if p['serious']]

    def kinds(self, *, serious: bool | None = None) -> list[str]:
        return [p['kind'] for p in self.problems
                if serious is None or p['serious'] == serious]


def run_fsck(root: Path) -> Fsck:
    """``python -m oci_ref fsck --root ROOT --json``: exit status and problems."""
    r = subprocess.run([sys.executable, '-m', 'oci_ref', 'fsck', '--root', str(root),
                        '--json'], capture_output=True, timeout=300, check=False)
    out = r.stdout.decode(errors='replace') + r.stderr.decode(errors='replace')
    objects = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    # The summary comes last, clean or not; without it fsck did not finish.
    assert objects and objects[-1]['kind'] == 'summary', out
    return Fsck(r.returncode, objects[:-1], out)


def assert_fsck_clean(root: Path, *, allow: Iterable[str] = ()) -> Fsck:
    """fsck exits 0 with no serious problem, and no notice other than ``allow``."""
    result = run_fsck(root)
    unexpected = [p for p in result.problems if p['serious'] or p['kind'] not in allow]
    assert result.returncode == 0 and not unexpected, (result.returncode, result.output)
    return result


# -- raw HTTP, read early --------------------------------------------------------------


def send_early(port: int, head: bytes, body: Iterable[bytes] = (),
               timeout: float = 30) -> RawResponse:
    """Send ``head`` and then ``body`` (in a thread) while reading the response.

    The server may answer before it has read the body (a 413 on a declared size, a
    431 on the headers) and then close the connection; a client that insists on
    sending everything first would see a reset instead of the answer. Returns the
    status, headers and the body as framed by Content-Length (not to EOF).
    """
    sock = socket.create_connection(('127.0.0.1', port), timeout=timeout)

    def send() -> None:
        try:
            sock.sendall(head)
            for piece in body:
                sock.sendall(piece)
        except OSError:
            pass  # the server stopped reading: its answer is what matters

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        buf = bytearray()
        raw_head = read_until(sock, buf, b'\r\n\r\n')
        status, reason, headers = parse_head(raw_head)
        length = int(dict(headers).get('content-length', '0'))
        while len(buf) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
        return RawResponse(status, reason, headers, bytes(buf[:length]), raw_head)
    finally:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
        sender.join(timeout)


def head_bytes(method: str, path: str, port: int, headers: dict[str, str]) -> bytes:
    lines = [f'{method} {path} HTTP/1.1', f'Host: 127.0.0.1:{port}',
             *(f'{k}: {v}' for k, v in headers.items())]
    return ('\r\n'.join(lines) + '\r\n\r\n').encode('latin-1')


def envelope(r: RawResponse, statuses: Iterable[int], code: str | None = None
             ) -> dict[str, Any]:
    """A raw response is one of ``statuses`` with the spec's JSON error envelope
    (and ``code`` first, if given); returns the first error."""
    statuses = tuple(statuses)
    assert r.status in statuses, (r.status, statuses, r.body[:300])
    ctype = r.header('content-type') or ''
    assert ctype.startswith('application/json'), (r.status, ctype, r.body[:300])
    body = json.loads(r.body)
    errors = body['errors']
    assert errors and all(e['code'] in SPEC_CODES for e in errors), body
    if code is not None:
        assert errors[0]['code'] == code, (code, body)
    return errors[0]
