"""Crash safety, proven: SIGKILL at random moments under concurrent pushes.

Each iteration starts `oci-ref serve` on the SAME storage root (damage would
accumulate), lets a few client threads push blobs (POST ?digest=, POST+PUT, chunked
PATCHes, a streamed PATCH, mounts), manifests (by tag, by digest, indexes), move tags
and delete manifests and unreferenced blobs, then kills the whole process tree with
SIGKILL after a random 0.05-1.5 s (every third iteration with ``--workers 2``).

Every operation is recorded with its send and answer times (one monotonic clock), so
after the kill the test knows, for each blob, manifest and tag, which final states
are possible: an acknowledged push or delete happened; one in flight at the kill may
or may not have; of two operations on one key, the one sent after the other's answer
came last. Then, on the dead root and after a restart:

- every acknowledged blob/manifest not removed by a later delete is readable with its
  exact bytes (hash and length) and digest headers; acknowledged deletes stay deleted;
  every tag names one of the manifests it could name;
- every file under blobs/ hashes to its name (nothing unverified is visible), every
  blob row has its file, no manifest references a missing blob (read-only SQLite);
- every acknowledged PATCH is still covered by its session's Range (if the session
  survived), and the session can be finished after the restart;
- ``oci-ref fsck`` exits 0 with no serious problem and no reference-missing notice.

``OCI_REF_SOAK_ITERATIONS`` (default 3) and ``OCI_REF_SOAK_SEED`` (default fixed)
choose the run; ``make soak`` sets both. The seed fixes each thread's choices, not
the timing, so a failing run is reproduced statistically, not exactly.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import random
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e._helpers import Started
from tests.e2e.faults import (
    DbState,
    blob_file_problems,
    db_state,
    descendants,
    integrity_problems,
    kill_server,
    log_problems,
    run_fsck,
    spools,
    worker_pids,
)
from tests.support import OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_MANIFEST

pytestmark = pytest.mark.e2e

ITERATIONS = int(os.environ.get('OCI_REF_SOAK_ITERATIONS', '3'))
SEED = int(os.environ.get('OCI_REF_SOAK_SEED', '424242'))
THREADS = 6
REPOS = ('crash/one', 'crash/two/deep')
PINNED_TAGS = ('latest', 'p1', 'p2', 'p3')  # point at manifests that are never deleted
EPHEMERAL_TAGS = ('e1', 'e2')  # point at manifests that may be deleted
OCTET = {'Content-Type': 'application/octet-stream'}
# Notices fsck may report after crashes: a blob committed but killed before its row
# was written is an orphan file (gc removes it). reference-missing is NOT allowed:
# the workload never deletes anything a manifest references.
ALLOWED_NOTICES = {'file-orphan'}


def sha256(data: bytes) -> str:
    return 'sha256:' + hashlib.sha256(data).hexdigest()


def blob_bytes(kind: str, seed: str, size: int) -> bytes:
    """Deterministic content: a blob can be pushed again, by any thread, later."""
    prefix = f'{kind}:{seed}:'.encode()
    return (prefix + random.Random(seed).randbytes(size))[:max(size, len(prefix))]


# -- the record of what clients were told ----------------------------------------------


@dataclass(eq=False)
class Op:
    """One state-changing request. ``end`` is when the answer arrived; None until
    then, and for ever if the server died first (outcome unknown)."""

    kind: str  # 'put' | 'del'
    key: tuple[str, str, str]  # ('blob' | 'manifest', repo, digest)
    iteration: int
    start: float
    end: float | None = None
    status: int | None = None
    tag: str | None = None
    size: int = 0
    media_type: str | None = None

    @property
    def acked(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def no_op(self) -> bool:
        """A definite refusal (4xx): nothing happened."""
        return self.status is not None and 400 <= self.status < 500


@dataclass(eq=False)
class Session:
    """A chunked upload: what was sent, what the server acknowledged."""

    repo: str
    location: str
    kind: str
    seed: str
    size: int
    acked: int = 0
    inflight: int = 0  # bytes of a PATCH sent but not answered
    finishing: bool = False  # the final PUT was sent

    @property
    def data(self) -> bytes:
        return blob_bytes(self.kind, self.seed, self.size)


@dataclass
class Ledger:
    lock: threading.Lock = field(default_factory=threading.Lock)
    ops: list[Op] = field(default_factory=list)
    kill_done: dict[int, float] = field(default_factory=dict)
    anomalies: list[str] = field(default_factory=list)
    # Pools the workload draws from (acknowledged content only):
    layers: dict[str, dict[str, tuple[str, int]]] = field(
        default_factory=lambda: defaultdict(dict))  # repo -> digest -> (seed, size)
    loose: dict[str, dict[str, int]] = field(
        default_factory=lambda: defaultdict(dict))  # deletable blobs, never referenced
    pinned: dict[str, dict[str, tuple[str, bytes]]] = field(
        default_factory=lambda: defaultdict(dict))  # never deleted: (media type, bytes)
    ephemeral: dict[str, dict[str, int]] = field(
        default_factory=lambda: defaultdict(dict))  # may be deleted
    sessions: list[Session] = field(default_factory=list)
    killing: threading.Event = field(default_factory=threading.Event)
    cut_off: int = 0  # client threads whose request died with the server

    def begin(self, kind: str, key: tuple[str, str, str], iteration: int,
              **kw: Any) -> Op:
        op = Op(kind, key, iteration, time.monotonic(), **kw)
        with self.lock:
            self.ops.append(op)
        return op

    def answer(self, op: Op, r: httpx.Response, *expected: int) -> bool:
        op.end = time.monotonic()
        op.status = r.status_code
        if r.status_code not in expected:
            self.anomaly(f'{op.kind} {op.key} tag={op.tag}: {r.status_code} '
                         f'(expected {expected}) {r.content[:300]!r}')
            return False
        return True

    def anomaly(self, text: str) -> None:
        with self.lock:
            self.anomalies.append(text)

    def end_of(self, op: Op) -> float:
        """When ``op`` took effect at the latest: its answer, or the server's death."""
        return op.end if op.end is not None else self.kill_done.get(op.iteration, math.inf)


