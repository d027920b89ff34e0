"""The figures, each a function of the running Bench (bench/runners.py): startup,
transfers and peak RSS, small objects, listings, request rates, concurrent pushes. Each
alternates the order of the servers every repetition (A B, B A, …)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.client import (
    Body,
    Client,
    HTTPFailure,
    config_blob,
    manifest_for,
    mount,
    push_bytes,
    push_chunked,
    push_file,
    put_manifest,
    seed_image,
    sha256_digest,
    unique,
)
from bench.load import measure_rate
from bench.metrics import Measured, Probe, vm_rss
from bench.plan import ACCEPT, BARE, DIST, MB, OCI, SCALE, MiB, log, size_text
from bench.servers import Server
from bench.stats import Figure, pct

if TYPE_CHECKING:
    from bench.runners import Bench


def concurrent_push(
    port: int,
    body: Body,
    digest: str,
    barrier: threading.Barrier,
    ends: list[float],
    errors: list[BaseException],
) -> None:
    """One of figure 8's pushers: connect, wait for the others, push."""
    c = Client(port)
    try:
        c.request('GET', '/v2/').expect(200, what='ping')
        barrier.wait()
        push_file(c, 'bench/concurrent', body, digest)
        ends.append(time.perf_counter())
    except BaseException as ex:
        errors.append(ex)
        barrier.abort()
    finally:
        c.close()


# figure 1 -----------------------------------------------------------------------
def startup(b: Bench) -> None:
    f = b.fig(
        '1_startup',
        'startup: spawn → first 200 on GET /v2/',
        's',
        'lower',
        ('abs', '<=', 0.15),  # issue 17
    )
    rss = b.fig(
        '1_startup_rss',
        'RSS of the server at its first 200 on GET /v2/',
        'MiB',
        'lower',
        ('abs', '<=', 40),  # issue 17
    )
    # What every test that starts its own registry waits for: oci_ref.testing's
    # OCIRegistry (`python -m oci_ref serve`, ready on /healthz, started as the
    # tests start it), with the bench's interpreter and the oci_ref it imports
    # (so not measured with --oci-ref-rev).
    fixture = b.fig(
        '1_startup_fixture',
        'pytest fixture: OCIRegistry spawn → ready',
        's',
        'lower',
        ('abs', '<=', 0.15),  # issue 17
    )
    extra = {
        w: b.fig(
            f'1_startup_w{w}',
            f'startup, oci-ref --workers {w}',
            's',
            'lower',
            oci_label=f'{OCI} w{w}',
        )
        for w in b.plan.extra_workers
    }
    variants = [(k, 1) for k in b.kinds] + [(OCI, w) for w in extra]
    with_fixture = not b.args.oci_ref_rev
    if with_fixture:
        variants.append((FIXTURE, 1))
    for kind, workers in variants:  # untimed: warm caches (page, bytecode)
        if kind == FIXTURE:
            _fixture_start(b)
            continue
        s = b.new_server(kind, workers)
        try:
            s.start()
        finally:
            s.stop()
            s.delete_data()
    for rep in range(b.plan.startup_reps):
        for kind, workers in b.order(variants, rep):
            if kind == FIXTURE:
                took = _fixture_start(b)
                fixture.add(OCI, took)
                log(f'startup fixture: {took * 1000:.0f} ms')
                continue
            s = b.new_server(kind, workers)
            try:
                took = s.start()
                if workers == 1:  # every process of the tree, at the first 200
                    rss.add(kind, sum(vm_rss(p) for p in s.pids()) / MiB)
            finally:
                s.stop()
                s.delete_data()
            (extra[workers] if kind == OCI and workers > 1 else f).add(
                s.label if workers > 1 else kind, took
            )
            log(f'startup {s.label}: {took * 1000:.0f} ms')
    for fx in extra.values():  # distribution has one process model
        fx.samples[DIST] = list(f.samples.get(DIST, []))


FIXTURE = 'fixture'


def _fixture_start(b: Bench) -> float:
    """One start of the tests' OCIRegistry on fresh storage: seconds to ready."""
    from oci_ref.testing import OCIRegistry

    with tempfile.TemporaryDirectory(dir=b.workdir) as tmp:
        registry = OCIRegistry(Path(tmp) / 'data')  # as the tests start it
        registry.stop()
        return registry.startup_seconds


