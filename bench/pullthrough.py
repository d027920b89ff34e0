"""Figure 9, issue 13: oci-ref as a pull-through cache of another oci-ref on loopback
(the upstream, default settings), against that upstream pulled directly.

Per repetition a new blob of the big size is pushed to the upstream (untimed), then
pulled directly from the upstream and cold through the cache (the order alternates
each repetition), then once more through the cache, warm. The direct pull is the
baseline of those figures: a cold pull-through streams what the upstream sends while
it spools, hashes and commits it (target ≥ 0.8 x the direct pull); a warm pull is a
normal pull of a cached blob (target ≥ 0.9 x: the speed of a normal pull, within the
harness's noise); the time to first byte of a cold blob is the upstream's plus one
request to it (target: at most 5 ms more); and the cache's peak RSS during the cold
pull stays under 150 MiB whatever the blob's size (streaming, never held whole).
Then figure 6's manifest GET of a tag the cache holds, against the upstream's
(≥ 0.9 x, as a warm pull).
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from bench.client import Client, HTTPFailure, push_file, seed_image, unique
from bench.figures import rate_once
from bench.metrics import Probe
from bench.plan import ACCEPT, CACHE, MB, OCI, UPSTREAM, MiB, log, size_text
from bench.servers import Server

if TYPE_CHECKING:
    from bench.runners import Bench

# The upstream's name in the cache's config: its names are /v2/<NAME>/<repository>.
NAME = 'upstream.bench'
REPO = 'bench/cached'


def pull(c: Client, url: str, sink: int, size: int) -> tuple[float, float]:
    """GET ``url`` into ``sink``: (seconds to the last byte, seconds to the first)."""
    t = time.perf_counter()
    resp, n = c.pull(url, sink)
    took = time.perf_counter() - t
    resp.expect(200, what=f'GET {url}')
    if n != size or resp.first_byte is None:
        raise HTTPFailure(f'GET {url}: {n} bytes, expected {size}')
    return took, resp.first_byte - t


def warm_up(upstream: int, cache: int) -> None:
    """One small image pulled through the cache, untimed: what a cache loads on its
    first upstream request (the HTTP client, its connection) is not in figure 9."""
    upc, cachec = Client(upstream), Client(cache)
    try:
        img = seed_image(upc, 'bench/warm-up', 'latest')
        cachec.request('GET', f'/v2/{NAME}/bench/warm-up/manifests/latest',
                       headers={'Accept': ACCEPT}).expect(200, what='cache warm-up')
        for digest, _ in (img.config, img.layer):
            cachec.request('GET', f'/v2/{NAME}/bench/warm-up/blobs/{digest}').expect(
                200, what='cache warm-up')
    finally:
        upc.close()
        cachec.close()


def pull_through(b: Bench) -> None:
    p = b.plan
    assert b.source is not None
    big = size_text(p.big)
    cold = b.fig('9a_cache_cold_pull', f'{big} cold pull through the cache', 'MB/s',
                 'higher', ('ratio', '>=', 0.8), CACHE, UPSTREAM)
    warm = b.fig('9b_cache_warm_pull', f'{big} warm pull from the cache', 'MB/s',
                 'higher', ('ratio', '>=', 0.9), CACHE, UPSTREAM)
    ttfb = b.fig('9c_cache_cold_ttfb', 'time to first byte of a cold blob', 'ms',
                 'lower', ('diff', '<=', 5.0), CACHE, UPSTREAM)
    rss = b.fig('9d_cache_rss', f'peak RSS during the {big} cold pull', 'MiB', 'lower',
                ('abs', '<', 150), CACHE, UPSTREAM)
    up = Server(OCI, 1, b.workdir, b.oci_exe, b.env, name=UPSTREAM)
    cache = Server(OCI, 1, b.workdir, b.oci_exe, b.env, name=CACHE)
    try:
        up.start()
        cache.args = ('--upstream', f'{NAME}=http://127.0.0.1:{up.port}')
        cache.start()
        warm_up(up.port, cache.port)
        for rep in range(p.cache_reps):
            body, digest = b.source.body(0, p.big, unique(f'cache-{rep}'))
            path = f'{REPO}/blobs/{digest}'
            upc, cachec = Client(up.port), Client(cache.port)
            try:
                push_file(upc, REPO, body, digest)
                for which in b.order([UPSTREAM, CACHE], rep):
                    os.sync()  # nobody's dirty pages are flushed on our clock
                    if which == UPSTREAM:
                        client_cpu = time.thread_time()
                        with Probe(up) as pr:
                            took, first = pull(upc, f'/v2/{path}', b.devnull, body.size)
                        client_cpu = time.thread_time() - client_cpu
                        # The cold pull's ceiling counts this CPU (stats.py).
                        b.direct_pull_cpu.append(
                            (pr.cpu_s + client_cpu) * 1000 / (body.size / MB))
                    else:
                        with Probe(cache) as pr:
                            took, first = pull(cachec, f'/v2/{NAME}/{path}', b.devnull,
                                               body.size)
                    cold.add(which, body.size / MB / took)
                    ttfb.add(which, first * 1000)
                    rss.add(which, pr.peak / MiB)
                    b.note('cache_cold', {'server': which, 'rep': rep, 's': took,
                                          'ttfb_s': first, **pr.record()})
                # Warm: the blob the cold pull committed (its last bytes are sent only
                # once it is committed), against the same direct pull.
                os.sync()
                with Probe(cache) as pr:
                    wtook, _ = pull(cachec, f'/v2/{NAME}/{path}', b.devnull, body.size)
                warm.add(CACHE, body.size / MB / wtook)
                warm.add(UPSTREAM, cold.samples[UPSTREAM][-1])
                b.note('cache_warm', {'server': CACHE, 'rep': rep, 's': wtook,
                                      **pr.record()})
            finally:
                upc.close()
                cachec.close()
            log(
                f'pull-through rep {rep + 1}: direct {cold.samples[UPSTREAM][-1]:.0f}, '
                f'cold {cold.samples[CACHE][-1]:.0f}, warm {warm.samples[CACHE][-1]:.0f}'
                f' MB/s; first byte direct {ttfb.samples[UPSTREAM][-1]:.2f}, cold '
                f'{ttfb.samples[CACHE][-1]:.2f} ms; cache RSS peak '
                f'{rss.samples[CACHE][-1]:.0f} MiB'
            )
        manifest_rates(b, up, cache)
    finally:
        cache.stop()
        up.stop()


def manifest_rates(b: Bench, up: Server, cache: Server) -> None:
    """Figure 6's manifest GET through the cache, a tag it holds (younger than its
    tag_ttl: served without asking the upstream), against the upstream directly."""
    p = b.plan
    tool = b.loadgens['GET']
    rps = b.fig('9e_cache_get_rps', f'manifest GET req/s of a cached tag, '
                f'{p.connections} connections, {tool}', 'req/s', 'higher',
                ('ratio', '>=', 0.9), CACHE, UPSTREAM)
    p99 = b.fig('9e_cache_get_p99', f'manifest GET p99 of a cached tag, {tool}', 'ms',
                'lower', None, CACHE, UPSTREAM)
    paths = {UPSTREAM: '/v2/bench/wrk/manifests/latest',
             CACHE: f'/v2/{NAME}/bench/wrk/manifests/latest'}
    upc = Client(up.port)
    try:
        seed_image(upc, 'bench/wrk', 'latest')
    finally:
        upc.close()
    for s, label in ((up, UPSTREAM), (cache, CACHE)):  # the cache fetches it here
        c = Client(s.port)
        try:
            for _ in range(200):
                c.request('GET', paths[label], headers={'Accept': ACCEPT}).expect(
                    200, what='manifest GET')
        finally:
            c.close()
    for rep in range(p.cache_reps):
        for label in b.order([UPSTREAM, CACHE], rep):
            r = rate_once(b, up if label == UPSTREAM else cache, label, 'GET',
                          paths[label], rep)
            rps.add(label, r['rps'])
            p99.add(label, r['p99_ms'])