# -- the workload ----------------------------------------------------------------------


class Client:
    """One client thread's view: its own connection pool and random choices."""

    def __init__(self, url: str, ledger: Ledger, rng: random.Random, iteration: int,
                 name: str):
        self.c = httpx.Client(base_url=url, timeout=30)
        self.ledger = ledger
        self.rng = rng
        self.iteration = iteration
        self.name = name
        self.count = 0

    def nonce(self) -> str:
        self.count += 1
        return f'{SEED}-{self.iteration}-{self.name}-{self.count}-{self.rng.random():.12f}'

    def run(self, stop: threading.Event) -> None:
        ops = [
            (self.new_blob, 30),
            (self.repush_layer, 5),
            (self.mount, 4),
            (self.image, 16),
            (self.ephemeral_image, 6),
            (self.index, 5),
            (self.move_tag, 8),
            (self.delete_manifest, 5),
            (self.delete_blob, 5),
        ]
        funcs, weights = zip(*ops, strict=True)
        try:
            while not stop.is_set():
                self.rng.choices(funcs, weights)[0]()
        except httpx.TransportError as ex:
            with self.ledger.lock:
                self.ledger.cut_off += 1
            if not self.ledger.killing.is_set():
                self.ledger.anomaly(f'{self.name}: connection failed before the kill: '
                                    f'{ex!r}')
        except Exception as ex:  # a bug in the test or an unexpected answer shape
            self.ledger.anomaly(f'{self.name}: {ex!r}')
        finally:
            self.c.close()

    # -- blobs

    def blob_size(self) -> int:
        r = self.rng.random()
        if r < 0.6:
            return self.rng.randrange(64, 8192)
        if r < 0.95:
            return self.rng.randrange(8192, 256 * 1024)
        return self.rng.randrange(256 * 1024, 2 * 1024 * 1024)

    def new_blob(self) -> None:
        repo = self.rng.choice(REPOS)
        kind = 'loose' if self.rng.random() < 0.25 else 'layer'
        self.push_blob(repo, kind, self.nonce(), self.blob_size())

    def repush_layer(self) -> None:
        """The same content again, by any method: the dedup path of commit."""
        repo = self.rng.choice(REPOS)
        with self.ledger.lock:
            pool = list(self.ledger.layers[repo].items())
        if not pool:
            return self.new_blob()
        _, (seed, size) = self.rng.choice(pool)
        self.push_blob(repo, 'layer', seed, size)
        return None

    def push_blob(self, repo: str, kind: str, seed: str, size: int) -> None:
        data = blob_bytes(kind, seed, size)
        d = sha256(data)
        key = ('blob', repo, d)
        method = self.rng.choice(('mono', 'postput', 'chunked', 'chunked', 'streamed'))
        r: httpx.Response | None
        if method == 'mono':
            op = self.ledger.begin('put', key, self.iteration, size=len(data))
            r = self.c.post(f'/v2/{repo}/blobs/uploads/?digest={d}', content=data,
                            headers=OCTET)
            ok = self.ledger.answer(op, r, 201)
        else:
            r = self.c.post(f'/v2/{repo}/blobs/uploads/')
            if r.status_code != 202:
                self.ledger.anomaly(f'POST uploads {repo}: {r.status_code} {r.content!r}')
                return
            location = r.headers['location']
            if method == 'postput':
                op = self.ledger.begin('put', key, self.iteration, size=len(data))
                r = self.c.put(f'{location}?digest={d}', content=data, headers=OCTET)
                ok = self.ledger.answer(op, r, 201)
            else:
                s = Session(repo, location, kind, seed, len(data))
                r = self.chunked(s, d, streamed=method == 'streamed')
                if r is None:
                    return  # failed (recorded), or left open on purpose
                ok = r.status_code == 201
        if not ok:
            return
        if r.headers.get('docker-content-digest') != d:
            self.ledger.anomaly(f'{repo}@{d}: Docker-Content-Digest '
                                f'{r.headers.get("docker-content-digest")}')
        with self.ledger.lock:
            if kind == 'layer':
                self.ledger.layers[repo][d] = (seed, size)
            else:
                self.ledger.loose[repo][d] = size

    def pieces(self, data: bytes) -> list[bytes]:
        """1-4 pieces of at least 2 bytes each (Range "0-0" then means 0 bytes)."""
        size = len(data)
        cuts: list[int] = []
        for c in sorted(self.rng.sample(range(2, size - 1), self.rng.randrange(0, 4))):
            if c - (cuts[-1] if cuts else 0) >= 2 and size - c >= 2:
                cuts.append(c)
        bounds = [0, *cuts, size]
        return [data[a:b] for a, b in itertools.pairwise(bounds)]

    def chunked(self, s: Session, d: str, *, streamed: bool) -> httpx.Response | None:
        """PATCHes (with Content-Range, or streamed without), then PUT ?digest=.
        Returns the PUT's answer; None if a PATCH failed or the session is left open
        on purpose (it is checked and finished after the next restart)."""
        with self.ledger.lock:
            self.ledger.sessions.append(s)
        data = s.data
        pieces = self.pieces(data)
        last = b''
        if not streamed and len(pieces) > 1 and self.rng.random() < 0.5:
            last = pieces.pop()  # the final chunk rides on the PUT
        for piece in pieces:
            start = s.acked
            s.inflight = len(piece)
            if streamed:
                half = len(piece) // 2
                r = self.c.patch(s.location, content=iter([piece[:half], piece[half:]]))
            else:
                r = self.c.patch(s.location, content=piece, headers={
                    **OCTET, 'Content-Range': f'{start}-{start + len(piece) - 1}'})
            if r.status_code != 202:
                self.ledger.anomaly(f'PATCH {s.location} @{start}: {r.status_code} '
                                    f'{r.content[:300]!r}')
                return None
            want = f'0-{start + len(piece) - 1}'
            if r.headers.get('range') != want:
                self.ledger.anomaly(f'PATCH {s.location}: Range '
                                    f'{r.headers.get("range")}, expected {want}')
            s.acked += len(piece)
            s.inflight = 0
            s.location = r.headers.get('location', s.location)
            if s.acked < s.size and self.rng.random() < 0.04:
                return None
        op = self.ledger.begin('put', ('blob', s.repo, d), self.iteration, size=s.size)
        s.finishing = True
        headers = dict(OCTET)
        if last:
            headers['Content-Range'] = f'{s.acked}-{s.acked + len(last) - 1}'
            s.inflight = len(last)
        r = self.c.put(f'{s.location}?digest={d}', content=last, headers=headers)
        if self.ledger.answer(op, r, 201):
            with self.ledger.lock:
                self.ledger.sessions.remove(s)
        return r

    def mount(self) -> None:
        target, source = self.rng.sample(REPOS, 2)
        with self.ledger.lock:
            pool = list(self.ledger.layers[source].items())
        if not pool:
            return None
        d, (seed, size) = self.rng.choice(pool)
        op = self.ledger.begin('put', ('blob', target, d), self.iteration, size=size)
        r = self.c.post(f'/v2/{target}/blobs/uploads/?mount={d}&from={source}')
        if self.ledger.answer(op, r, 201):
            with self.ledger.lock:
                self.ledger.layers[target][d] = (seed, size)
        elif r.status_code == 202:
            self.c.delete(r.headers['location'])
        return None

    def delete_blob(self) -> None:
        """Only blobs no manifest references (``loose`` ones are never referenced)."""
        repo = self.rng.choice(REPOS)
        with self.ledger.lock:
            pool = self.ledger.loose[repo]
            if not pool:
                return
            d = self.rng.choice(sorted(pool))
            del pool[d]  # one delete per acknowledged push: a 404 is then a loss
        op = self.ledger.begin('del', ('blob', repo, d), self.iteration)
        r = self.c.delete(f'/v2/{repo}/blobs/{d}')
        self.ledger.answer(op, r, 202)

    # -- manifests

    def image_bytes(self, repo: str, pinned: bool) -> bytes | None:
        with self.ledger.lock:
            pool = list(self.ledger.layers[repo].items())
        if len(pool) < 2:
            self.push_blob(repo, 'layer', self.nonce(), self.blob_size())
            return None
        config, *layers = self.rng.sample(pool, min(len(pool), self.rng.randrange(2, 5)))
        return json.dumps({
            'schemaVersion': 2,
            'mediaType': OCI_MANIFEST,
            'config': {'mediaType': OCI_CONFIG, 'digest': config[0],
                       'size': config[1][1]},
            'layers': [{'mediaType': OCI_LAYER, 'digest': d, 'size': size}
                       for d, (_, size) in layers],
            'annotations': {'crash.kind': 'pinned' if pinned else 'ephemeral',
                            'crash.nonce': self.nonce()},
        }).encode()

    def put_manifest(self, repo: str, body: bytes, media_type: str, tag: str | None,
                     ) -> bool:
        d = sha256(body)
        reference = tag or d
        op = self.ledger.begin('put', ('manifest', repo, d), self.iteration, tag=tag,
                               size=len(body), media_type=media_type)
        r = self.c.put(f'/v2/{repo}/manifests/{reference}', content=body,
                       headers={'Content-Type': media_type})
        ok = self.ledger.answer(op, r, 201)
        if ok and r.headers.get('docker-content-digest') != d:
            self.ledger.anomaly(f'PUT manifest {repo}/{reference}: Docker-Content-Digest '
                                f'{r.headers.get("docker-content-digest")}, expected {d}')
        return ok

    def image(self) -> None:
        repo = self.rng.choice(REPOS)
        body = self.image_bytes(repo, pinned=True)
        if body is None:
            return
        tag = self.rng.choice(PINNED_TAGS) if self.rng.random() < 0.6 else None
        if self.put_manifest(repo, body, OCI_MANIFEST, tag):
            with self.ledger.lock:
                self.ledger.pinned[repo][sha256(body)] = (OCI_MANIFEST, body)

    def ephemeral_image(self) -> None:
        repo = self.rng.choice(REPOS)
        body = self.image_bytes(repo, pinned=False)
        if body is None:
            return
        tag = self.rng.choice(EPHEMERAL_TAGS) if self.rng.random() < 0.5 else None
        if self.put_manifest(repo, body, OCI_MANIFEST, tag):
            with self.ledger.lock:
                self.ledger.ephemeral[repo][sha256(body)] = len(body)

    def index(self) -> None:
        repo = self.rng.choice(REPOS)
        with self.ledger.lock:
            pool = [(d, mt, b) for d, (mt, b) in self.ledger.pinned[repo].items()
                    if mt == OCI_MANIFEST]
        if not pool:
            return self.image()
        children = self.rng.sample(pool, min(len(pool), self.rng.randrange(1, 4)))
        body = json.dumps({
            'schemaVersion': 2,
            'mediaType': OCI_INDEX,
            'manifests': [{'mediaType': mt, 'digest': d, 'size': len(b),
                           'platform': {'architecture': f'arch{i}', 'os': 'linux'}}
                          for i, (d, mt, b) in enumerate(children)],
            'annotations': {'crash.nonce': self.nonce()},
        }).encode()
        tag = self.rng.choice(PINNED_TAGS) if self.rng.random() < 0.5 else None
        if self.put_manifest(repo, body, OCI_INDEX, tag):
            with self.ledger.lock:
                self.ledger.pinned[repo][sha256(body)] = (OCI_INDEX, body)
        return None

    def move_tag(self) -> None:
        """PUT the bytes of a stored manifest under a tag: the tag moves."""
        repo = self.rng.choice(REPOS)
        with self.ledger.lock:
            pool = list(self.ledger.pinned[repo].values())
        if not pool:
            return self.image()
        media_type, body = self.rng.choice(pool)
        self.put_manifest(repo, body, media_type, self.rng.choice(PINNED_TAGS))
        return None

    def delete_manifest(self) -> None:
        """Only ephemeral manifests (no index references them)."""
        repo = self.rng.choice(REPOS)
        with self.ledger.lock:
            pool = self.ledger.ephemeral[repo]
            if not pool:
                return
            d = self.rng.choice(sorted(pool))
            del pool[d]
        op = self.ledger.begin('del', ('manifest', repo, d), self.iteration)
        r = self.c.delete(f'/v2/{repo}/manifests/{d}')
        self.ledger.answer(op, r, 202)