# figures 2-4 --------------------------------------------------------------------
def transfers(b: Bench) -> None:
    p = b.plan
    assert b.source is not None
    big = size_text(p.big)
    part = size_text(p.big // p.chunks)
    # The scale-out replicas (issue 14), when measured: one more column of each.
    kinds = b.kinds + ([SCALE] if b.scaleout else [])
    cols = (SCALE,) if b.scaleout else ()
    mono = b.fig(
        '2a_push_mono',
        f'{big} monolithic push (POST + PUT)',
        'MB/s',
        'higher',
        ('ratio', '>=', 1.0),
        columns=cols,
    )
    chunk = b.fig(
        '2b_push_chunked',
        f'{p.chunks} x {part} chunked push (POST, PATCH…, PUT)',
        'MB/s',
        'higher',
        ('ratio', '>=', 1.0),
        columns=cols,
    )
    pull = b.fig(
        '3_pull', f'{big} pull to /dev/null', 'MB/s', 'higher', ('ratio', '>=', 1.0),
        columns=cols,
    )
    rss = b.fig(
        '4_rss',
        f'peak RSS of the server during 2 and 3 ({big}'
        + ('; replicas: the largest one)' if cols else ')'),
        'MiB',
        'lower',
        ('abs', '<', 150),
        columns=cols,
    )
    for rep in range(p.transfer_reps):
        for kind in b.order(kinds, rep):
            s = b.server(kind)
            c = Client(s.port)
            peaks = []
            try:
                body, digest = b.source.body(0, p.big, unique(f'mono-{kind}'))
                os.sync()  # nobody's dirty pages are flushed on our clock
                with Probe(s) as pr:
                    t = time.perf_counter()
                    push_file(c, 'bench/big', body, digest)
                    took = time.perf_counter() - t
                mono.add(kind, body.size / MB / took)
                peaks.append(pr.peak)
                b.note('push_mono', {'server': kind, 'rep': rep, 's': took, **pr.record()})

                last = unique(f'chunked-{kind}')
                chunks, cdigest = b.source.chunked(p.chunks, last)
                os.sync()
                with Probe(s) as pr:
                    t = time.perf_counter()
                    push_chunked(c, 'bench/big', chunks, last, cdigest)
                    ctook = time.perf_counter() - t
                chunk.add(kind, (p.big + len(last)) / MB / ctook)
                peaks.append(pr.peak)
                b.note(
                    'push_chunked',
                    {'server': kind, 'rep': rep, 's': ctook, **pr.record()},
                )

                # The monolithic blob, just pushed: it is in the page cache.
                os.sync()
                with Probe(s) as pr:
                    t = time.perf_counter()
                    resp, n = c.pull(f'/v2/bench/big/blobs/{digest}', b.devnull)
                    ptook = time.perf_counter() - t
                resp.expect(200, what='GET blob')
                if n != body.size:
                    raise HTTPFailure(f'pull: {n} bytes, expected {body.size}')
                pull.add(kind, n / MB / ptook)
                peaks.append(pr.peak)
                b.note('pull', {'server': kind, 'rep': rep, 's': ptook, **pr.record()})
            finally:
                c.close()
            rss.add(kind, max(peaks) / MiB)
            log(
                f'transfers {kind} rep {rep + 1}: push {mono.samples[kind][-1]:.0f}, '
                f'chunked {chunk.samples[kind][-1]:.0f}, pull '
                f'{pull.samples[kind][-1]:.0f} MB/s; RSS peak {max(peaks) / MiB:.0f} '
                f'MiB'
            )


# figure 5 -----------------------------------------------------------------------
def small_objects(b: Bench) -> None:
    p = b.plan
    n = p.small_count
    blob50 = b.fig(
        '5a_small_blob_p50',
        f'{n} x 4 KiB blob push (POST + PUT): p50',
        'ms',
        'lower',
        ('ratio', '<=', 1.0),
    )
    blob99 = b.fig('5a_small_blob_p99', f'{n} x 4 KiB blob push: p99', 'ms', 'lower')
    man50 = b.fig(
        '5b_manifest_p50',
        f'{n} x manifest push (PUT): p50',
        'ms',
        'lower',
        ('ratio', '<=', 1.0),
    )
    man99 = b.fig('5b_manifest_p99', f'{n} x manifest push: p99', 'ms', 'lower')
    configs: dict[str, tuple[str, int]] = {}
    for rep in range(p.small_reps):
        for kind in b.order(b.kinds, rep):
            s = b.servers[kind]
            c = Client(s.port)
            repo = 'bench/small'
            try:
                if kind not in configs:
                    cfg = config_blob([])
                    configs[kind] = (push_bytes(c, repo, cfg), len(cfg))
                blobs = [os.urandom(p.small_size) for _ in range(n)]
                digests = [sha256_digest(blob) for blob in blobs]
                manifests = [
                    manifest_for(configs[kind], [(d, p.small_size)]) for d in digests
                ]
                os.sync()
                bt, mt = [], []
                with Probe(s) as pr:
                    for blob, d in zip(blobs, digests, strict=True):
                        t = time.perf_counter()
                        push_bytes(c, repo, blob, d)
                        bt.append(time.perf_counter() - t)
                    for i, m in enumerate(manifests):
                        t = time.perf_counter()
                        put_manifest(c, repo, f'r{rep}-{i}', m)
                        mt.append(time.perf_counter() - t)
            finally:
                c.close()
            blob50.add(kind, pct(bt, 50) * 1000)
            blob99.add(kind, pct(bt, 99) * 1000)
            man50.add(kind, pct(mt, 50) * 1000)
            man99.add(kind, pct(mt, 99) * 1000)
            b.note(
                'small_objects',
                {'server': kind, 'rep': rep, 's': sum(bt) + sum(mt), **pr.record()},
            )
            log(
                f'small objects {kind} rep {rep + 1}: blob p50 '
                f'{pct(bt, 50) * 1000:.2f} p99 {pct(bt, 99) * 1000:.2f} ms; manifest '
                f'p50 {pct(mt, 50) * 1000:.2f} p99 {pct(mt, 99) * 1000:.2f} ms'
            )


# figure 7 -----------------------------------------------------------------------
def populate_listings(b: Bench, s: Server) -> None:
    """bench/tags with N tags, and N - 1 more repositories: N in all. Untimed,
    on 4 connections."""
    p = b.plan
    local = threading.local()

    def client() -> Client:
        if not hasattr(local, 'c'):
            local.c = Client(s.port)
        return local.c

    img = seed_image(client(), 'bench/tags', 't0000')

    def tag(i: int) -> None:
        put_manifest(client(), 'bench/tags', f't{i:04d}', img.manifest)

    def repo(i: int) -> None:
        name = f'bench/repo-{i:04d}'
        mount(client(), name, img.config[0], 'bench/tags')
        mount(client(), name, img.layer[0], 'bench/tags')
        put_manifest(client(), name, 'latest', img.manifest)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(tag, range(1, p.tag_count)))
        list(pool.map(repo, range(p.repo_count - 1)))


