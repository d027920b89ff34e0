"""Spawning and stopping what is measured: oci-ref, CNCF distribution and the bare
Falcon app, each on a free 127.0.0.1 port with fresh storage. Every process the bench
starts is started here, through the project's one spawn-and-wait helper
(``oci_ref.testing.Process``)."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.metrics import descendants
from bench.plan import BARE, DIST, HERE, OCI, REPO
from oci_ref.testing import NotReady, Process, free_port, http_ready


def bare_command(python: str, port: int) -> list[str]:
    """bench/falcon_bare.py on uvicorn, configured as `oci-ref serve` configures it
    (uvloop, httptools, lifespan on, no server header, no access log): one worker."""
    return [
        python,
        '-m',
        'uvicorn',
        '--app-dir',
        str(HERE),
        'falcon_bare:app',
        '--host',
        '127.0.0.1',
        '--port',
        str(port),
        '--loop',
        'uvloop',
        '--http',
        'httptools',
        '--lifespan',
        'on',
        '--no-server-header',
        '--no-access-log',
        '--log-level',
        'warning',
    ]


@dataclass
class Server:
    """One registry process (tree) on a free loopback port with fresh storage."""

    kind: str  # OCI, DIST or BARE
    workers: int
    workdir: Path
    exe: str
    env: dict[str, str]
    proc: Process | None = None
    port: int = 0
    data: Path | None = None
    # oci-ref only: more `serve` arguments (the stores, upstreams), and a label
    # naming the variant (the replicas, the cache, its upstream).
    args: tuple[str, ...] = ()
    name: str = ''
    serial = 0

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        return self.kind if self.kind in (DIST, BARE) else f'{OCI} w{self.workers}'

    def _command(self) -> list[str]:
        assert self.data is not None
        listen = f'127.0.0.1:{self.port}'
        if self.kind == OCI:
            cmd = [
                self.exe,
                'serve',
                '--listen',
                listen,
                '--root',
                str(self.data),
                '--no-access-log',
                '--log-level',
                'warning',
            ]
            if self.workers > 1:
                cmd += ['--workers', str(self.workers)]
            return cmd + list(self.args)
        if self.kind == BARE:
            return bare_command(self.exe, self.port)
        # As /opt/oci-clients/bin/oci-local-registry writes it, but quiet: level
        # error and no access log (oci-ref runs with --no-access-log likewise).
        (self.data / 'storage').mkdir(parents=True, exist_ok=True)
        config = self.data / 'config.yml'
        config.write_text(
            'version: 0.1\n'
            'log:\n'
            '  level: error\n'
            '  accesslog:\n'
            '    disabled: true\n'
            '  fields:\n'
            '    service: registry\n'
            'storage:\n'
            '  filesystem:\n'
            f'    rootdirectory: {self.data / "storage"}\n'
            '  delete:\n'
            '    enabled: true\n'
            '  cache:\n'
            '    blobdescriptor: inmemory\n'
            'http:\n'
            f'  addr: {listen}\n'
            '  headers:\n'
            '    X-Content-Type-Options: [nosniff]\n'
        )
        return [self.exe, 'serve', str(config)]

    def start(self) -> float:
        """Start with fresh storage; returns the seconds from spawn to the first 200
        on GET /v2/."""
        for _attempt in range(5):
            Server.serial += 1
            slug = ''.join(c if c.isalnum() else '-' for c in self.label)
            self.data = self.workdir / f'{slug}-{Server.serial}'
            self.data.mkdir(parents=True)
            self.port = free_port()
            self.proc = Process.spawn(
                self._command(), log=self.data.with_suffix('.log'), env=self.env,
                cwd=self.workdir,  # nothing importable from the caller's cwd
                name=self.label)
            try:
                took = self.proc.wait_ready(
                    http_ready(f'http://127.0.0.1:{self.port}/v2/', timeout=5),
                    timeout=60, interval=0.002)
            except NotReady:  # it exited (a lost port race, most likely), or hung
                self.proc = None
                continue
            # Another process may have taken the port between our probe and the
            # server's bind, and answered for it.
            if self.proc.listens_on(self.port):
                return took
            self.stop()
        raise RuntimeError(f'{self.label} did not start: {self.log_tail()}')

    def log_tail(self) -> str:
        if self.data is None:
            return ''
        try:
            return self.data.with_suffix('.log').read_text(errors='replace')[-2000:]
        except OSError:
            return ''

    def pids(self) -> list[int]:
        return descendants(self.proc.pid) if self.proc else []

    def pid_groups(self) -> list[list[int]]:
        """The process trees whose RSS is summed (one: this server's)."""
        return [self.pids()]

    def stop(self) -> None:
        """SIGTERM our process, SIGKILL after 20 s, then whatever of its tree is
        left (oci_ref.testing.Process.stop: by pid, checked by start time)."""
        if self.proc is None:
            return
        self.proc.stop(timeout=20)
        self.proc = None

    def delete_data(self) -> None:
        if self.data is not None:
            shutil.rmtree(self.data, ignore_errors=True)
            self.data.with_suffix('.log').unlink(missing_ok=True)


def snapshot(rev: str, python: str, workdir: Path) -> str:
    """``git archive REV`` under workdir and an ``oci-ref`` wrapper that runs it with
    the venv's interpreter (its dependencies); PYTHONPATH puts the snapshot first."""
    src = workdir / 'oci-ref-src'
    src.mkdir()
    archive = subprocess.run(
        ['git', '-C', str(REPO), 'archive', rev], check=True, capture_output=True
    ).stdout
    subprocess.run(['tar', '-x', '-C', str(src)], input=archive, check=True)
    # -P: no cwd (or script directory) in front of sys.path, so `-m oci_ref` cannot
    # pick up a checkout's oci_ref/ instead of the snapshot's.
    wrapper = workdir / 'oci-ref'
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH={src} exec {python} -P -m oci_ref "$@"\n')
    wrapper.chmod(0o755)
    where = oci_ref_path(python, {'PYTHONPATH': str(src)})
    if not where.startswith(str(src)):
        raise SystemExit(f'bench: the snapshot of {rev} imports oci_ref from {where}')
    return str(wrapper)


def oci_ref_path(python: str, env: dict[str, str] | None = None) -> str:
    """Where the servers' interpreter imports oci_ref from (run from REPO, as make
    does, to catch a checkout shadowing the package)."""
    r = subprocess.run(
        [python, '-P', '-c', 'import oci_ref; print(oci_ref.__file__)'],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )
    return r.stdout.strip() or r.stderr.strip()[-200:]