# -- what may be true after the kill ---------------------------------------------------


def possible_presence(ledger: Ledger, ops: list[Op]) -> set[bool]:
    """The states a key may be in: the effect of any operation that may have been
    the last to take effect. An acknowledged operation took effect; one without an
    answer may have (before the server died); a refused one did not. Operation Y
    certainly came after X if Y was sent after X's answer arrived."""
    ops = [o for o in ops if not o.no_op]
    acked = [o for o in ops if o.acked]
    states: set[bool] = set() if acked else {False}
    for x in ops:
        if not any(y.start > ledger.end_of(x) for y in acked):
            states.add(x.kind == 'put')
    return states


def possible_tag(ledger: Ledger, tag_ops: list[Op], by_key: dict[Any, list[Op]]
                 ) -> set[str | None]:
    """A tag names the manifest of the last PUT that set it, unless that manifest was
    deleted after (a delete by digest drops its tags)."""
    ops = [o for o in tag_ops if not o.no_op]
    acked = [o for o in ops if o.acked]
    values: set[str | None] = set() if acked else {None}
    for x in ops:
        if any(y.start > ledger.end_of(x) for y in acked):
            continue
        deletes = [o for o in by_key.get(x.key, []) if o.kind == 'del' and not o.no_op]
        if any(dl.start > ledger.end_of(x) and dl.acked for dl in deletes):
            values.add(None)  # certainly deleted after this PUT
            continue
        values.add(x.key[2])
        if any(ledger.end_of(dl) > x.start for dl in deletes):
            values.add(None)
    return values