def listings(b: Bench) -> None:
    p = b.plan
    tags = b.fig('7a_tags_p50', f'tags list of {p.tag_count:,} tags: p50', 'ms', 'lower')
    cat = b.fig(
        '7b_catalog_p50',
        f'catalog of {p.repo_count:,} repositories (?n={p.repo_count}): p50',
        'ms',
        'lower',
    )
    for kind in b.kinds:
        t = time.perf_counter()
        populate_listings(b, b.servers[kind])
        log(f'listings {kind}: populated in {time.perf_counter() - t:.1f} s')
    for rep in range(p.list_reps):
        for kind in b.order(b.kinds, rep):
            c = Client(b.servers[kind].port)
            try:
                for fg, url, key, want in (
                    (tags, '/v2/bench/tags/tags/list', 'tags', p.tag_count),
                    (
                        cat,
                        f'/v2/_catalog?n={p.repo_count}',
                        'repositories',
                        p.repo_count,
                    ),
                ):
                    r = c.request('GET', url).expect(200, what=url)
                    got = len(json.loads(r.body)[key])
                    if got != want:
                        raise HTTPFailure(f'{kind} {url}: {got} entries, not {want}')
                    for _ in range(2):  # warm-up
                        c.request('GET', url)
                    times = []
                    for _ in range(p.list_requests):
                        t = time.perf_counter()
                        c.request('GET', url).expect(200, what=url)
                        times.append(time.perf_counter() - t)
                    fg.add(kind, pct(times, 50) * 1000)
            finally:
                c.close()
            log(
                f'listings {kind} rep {rep + 1}: tags p50 {tags.samples[kind][-1]:.2f} '
                f'ms, catalog p50 {cat.samples[kind][-1]:.2f} ms'
            )


