"""What is read from /proc around a measurement: the server's CPU seconds and peak
RSS, how busy the machine was, and how much of it went to someone else (noise)."""

from __future__ import annotations

import os
import threading
import time
from typing import Protocol

from bench.plan import SAMPLE_INTERVAL, KiB, MiB
from bench.stats import busy_share, other_cores

CLK_TCK = os.sysconf('SC_CLK_TCK')


def proc_stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat fields after the command name (field 3 is index 0)."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()
    except (OSError, IndexError):
        return None


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes."""
    total = 0
    for p in pids:
        st = proc_stat(p)
        if st:
            total += int(st[11]) + int(st[12])
    return total / CLK_TCK


def host_cpu() -> tuple[int, int, int]:
    """(busy, total, process) jiffies of the whole machine, from /proc/stat;
    ``process`` is user + nice + system: without irq and softirq time, which is
    charged to the processes it ran for only some of the time (loopback TCP)."""
    with open('/proc/stat') as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    total = sum(v[:8])
    return total - idle, total, v[0] + v[1] + v[2]


def descendants(pid: int) -> list[int]:
    """pid and every descendant, from /proc/<pid>/task/<tid>/children."""
    out, stack = [], [pid]
    while stack:
        p = stack.pop()
        out.append(p)
        try:
            tasks = os.listdir(f'/proc/{p}/task')
        except OSError:
            continue
        for t in tasks:
            try:
                with open(f'/proc/{p}/task/{t}/children') as f:
                    stack.extend(int(c) for c in f.read().split())
            except OSError:
                pass
    return out


def vm_rss(pid: int) -> int:
    try:
        with open(f'/proc/{pid}/status') as f:
            for line in f:
                if line.startswith('VmRSS:'):
                    return int(line.split()[1]) * KiB
    except OSError:
        pass
    return 0


def own_cpu() -> float:
    """CPU seconds of the bench and its finished children (wrk, hey)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class Measured(Protocol):
    """A server measured on its loopback port: one process tree, or replicas."""

    port: int

    def pids(self) -> list[int]: ...

    def pid_groups(self) -> list[list[int]]: ...


def peak_rss(groups: list[list[int]]) -> int:
    """The largest summed VmRSS of one group (one server's process tree; of several
    replicas, the largest replica's)."""
    return max((sum(vm_rss(p) for p in g) for g in groups), default=0)


class Probe:
    """Around one measurement: peak summed VmRSS of the server's process tree
    (sampled every 20 ms in a thread; of replicas, the largest replica's), the
    server's CPU seconds, how busy the whole machine was, and how many cores went to
    neither the server nor the bench and its load generators (``other_cores``:
    someone else's load, i.e. noise; approximate, as softirq work is not always
    charged to a process)."""

    def __init__(self, server: Measured, interval: float = SAMPLE_INTERVAL):
        self.server = server
        self.interval = interval
        self.peak = 0
        self.cpu_s = 0.0
        self.host_busy = 0.0
        self.other_cores = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        groups, refreshed = self.server.pid_groups(), time.monotonic()
        while True:
            if time.monotonic() - refreshed > 0.5:
                groups, refreshed = self.server.pid_groups(), time.monotonic()
            self.peak = max(self.peak, peak_rss(groups))
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> Probe:
        self._pids = self.server.pids()
        self._cpu0 = cpu_seconds(self._pids)
        self._host0 = host_cpu()
        self._self0 = own_cpu()
        self._t0 = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.cpu_s = cpu_seconds(self._pids) - self._cpu0
        wall = time.perf_counter() - self._t0
        busy, total, process = host_cpu()
        self.host_busy = busy_share(busy - self._host0[0], total - self._host0[1])
        self.other_cores = other_cores(
            (process - self._host0[2]) / CLK_TCK,
            self.cpu_s,
            own_cpu() - self._self0,
            wall,
        )

    def record(self) -> dict[str, float]:
        return {
            'rss_peak_mib': round(self.peak / MiB, 1),
            'server_cpu_s': self.cpu_s,
            'host_busy': round(self.host_busy, 3),
            'other_cores': round(self.other_cores, 2),
        }