def verify(c: httpx.Client, ledger: Ledger) -> tuple[list[str], dict[str, int]]:
    """Compare the restarted server with what clients were told."""
    problems: list[str] = []
    stats = defaultdict(int)
    by_key: dict[Any, list[Op]] = defaultdict(list)
    by_tag: dict[tuple[str, str], list[Op]] = defaultdict(list)
    for op in ledger.ops:
        by_key[op.key].append(op)
        if op.tag is not None:
            by_tag[(op.key[1], op.tag)].append(op)
    for key, ops in sorted(by_key.items()):
        what, repo, d = key
        states = possible_presence(ledger, ops)
        url = f'/v2/{repo}/{"blobs" if what == "blob" else "manifests"}/{d}'
        r = c.get(url, headers={'Accept': f'{OCI_MANIFEST}, {OCI_INDEX}'})
        if r.status_code == 200:
            stats[f'{what}s present'] += 1
            body_digest = sha256(r.content)
            put = next((o for o in ops if o.kind == 'put'), None)
            if body_digest != d or r.headers.get('docker-content-digest') != d:
                problems.append(f'{url}: body {body_digest}, Docker-Content-Digest '
                                f'{r.headers.get("docker-content-digest")}')
            elif put is not None and len(r.content) != put.size:
                problems.append(f'{url}: {len(r.content)} bytes, pushed {put.size}')
            elif what == 'manifest' and put is not None and \
                    r.headers.get('content-type') != put.media_type:
                problems.append(f'{url}: Content-Type {r.headers.get("content-type")}, '
                                f'pushed {put.media_type}')
            if True not in states:
                problems.append(f'{url}: present, but {_history(ledger, ops)}')
        elif r.status_code == 404:
            stats[f'{what}s absent'] += 1
            if False not in states:
                problems.append(f'LOST {url}: 404 {r.content[:200]!r}, but '
                                f'{_history(ledger, ops)}')
        else:
            problems.append(f'{url}: {r.status_code} {r.content[:200]!r}')
    for (repo, tag), ops in sorted(by_tag.items()):
        values = possible_tag(ledger, ops, by_key)
        r = c.get(f'/v2/{repo}/manifests/{tag}',
                  headers={'Accept': f'{OCI_MANIFEST}, {OCI_INDEX}'})
        got = r.headers.get('docker-content-digest') if r.status_code == 200 else None
        if r.status_code not in (200, 404):
            problems.append(f'{repo}:{tag}: {r.status_code} {r.content[:200]!r}')
        elif r.status_code == 200 and sha256(r.content) != got:
            problems.append(f'{repo}:{tag}: body {sha256(r.content)}, header {got}')
        elif got not in values:
            problems.append(f'{repo}:{tag} -> {got}; possible: {sorted(map(str, values))}')
        stats['tags'] += 1
    return problems, dict(stats)