# figure 6 -----------------------------------------------------------------------
def request_rates(b: Bench) -> None:
    p = b.plan
    labels = [k for k in b.servers if k != DIST]
    variants = labels + ([DIST] if DIST in b.servers else [])
    # The scale-out replicas (issue 14): manifest GET, a column of the one-worker
    # figures (each replica runs one worker).
    scaled = [SCALE] if b.scaleout else []
    figs: dict[tuple[str, str], tuple[Figure, Figure]] = {}
    for method in ('HEAD', 'GET'):
        tool = b.loadgens[method]
        for label in labels:
            w = b.servers[label].workers
            cols = tuple(scaled) if method == 'GET' and w == 1 else ()
            figs[(method, label)] = (
                b.fig(
                    f'6_{method.lower()}_rps_w{w}',
                    f'manifest {method} req/s, '
                    f'{p.connections} connections, {tool} (oci-ref workers={w})',
                    'req/s',
                    'higher',
                    ('ratio', '>=', 1.0),
                    oci_label=label,
                    columns=cols,
                ),
                b.fig(
                    f'6_{method.lower()}_p99_w{w}',
                    f'manifest {method} p99, {tool} (oci-ref workers={w})',
                    'ms',
                    'lower',
                    oci_label=label,
                    columns=cols,
                ),
            )
    path = '/v2/bench/wrk/manifests/latest'
    # The framework's ceiling, measured interleaved with the registries: a bare Falcon
    # app on the same uvicorn, one worker, answering the same path with 1 KiB.
    bare = b.new_server(BARE)
    bare.start()
    servers: dict[str, Any] = {**b.servers, BARE: bare}
    if b.scaleout:
        servers[SCALE] = b.scaleout
    try:
        for label in [*variants, *scaled, BARE]:  # seed, then warm up
            c = Client(servers[label].port)
            try:
                if label != BARE:
                    seed_image(c, 'bench/wrk', 'latest')
                for _ in range(200):
                    c.request('GET', path, headers={'Accept': ACCEPT}).expect(
                        200, what='manifest GET'
                    )
            finally:
                c.close()
        for rep in range(p.rate_reps):
            for method in ('HEAD', 'GET'):
                extra = scaled if method == 'GET' else []
                for label in b.order([*variants, *extra, BARE], rep):
                    r = rate_once(b, servers[label], label, method, path, rep)
                    if label == BARE:
                        b.bare_rates.setdefault(method, []).append(r['rps'])
                        continue
                    if label == DIST:
                        targets = [v for (m, _), v in figs.items() if m == method]
                    elif label == SCALE:
                        targets = [figs[(method, f'{OCI} w1')]]
                    else:
                        targets = [figs[(method, label)]]
                    for rps_f, p99_f in targets:
                        rps_f.add(label, r['rps'])
                        p99_f.add(label, r['p99_ms'])
    finally:
        bare.stop()
        bare.delete_data()


def rate_once(
    b: Bench, s: Measured, label: str, method: str, path: str, rep: int
) -> dict[str, Any]:
    """One load run against one server, noted in the raw results and logged."""
    p = b.plan
    tool = b.loadgens[method]
    with Probe(s) as pr:
        r = measure_rate(
            tool,
            b.workdir,
            s.port,
            path,
            method,
            p.rate_seconds,
            p.connections,
            p.wrk_threads,
        )
    b.note(
        'request_rates',
        {'server': label, 'method': method, 'tool': tool, 'rep': rep, **r, **pr.record()},
    )
    if r['errors']:
        log(f'WARNING: {label} {method}: {r["errors"]} errors')
    log(
        f'{method} {label} rep {rep + 1} ({tool}): {r["rps"]:.0f} req/s, '
        f'p50 {r["p50_ms"]:.2f} ms, p99 {r["p99_ms"]:.2f} ms, server CPU '
        f'{pr.cpu_s:.1f} s, machine {pr.host_busy:.0%} busy'
    )
    return r


# figure 8 -----------------------------------------------------------------------
def concurrent(b: Bench) -> None:
    p = b.plan
    assert b.source is not None
    variants = list(b.servers)
    figs = {}
    for label in variants:
        if label != DIST:
            w = b.servers[label].workers
            figs[label] = b.fig(
                f'8_concurrent_w{w}',
                f'{p.concurrent_n} concurrent '
                f'{size_text(p.concurrent_size)} pushes, aggregate (oci-ref '
                f'workers={w})',
                'MB/s',
                'higher',
                ('ratio', '>=', 1.0),
                oci_label=label,
            )
    for rep in range(p.concurrent_reps):
        for label in b.order(variants, rep):
            s = b.servers[label]
            jobs = [
                b.source.body(
                    i * p.concurrent_size,
                    p.concurrent_size,
                    unique(f'conc-{label}-{i}'),
                )
                for i in range(p.concurrent_n)
            ]
            barrier = threading.Barrier(p.concurrent_n + 1)
            ends: list[float] = []
            errors: list[BaseException] = []
            threads = [
                threading.Thread(
                    target=concurrent_push, args=(s.port, body, d, barrier, ends, errors)
                )
                for body, d in jobs
            ]
            os.sync()
            for th in threads:
                th.start()
            with Probe(s) as pr:
                with contextlib.suppress(threading.BrokenBarrierError):
                    barrier.wait()
                t0 = time.perf_counter()
                for th in threads:
                    th.join()
            if errors:
                raise errors[0]
            took = max(ends) - t0
            mbps = sum(body.size for body, _ in jobs) / MB / took
            for fg in [figs[label]] if label != DIST else list(figs.values()):
                fg.add(label, mbps)
            b.note('concurrent', {'server': label, 'rep': rep, 's': took, **pr.record()})
            log(
                f'concurrent {label} rep {rep + 1}: {mbps:.0f} MB/s aggregate, RSS '
                f'peak {pr.peak / MiB:.0f} MiB'
            )
