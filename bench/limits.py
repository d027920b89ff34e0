"""The machine's own limits, measured in the same run as the figures: sha256 on one
core, fsync'd sequential writes to the data disk, a durable small write, loopback TCP.
The push ceiling derived from them is in bench/stats.py."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import threading
import time
from pathlib import Path

from bench.plan import MB, KiB, MiB
from bench.stats import median


def limit_sha256(total: int) -> float:
    buf = os.urandom(MiB)
    h = hashlib.sha256()
    t = time.perf_counter()
    for _ in range(total // MiB):
        h.update(buf)
    return total / MB / (time.perf_counter() - t)


def limit_disk_write(workdir: Path, total: int) -> tuple[float, float]:
    """Sequential 1 MiB writes then one fsync, on the filesystem the servers use:
    MB/s, and the CPU the writes cost (ms per MB, this thread's: the copy into the
    page cache, the filesystem's work), what a store spends on each byte it
    writes whatever the disk's speed."""
    buf = os.urandom(MiB)
    path = workdir / 'disk-limit'
    os.sync()
    cpu = time.thread_time()
    t = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for _ in range(total // MiB):
            os.write(fd, buf)
        os.fsync(fd)
    finally:
        os.close(fd)
    took = time.perf_counter() - t
    cpu = time.thread_time() - cpu
    path.unlink()
    return total / MB / took, cpu * 1000 / (total / MB)


def limit_fsync_ms(workdir: Path, n: int = 100) -> float:
    """Median cost of the least a durable small blob needs: write 4 KiB, fsync the
    file, rename it, fsync the directory."""
    d = workdir / 'fsync-limit'
    d.mkdir()
    buf = os.urandom(4 * KiB)
    times = []
    for i in range(n):
        t = time.perf_counter()
        tmp = d / f'tmp{i}'
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, buf)
        os.fsync(fd)
        os.close(fd)
        os.replace(tmp, d / f'f{i}')
        dfd = os.open(d, os.O_RDONLY)
        os.fsync(dfd)
        os.close(dfd)
        times.append(time.perf_counter() - t)
    shutil.rmtree(d)
    return median(times) * 1000


def limit_loopback(total: int) -> float:
    """One TCP connection over 127.0.0.1: 1 MiB sends, 1 MiB receives."""
    srv = socket.socket()
    srv.bind(('127.0.0.1', 0))
    srv.listen(1)
    got = [0]

    def sink() -> None:
        conn, _ = srv.accept()
        buf = bytearray(MiB)
        with conn:
            while n := conn.recv_into(buf):
                got[0] += n

    th = threading.Thread(target=sink)
    th.start()
    buf = os.urandom(MiB)
    with socket.create_connection(srv.getsockname()) as c:
        t = time.perf_counter()
        for _ in range(total // MiB):
            c.sendall(buf)
        c.shutdown(socket.SHUT_WR)
        th.join()
        took = time.perf_counter() - t
    srv.close()
    return got[0] / MB / took