def _history(ledger: Ledger, ops: list[Op]) -> str:
    t0 = min(o.start for o in ops)
    return '; '.join(
        f'{o.kind} it{o.iteration} {o.start - t0:.3f}-'
        f'{"?" if o.end is None else f"{o.end - t0:.3f}"} -> {o.status}' for o in ops)


def check_sessions(c: httpx.Client, ledger: Ledger, iteration: int, rng: random.Random
                   ) -> tuple[list[str], dict[str, int]]:
    """Every acknowledged PATCH is still covered by the session's Range; then the
    session is finished from where the server says it stands (the restarted process
    has no streaming hasher: the commit re-hashes the spool)."""
    problems: list[str] = []
    stats: dict[str, int] = defaultdict(int)
    for s in list(ledger.sessions):
        r = c.get(s.location)
        if r.status_code == 404:
            # Gone: finished by a PUT in flight at the kill, or dropped (allowed: a
            # client restarts the upload). Counted for the report.
            stats['finished by an unanswered PUT' if s.finishing else 'gone'] += 1
            ledger.sessions.remove(s)
            continue
        if r.status_code != 204:
            problems.append(f'GET {s.location}: {r.status_code} {r.content[:200]!r}')
            continue
        end = int(r.headers['range'].split('-', 1)[1])
        have = 0 if end == 0 else end + 1
        if have not in (s.acked, s.acked + s.inflight):
            problems.append(f'session {s.location}: Range {r.headers["range"]} after the '
                            f'restart; acknowledged {s.acked}, in flight {s.inflight}')
            continue
        data = s.data
        d = sha256(data)
        rest, last = data[have:], b''
        if len(rest) < 2 or rng.random() < 0.5:
            rest, last = b'', rest
        if rest:
            r = c.patch(s.location, content=rest, headers={
                **OCTET, 'Content-Range': f'{have}-{have + len(rest) - 1}'})
        if not rest or r.status_code == 202:
            headers = dict(OCTET)
            if last:
                headers['Content-Range'] = f'{have}-{have + len(last) - 1}'
            op = ledger.begin('put', ('blob', s.repo, d), iteration, size=s.size)
            r = c.put(f'{s.location}?digest={d}', content=last, headers=headers)
            op.end, op.status = time.monotonic(), r.status_code
        if r.status_code == 404 and s.finishing:
            # The unanswered PUT committed the blob and was killed before it closed
            # the session: the row outlived its spool (the server drops it on use).
            stats['finished by an unanswered PUT, row left'] += 1
        elif r.status_code != 201:
            problems.append(f'resuming {s.location} at {have}: {r.status_code} '
                            f'{r.content[:200]!r}')
            continue
        else:
            stats['resumed and finished'] += 1
            if s.kind == 'layer':
                ledger.layers[s.repo][d] = (s.seed, s.size)
            else:
                ledger.loose[s.repo][d] = s.size
        ledger.sessions.remove(s)
    return problems, dict(stats)


