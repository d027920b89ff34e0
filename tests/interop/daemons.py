"""Private containerd and dockerd for the interop tests.

Each daemon gets its own root, state, socket and pidfile under a short temporary
directory (unix socket paths are limited to 108 bytes), talks only to loopback, sets
up no networking (no iptables, no bridge, no IP forwarding) and is stopped by the
PID this process started. When a daemon cannot start, the error carries its log.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from oci_ref.testing import NotReady, Process

CONTAINERD_CONFIG = '''version = 2
root = "{base}/root"
state = "{base}/state"
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
]

[grpc]
  address = "{base}/containerd.sock"

[ttrpc]
  address = "{base}/containerd.sock.ttrpc"

[debug]
  address = "{base}/debug.sock"

[metrics]
  address = ""
'''


class Daemon:
    """A daemon subprocess (`oci_ref.testing.Process`) with its log; `stop()` ends it
    by its PID."""

    name = 'daemon'
    write_pidfile = True  # False when the daemon writes its own (--pidfile)

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix=f'{self.name}-'))
        self.log = self.base / f'{self.name}.log'
        self.pidfile = self.base / f'{self.name}.pid'
        self.proc: Process | None = None

    def _start(self, cmd: list[str], ready: Callable[[], bool],
               timeout: float = 60) -> None:
        # Its own session: a terminal's ^C must reach pytest only, which then stops
        # the daemon in order.
        self.proc = Process.spawn(cmd, log=self.log, new_session=True, name=self.name)
        if self.write_pidfile:
            self.pidfile.write_text(f'{self.proc.pid}\n')
        try:
            # Each probe runs a client command: a longer interval than for HTTP.
            self.proc.wait_ready(ready, timeout=timeout, interval=0.1)
        except NotReady:
            self.stop()
            raise

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(errors='replace')
        except OSError:
            return ''
        return '\n'.join(text.rstrip().splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(timeout=30)
        self._stop_children()
        self._unmount()
        shutil.rmtree(self.base, ignore_errors=True)

    def _stop_children(self) -> None:
        pass

    def _unmount(self) -> None:
        """Lazily unmount anything still mounted under our directory."""
        try:
            mounts = Path('/proc/self/mounts').read_text().splitlines()
        except OSError:
            return
        ours = [line.split()[1] for line in mounts
                if line.split()[1].startswith(str(self.base) + '/')]
        for target in sorted(ours, key=len, reverse=True):
            subprocess.run(['umount', '-l', target], capture_output=True, check=False)


class Containerd(Daemon):
    name = 'containerd'

    def __init__(self, containerd: str, ctr: str):
        super().__init__()
        self.socket = self.base / 'containerd.sock'
        self.ctr_cmd = [ctr, '--address', str(self.socket), '--namespace', 'interop']
        config = self.base / 'config.toml'
        config.write_text(CONTAINERD_CONFIG.format(base=self.base))

        def ready() -> bool:
            return subprocess.run([*self.ctr_cmd, 'version'], capture_output=True,
                                  timeout=10).returncode == 0

        self._start([containerd, '--config', str(config), '--log-level', 'info'], ready)


class Dockerd(Daemon):
    name = 'dockerd'
    write_pidfile = False

    def __init__(self, dockerd: str, docker: str, insecure_registry: str,
                 settings: dict[str, Any] | None = None):
        """``settings``: daemon.json keys (e.g. ``registry-mirrors``)."""
        super().__init__()
        self.socket = self.base / 'docker.sock'
        self.exec_root = self.base / 'exec'
        self.config_dir = self.base / 'client'
        self.config_dir.mkdir()
        daemon_json = self.base / 'daemon.json'
        daemon_json.write_text(json.dumps(settings or {}) + '\n')
        self.docker_cmd = [docker, '--config', str(self.config_dir), '--host',
                           f'unix://{self.socket}']

        def ready() -> bool:
            return subprocess.run([*self.docker_cmd, 'version'], capture_output=True,
                                  timeout=10).returncode == 0

        self._start([
            dockerd, '--data-root', str(self.base / 'data'),
            '--exec-root', str(self.exec_root), '--pidfile', str(self.pidfile),
            '--host', f'unix://{self.socket}', '--config-file', str(daemon_json),
            '--iptables=false', '--ip6tables=false', '--ip-masq=false',
            '--ip-forward=false', '--bridge=none', '--userland-proxy=false',
            '--storage-driver', 'vfs', '--insecure-registry', insecure_registry,
        ], ready)

    def _stop_children(self) -> None:
        # dockerd stops the containerd it started; should it have died first, end
        # that containerd by the PID it wrote under our exec root.
        pidfile = self.exec_root / 'containerd' / 'containerd.pid'
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
