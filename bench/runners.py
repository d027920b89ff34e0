"""The run: machine limits first, then every figure (bench/figures.py) on oci-ref and
distribution side by side, then the result as one JSON-ready dict."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench import figures, pullthrough
from bench.client import Source
from bench.environment import environment
from bench.limits import limit_disk_write, limit_fsync_ms, limit_loopback, limit_sha256
from bench.load import choose_loadgens
from bench.metrics import Measured
from bench.plan import BARE, DIST, GROUPS, OCI, GiB, Plan, log, size_text
from bench.servers import Server
from bench.stats import (
    Figure,
    Target,
    ceiling_rows,
    cold_pull_ceiling_limit,
    harness_noise,
    median,
    push_ceiling_limit,
    rotate,
)


class Bench:
    def __init__(self, plan: Plan, args: argparse.Namespace, workdir: Path):
        self.plan = plan
        self.args = args
        self.workdir = workdir
        self.figures: dict[str, Figure] = {}
        self.raw: dict[str, list[Any]] = {}
        self.oci_exe = args.oci_ref
        self.dist_exe = shutil.which(args.docker_registry) if args.docker_registry else None
        self.kinds = [OCI] + ([DIST] if self.dist_exe else [])
        self.servers: dict[str, Server] = {}
        self.groups = set(getattr(args, 'only', None) or GROUPS)
        self.scaleout: Any = None  # bench.scaleout.Replicas, when measured
        self.devnull = os.open(os.devnull, os.O_WRONLY)
        self.loadgens = {'GET': 'python', 'HEAD': 'python'}
        self.source: Source | None = None
        self.bare_rates: dict[str, list[float]] = {}  # method → req/s of falcon-bare
        # Figure 9: CPU ms per MB of each direct pull, the upstream's and the client's.
        self.direct_pull_cpu: list[float] = []
        # Servers get bytecode caches in the work directory (a pip-installed
        # oci-ref has them; PYTHONDONTWRITEBYTECODE in the caller's environment
        # would otherwise make every start compile oci_ref from source).
        env = {k: v for k, v in os.environ.items() if k != 'PYTHONDONTWRITEBYTECODE'}
        env['PYTHONPYCACHEPREFIX'] = str(workdir / 'pycache')
        self.env = env

    def fig(
        self,
        key: str,
        label: str,
        unit: str,
        better: str,
        target: Target | None = None,
        oci_label: str = OCI,
        baseline: str = DIST,
        columns: tuple[str, ...] = (),
    ) -> Figure:
        if key not in self.figures:
            self.figures[key] = Figure(key, label, unit, better, target, oci_label,
                                       baseline=baseline, columns=columns)
        return self.figures[key]

    def server(self, label: str) -> Measured:
        """A running server by label: a registry of ``servers``, or the replicas."""
        if self.scaleout is not None and label == self.scaleout.label:
            return self.scaleout
        return self.servers[label]

    def start_scaleout(self) -> None:
        """Issue 14's replicas, when their engines are installed (else a log line
        and no column, as without distribution)."""
        from bench import scaleout

        why = scaleout.missing()
        if why:
            log(f'scale-out column skipped: missing {why}')
            return
        r = scaleout.Replicas(self.workdir, self.oci_exe, self.env)
        r.start()
        self.scaleout = r
        log(f'{r.label}: {r.count} replicas behind haproxy on port {r.port}')

    def note(self, what: str, item: Any) -> None:
        self.raw.setdefault(what, []).append(item)

    def new_server(self, kind: str, workers: int = 1) -> Server:
        # The bare Falcon app runs on the venv's interpreter, as oci-ref does.
        exe = {OCI: self.oci_exe, DIST: self.dist_exe, BARE: self.args.python}[kind]
        assert exe is not None
        return Server(kind, workers, self.workdir, exe, self.env)

    @staticmethod
    def order(items: list[Any], rep: int) -> list[Any]:
        return rotate(items, rep)

    def limits(self) -> dict[str, Any]:
        p = self.plan
        out: dict[str, list[float]] = {
            'sha256_MBps': [],
            'disk_write_fsync_MBps': [],
            'disk_write_cpu_ms_per_MB': [],
            'fsync_4k_ms': [],
            'loopback_tcp_MBps': [],
        }
        for _ in range(p.limit_reps):
            out['sha256_MBps'].append(limit_sha256(p.limit_bytes))
            speed, cpu = limit_disk_write(self.workdir, p.limit_bytes)
            out['disk_write_fsync_MBps'].append(speed)
            out['disk_write_cpu_ms_per_MB'].append(cpu)
            out['fsync_4k_ms'].append(limit_fsync_ms(self.workdir))
            out['loopback_tcp_MBps'].append(limit_loopback(p.limit_bytes))
        res: dict[str, Any] = {
            k: {'median': median(v), 'samples': v} for k, v in out.items()
        }
        res['push_ceiling_MBps'] = push_ceiling_limit(
            out['sha256_MBps'], out['disk_write_fsync_MBps']
        )
        log('limits: ' + ', '.join(f'{k} {v["median"]:.2f}' for k, v in res.items()))
        return res

    def check_space(self) -> None:
        need = self.plan.space_needed(len(self.kinds), 'scaleout' in self.groups,
                                      'cache' in self.groups)
        free = shutil.disk_usage(self.workdir).free
        if free < need:
            raise SystemExit(
                f'bench: {self.workdir} has {free / GiB:.1f} GiB free, the '
                f'{self.plan.mode} run needs about {need / GiB:.1f} GiB'
            )

    def run(self) -> dict[str, Any]:
        p = self.plan
        started = dt.datetime.now(dt.UTC)
        self.check_space()
        if not self.dist_exe:
            log(
                'docker-registry not found: measuring oci-ref alone (no ratios); '
                'install it with `make clients` or `apt-get install docker-registry`'
            )
        self.loadgens = choose_loadgens(self.args.loadgen)
        info = environment(
            self.args, self.oci_exe, self.dist_exe, self.loadgens, self.workdir
        )
        log(
            f'{p.mode} run in {self.workdir}; load generators: GET {self.loadgens["GET"]}'
            f', HEAD {self.loadgens["HEAD"]}'
        )
        limits = self.limits()
        log(f'creating the {size_text(p.big)} source file')
        self.source = Source(self.workdir / 'source.bin', p.big)
        self.source.chunked(p.chunks, b'')  # hash once, outside any timing
        for i in range(p.concurrent_n):
            self.source.body(i * p.concurrent_size, p.concurrent_size, b'')
        on = self.groups.__contains__
        if on('startup'):
            figures.startup(self)
        try:
            for kind in self.kinds:
                self.servers[kind] = self.new_server(kind)
                self.servers[kind].start()
            if on('scaleout'):
                self.start_scaleout()
            # First, while the stores hold nothing else: N repositories exactly.
            if on('listings'):
                figures.listings(self)
            if on('transfers'):
                figures.transfers(self)
            if on('small'):
                figures.small_objects(self)
            for w in p.extra_workers if on('rates') or on('concurrent') else ():
                s = self.new_server(OCI, w)
                s.start()
                self.servers[s.label] = s
            # Figures 6 and 8 run for each oci-ref worker count.
            self.servers = {
                (f'{OCI} w1' if k == OCI else k): v for k, v in self.servers.items()
            }
            if on('rates'):
                figures.request_rates(self)
            if on('concurrent'):
                figures.concurrent(self)
            if on('cache'):
                pullthrough.pull_through(self)
        finally:
            for s in self.servers.values():
                s.stop()
            if self.scaleout is not None:
                self.scaleout.stop()
        finished = dt.datetime.now(dt.UTC)
        for fg in self.figures.values():  # 'oci-ref w1' is oci-ref's default: say so
            if fg.oci_label == f'{OCI} w1':
                fg.oci_label = OCI
                fg.samples[OCI] = fg.samples.pop(f'{OCI} w1', [])
        for method, rates in self.bare_rates.items():
            limits[f'falcon_bare_{method.lower()}_rps'] = {
                'median': median(rates),
                'samples': rates,
            }
        if self.direct_pull_cpu:
            limits['cold_pull_ceiling_MBps'] = cold_pull_ceiling_limit(
                limits, self.direct_pull_cpu, os.cpu_count() or 1)
        # Numbered as in the issue; within a number, in the order measured.
        summaries = [
            f.summary()
            for f in sorted(self.figures.values(), key=lambda f: f.key.split('_')[0])
        ]
        return {
            'schema': 1,
            'started': started.isoformat(timespec='seconds'),
            'finished': finished.isoformat(timespec='seconds'),
            'duration_s': round((finished - started).total_seconds(), 1),
            'mode': p.mode,
            'plan': asdict(p),
            'groups': [g for g in GROUPS if g in self.groups],
            'environment': info,
            'limits': limits,
            'figures': summaries,
            # Added after schema 1's first runs; readers derive them when absent.
            'ceilings': ceiling_rows(summaries, limits),
            'noise': harness_noise(summaries),
            'raw': self.raw,
        }