def check_dead_root(root: Path) -> tuple[list[str], list[str], DbState]:
    """On the root exactly as the kill left it: (problems, notices, metadata).

    A session row without its spool is a notice: a PUT killed between moving the
    spool into blobs/ and closing the session leaves one; the server drops such a
    session when it is next used (check_sessions looks at each one)."""
    state = db_state(root)
    found = blob_file_problems(root) + integrity_problems(root, state)
    notices = [p for p in found if p.startswith('session ') and p.endswith('no spool')]
    return [p for p in found if p not in notices], notices, state


def run_iteration(root: Path, ledger: Ledger, iteration: int, rng: random.Random,
                  workers: int, summary: list[str]) -> None:
    where = f'[seed {SEED}, iteration {iteration}, --workers {workers}]'
    srv = Started(root, *(['--workers', str(workers)] if workers > 1 else []))
    try:
        if workers > 1:
            assert len(worker_pids(srv, workers)) == workers, where
        known = descendants(srv.proc.pid)  # killed first, without a scan
        with srv.client() as c:
            problems, stats = verify(c, ledger)
            assert not problems, (where, problems[:30])
            problems, session_stats = check_sessions(c, ledger, iteration, rng)
            assert not problems, (where, problems[:30])
        ledger.killing.clear()
        ledger.cut_off = 0
        stop = threading.Event()
        clients = [Client(srv.url, ledger, random.Random(f'{SEED}/{iteration}/{i}'),
                          iteration, f't{i}') for i in range(THREADS)]
        threads = [threading.Thread(target=cl.run, args=(stop,), daemon=True)
                   for cl in clients]
        for t in threads:
            t.start()
        delay = rng.uniform(0.05, 1.5)
        time.sleep(delay)
        ledger.killing.set()
        killed = kill_server(srv, known)
        ledger.kill_done[iteration] = time.monotonic()
        stop.set()  # after the kill: requests in flight die with the server
        for t in threads:
            t.join(60)
            assert not t.is_alive(), f'{where}: a client thread hangs'
        assert not log_problems(srv), (where, log_problems(srv))
    finally:
        if srv.proc.poll() is None:
            kill_server(srv)
    assert not ledger.anomalies, (where, ledger.anomalies[:30])
    mine = [o for o in ledger.ops if o.iteration == iteration]
    problems, notices, state = check_dead_root(root)
    assert not problems, (where, 'after the kill', problems[:30])
    fsck = run_fsck(root)
    bad = [p for p in fsck.problems if p['serious'] or p['kind'] not in ALLOWED_NOTICES]
    assert fsck.returncode == 0 and not bad, (where, fsck.returncode, fsck.output[-3000:])
    summary.append(
        f'it{iteration} workers={workers} kill@{delay:.2f}s (+{len(killed)} children): '
        f'{sum(o.acked for o in mine)} acked, '
        f'{sum(o.end is None for o in mine)} in flight, '
        f'{ledger.cut_off}/{THREADS} clients cut off, '
        f'{sum(o.no_op for o in mine)} refused; '
        f'{len(ledger.sessions)} open sessions, '
        f'{len(state.blobs)} blobs, {len(state.manifests)} manifests, '
        f'{len(state.tags)} tags, {len(spools(root))} spools '
        f'({len(notices)} sessions without one), '
        f'{fsck.kinds().count("file-orphan")} orphan files; before: {stats} '
        f'{session_stats}')


