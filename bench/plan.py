"""What a run measures and how often: the full and the quick plan, units and names."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / 'results'
DOC = REPO / 'docs' / 'benchmarks.md'
KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
MB = 1_000_000  # throughput is reported in MB/s (10^6 bytes per second)

OCI = 'oci-ref'
DIST = 'distribution'
BARE = 'falcon-bare'  # a bare Falcon app on the same uvicorn: the framework's ceiling
# Issue 14: two oci-ref replicas, metadata in PostgreSQL, blobs in S3 (moto), behind
# haproxy round-robin.
SCALE = 'oci-ref x2 pg+s3'
# Issue 13: oci-ref as a pull-through cache of another oci-ref (the upstream), and
# that upstream pulled directly (the baseline of the cache's figures).
CACHE = 'oci-ref cache'
UPSTREAM = 'upstream direct'
# Figure groups --only can pick (all by default).
GROUPS = ('startup', 'listings', 'transfers', 'small', 'rates', 'concurrent', 'scaleout',
          'cache')
MANIFEST_TYPE = 'application/vnd.oci.image.manifest.v1+json'
CONFIG_TYPE = 'application/vnd.oci.image.config.v1+json'
LAYER_TYPE = 'application/vnd.oci.image.layer.v1.tar'
ACCEPT = ', '.join(
    [
        MANIFEST_TYPE,
        'application/vnd.oci.image.index.v1+json',
        'application/vnd.docker.distribution.manifest.v2+json',
        'application/vnd.docker.distribution.manifest.list.v2+json',
    ]
)
HTTP_TIMEOUT = 600.0  # generous: a 1 GiB request on a slow disk
SAMPLE_INTERVAL = 0.02  # RSS sampling period


@dataclass(frozen=True)
class Plan:
    mode: str
    startup_reps: int
    transfer_reps: int
    small_reps: int
    list_reps: int
    list_requests: int
    rate_reps: int
    rate_seconds: int
    concurrent_reps: int
    limit_reps: int
    limit_bytes: int
    big: int
    small_count: int
    tag_count: int
    repo_count: int
    concurrent_size: int
    chunks: int = 4
    small_size: int = 4 * KiB
    connections: int = 32
    wrk_threads: int = 2
    concurrent_n: int = 8
    extra_workers: tuple[int, ...] = (2,)
    cache_reps: int = 3

    def space_needed(self, servers: int, scaleout: bool = False, cache: bool = False
                     ) -> int:
        """Bytes the work directory needs: the source file, and per server what its
        pushes store (two big blobs per transfer repetition, one more, the
        concurrent pushes), plus 2 GiB to spare. The replicas' S3 server keeps two
        big blobs per transfer repetition; the cache and its upstream one each per
        cache repetition."""
        per_server = (
            self.transfer_reps * 2 * self.big
            + self.big
            + self.concurrent_reps * self.concurrent_n * self.concurrent_size
        )
        extra = (self.transfer_reps * 2 * self.big if scaleout else 0) + (
            self.cache_reps * 2 * self.big if cache else 0)
        return self.big + per_server * servers + extra + 2 * GiB


FULL = Plan(
    mode='full',
    startup_reps=7,
    transfer_reps=5,
    small_reps=3,
    list_reps=3,
    list_requests=100,
    rate_reps=3,
    rate_seconds=10,
    concurrent_reps=3,
    limit_reps=3,
    limit_bytes=GiB,
    big=GiB,
    small_count=200,
    tag_count=1000,
    repo_count=1000,
    concurrent_size=64 * MiB,
)
# Under two minutes: the same figures, smaller (the labels say how much smaller).
QUICK = Plan(
    mode='quick',
    startup_reps=3,
    transfer_reps=1,
    small_reps=1,
    list_reps=1,
    list_requests=20,
    rate_reps=1,
    rate_seconds=2,
    concurrent_reps=1,
    limit_reps=1,
    limit_bytes=128 * MiB,
    big=256 * MiB,
    small_count=100,
    tag_count=200,
    repo_count=200,
    concurrent_size=16 * MiB,
    cache_reps=1,
)

T0 = time.monotonic()


def log(msg: str) -> None:
    print(f'[{time.monotonic() - T0:6.1f}s] {msg}', flush=True)


def size_text(n: int) -> str:
    return f'{n // GiB} GiB' if n >= GiB and n % GiB == 0 else f'{n // MiB} MiB'