@pytest.fixture
def soak_root(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / 'data'


def test_sigkill_during_concurrent_pushes(soak_root: Path) -> None:
    print(f'\ncrash safety: OCI_REF_SOAK_SEED={SEED} '
          f'OCI_REF_SOAK_ITERATIONS={ITERATIONS}')
    rng = random.Random(SEED)
    ledger = Ledger()
    summary: list[str] = []
    t0 = time.monotonic()
    try:
        for i in range(ITERATIONS):
            run_iteration(soak_root, ledger, i, rng, 2 if i % 3 == 1 else 1, summary)
            print(summary[-1])
        # A last restart: everything acknowledged in the last round, then a clean stop.
        srv = Started(soak_root)
        try:
            with srv.client() as c:
                problems, stats = verify(c, ledger)
                assert not problems, (f'[seed {SEED}, final]', problems[:30])
                problems, _ = check_sessions(c, ledger, ITERATIONS, rng)
                assert not problems, (f'[seed {SEED}, final]', problems[:30])
                assert not ledger.anomalies, ledger.anomalies[:30]
        finally:
            assert srv.stop() == 0
        assert not log_problems(srv), log_problems(srv)
        problems, _notices, _state = check_dead_root(soak_root)
        assert not problems, problems[:30]
        fsck = run_fsck(soak_root)
        bad = [p for p in fsck.problems
               if p['serious'] or p['kind'] not in ALLOWED_NOTICES]
        assert fsck.returncode == 0 and not bad, fsck.output[-3000:]
        print(f'final: {stats}; {len(ledger.ops)} operations in '
              f'{time.monotonic() - t0:.1f}s; seed {SEED}')
    except BaseException:
        print('\n'.join(summary))  # pytest shows it with the failure
        raise
