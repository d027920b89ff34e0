"""The harness's arithmetic: percentiles, medians, ratios, verdicts, the ceilings each
figure is held against, and the A/A noise of the harness. No I/O here: it is what the
unit tests (tests/unit/test_bench_stats.py) check."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bench.plan import DIST, OCI

# ('ratio' | 'abs' | 'share' | 'diff', op, value): against the baseline's median
# (distribution unless the figure names another), oci-ref's own value, a share of a
# ceiling, or oci-ref minus the baseline (a latency within N of another's).
Target = tuple[str, str, float]
OPS = {'>=': lambda a, b: a >= b, '<=': lambda a, b: a <= b, '<': lambda a, b: a < b}


def pct(values: list[float], q: float) -> float:
    """Percentile with linear interpolation between closest ranks."""
    s = sorted(values)
    if not s:
        return math.nan
    k = (len(s) - 1) * q / 100
    lo = math.floor(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def median(values: Iterable[float]) -> float:
    """The median, NaNs left out; NaN when nothing is left."""
    kept = [v for v in values if not math.isnan(v)]
    return statistics.median(kept) if kept else math.nan


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing (None, NaN) or b is 0."""
    if a is None or b is None or math.isnan(a) or math.isnan(b) or b == 0:
        return None
    return a / b


def verdict(x: float | None, op: str, value: float) -> bool | None:
    """Whether ``x op value`` holds; None when x is missing."""
    if x is None or math.isnan(x):
        return None
    return OPS[op](x, value)


def difference(a: float | None, b: float | None) -> float | None:
    """a - b, or None when either is missing (None, NaN)."""
    if a is None or b is None or math.isnan(a) or math.isnan(b):
        return None
    return a - b


def judge(target: Target | None, value: float | None, base: float | None) -> bool | None:
    """Whether ``value`` meets ``target`` against the baseline's ``base``: a ratio
    value / base, an absolute value, or a difference value - base. None without a
    target or a figure to judge ('share' targets are judged against their ceiling,
    by ceiling_rows)."""
    if target is None:
        return None
    kind, op, limit = target
    x = {'ratio': ratio(value, base), 'diff': difference(value, base)}.get(kind, value)
    return verdict(x, op, limit)


def target_text(target: Target | None) -> str:
    if target is None:
        return ''
    kind, op, value = target
    op = {'>=': '≥', '<=': '≤'}.get(op, op)
    if kind == 'ratio':
        return f'ratio {op} {value:g}'
    if kind == 'share':
        return f'{op} {value:.0%} of the ceiling'
    if kind == 'diff':
        return f'difference {op} {value:g}'
    return f'{op} {value:g} (absolute)'


def rotate(items: list[Any], rep: int) -> list[Any]:
    """The order of repetition ``rep``: rotated by one each time (A B, B A, …) so slow
    drift of the machine hits every server alike."""
    k = rep % len(items) if items else 0
    return items[k:] + items[:k]


# -- A/A noise ---------------------------------------------------------------------


def spread(samples: list[float]) -> float | None:
    """How far one server's repetitions within one run land from their own median:
    the median of |x / median - 1| (the relative median absolute deviation), robust
    to one outlier. None under two samples or with a median of 0."""
    kept = [v for v in samples if not math.isnan(v)]
    if len(kept) < 2:
        return None
    mid = statistics.median(kept)
    if mid == 0:
        return None
    return statistics.median(abs(v / mid - 1) for v in kept)


def figure_noise(samples: Mapping[str, list[float]]) -> float | None:
    """A figure's A/A noise: the largest spread over the servers measured."""
    spreads = [s for s in (spread(v) for v in samples.values()) if s is not None]
    return max(spreads) if spreads else None


def harness_noise(figures: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The run's A/A noise over every figure with repetitions: per figure, and the
    median and maximum over figures. None when no figure was repeated (a quick run)."""
    per = {}
    for f in figures:
        n = f.get('noise')
        if n is None:
            n = figure_noise(f.get('samples', {}))
        if n is not None:
            per[f['key']] = n
    if not per:
        return None
    return {'median': median(per.values()), 'max': max(per.values()), 'per_figure': per}


# -- other load ----------------------------------------------------------------------


def busy_share(busy: float, total: float) -> float:
    """The share of the machine's CPU time that was busy (jiffies of /proc/stat)."""
    return busy / max(total, 1)


def other_cores(process_s: float, server_s: float, bench_s: float, wall_s: float) -> float:
    """Cores used by neither the server nor the bench (its load generators included)
    during a measurement: the machine's process CPU time minus both, over the wall
    time; never negative (the counters tick at different moments)."""
    return max(process_s - server_s - bench_s, 0.0) / max(wall_s, 1e-9)


# -- ceilings ----------------------------------------------------------------------


def push_ceiling(sha256_MBps: float, disk_MBps: float) -> float:
    """A push moves bytes from the socket through a hash to the disk; with hashing and
    writing overlapped, it cannot go faster than the slower of the two."""
    return min(sha256_MBps, disk_MBps)


def push_ceiling_limit(sha256: list[float], disk: list[float]) -> dict[str, Any]:
    """The push ceiling as a machine limit: the smaller of the two medians, and per
    repetition the smaller of that repetition's pair (for the record)."""
    return {
        'median': push_ceiling(median(sha256), median(disk)),
        'samples': [push_ceiling(s, d) for s, d in zip(sha256, disk, strict=True)],
        'of': ['sha256_MBps', 'disk_write_fsync_MBps'],
    }


def cold_pull_ceiling(sha256_MBps: float, disk_MBps: float, write_cpu_ms: float,
                      direct_cpu_ms: float, cores: int) -> float:
    """The fastest a cold pull-through can stream on this machine (bench/README.md).
    The cache hashes every byte on one core and writes it durably before the last
    bytes go out (so: at most the push ceiling), and all of it shares the cores
    with the upstream and the client: per MB the direct pull's CPU twice (the
    upstream's send and the client's receive, which the cache repeats: it receives
    what the upstream sends and sends it on), one sha256 pass, and the write into
    the page cache (``*_cpu_ms``: ms of CPU per MB)."""
    cpu_ms = 2 * direct_cpu_ms + 1000 / sha256_MBps + write_cpu_ms
    return min(push_ceiling(sha256_MBps, disk_MBps), cores * 1000 / cpu_ms)


def cold_pull_ceiling_limit(limits: Mapping[str, Any], direct_cpu_ms: list[float],
                            cores: int) -> dict[str, Any]:
    """cold_pull_ceiling from the run's machine limits (medians) and, per repetition
    of figure 9, that repetition's direct pull; the median of those."""
    sha = limits['sha256_MBps']['median']
    disk = limits['disk_write_fsync_MBps']['median']
    write_cpu = limits['disk_write_cpu_ms_per_MB']['median']
    samples = [cold_pull_ceiling(sha, disk, write_cpu, d, cores) for d in direct_cpu_ms]
    return {
        'median': median(samples),
        'samples': samples,
        'of': ['sha256_MBps', 'disk_write_fsync_MBps', 'disk_write_cpu_ms_per_MB',
               'direct pull CPU per MB (upstream + client)', f'{cores} cores'],
    }


@dataclass(frozen=True)
class Ceiling:
    """A figure held against a limit measured in the same run."""

    figure: str  # Figure key
    limit: str  # key in the result's limits
    target: Target | None = None


# From issue 17: pushes at the speed of the machine, pulls at the loopback's, manifest
# requests at the framework's (a bare Falcon app on the same uvicorn, one worker).
CEILINGS = (
    Ceiling('2a_push_mono', 'push_ceiling_MBps', ('share', '>=', 0.7)),
    Ceiling('2b_push_chunked', 'push_ceiling_MBps', ('share', '>=', 0.7)),
    Ceiling('3_pull', 'loopback_tcp_MBps', ('share', '>=', 0.9)),
    Ceiling('6_head_rps_w1', 'falcon_bare_head_rps', ('share', '>=', 0.7)),
    Ceiling('6_get_rps_w1', 'falcon_bare_get_rps', ('share', '>=', 0.7)),
    # A cold pull-through hashes and durably writes what it streams, as a push does,
    # on the cores its upstream and client use too: stats.cold_pull_ceiling (no
    # target of its own; issue 13's is 9a's ratio to the direct pull).
    Ceiling('9a_cache_cold_pull', 'cold_pull_ceiling_MBps'),
)


def ceiling_rows(
    figures: list[dict[str, Any]],
    limits: Mapping[str, Any],
    ceilings: Iterable[Ceiling] = CEILINGS,
) -> list[dict[str, Any]]:
    """Each figure as a share of its ceiling, for oci-ref and distribution; figures
    or limits the run lacks are left out."""
    by_key = {f['key']: f for f in figures}
    rows = []
    for c in ceilings:
        f = by_key.get(c.figure)
        lim = limits.get(c.limit)
        if f is None or lim is None or lim.get('median') is None:
            continue
        top = lim['median']
        share = ratio(f.get('oci_ref'), top)
        met = None
        if c.target is not None and share is not None:
            met = verdict(share, c.target[1], c.target[2])
        rows.append(
            {
                'key': c.figure,
                'figure': f['figure'],
                'unit': f['unit'],
                'limit': c.limit,
                'ceiling': top,
                'oci_ref': f.get('oci_ref'),
                'distribution': f.get('distribution'),
                'oci_share': share,
                'distribution_share': ratio(f.get('distribution'), top),
                'target': target_text(c.target),
                'met': met,
            }
        )
    return rows


# -- figures -----------------------------------------------------------------------


@dataclass
class Figure:
    """One figure: samples per server label. ``oci_label`` is oci-ref's value;
    ``baseline`` what it is compared with (distribution, or for the pull-through
    cache the upstream pulled directly); ``columns`` more oci-ref variants measured
    in the same run (the scale-out replicas), each summarized against the same
    baseline and target."""

    key: str
    label: str
    unit: str
    better: str  # 'higher' or 'lower'
    target: Target | None = None
    oci_label: str = OCI
    samples: dict[str, list[float]] = field(default_factory=dict)
    baseline: str = DIST
    columns: tuple[str, ...] = ()

    def add(self, who: str, value: float) -> None:
        self.samples.setdefault(who, []).append(value)

    def summary(self) -> dict[str, Any]:
        oci = median(self.samples.get(self.oci_label, []))
        dist = median(self.samples.get(DIST, []))
        base = median(self.samples.get(self.baseline, []))
        out: dict[str, Any] = {
            'key': self.key,
            'figure': self.label,
            'unit': self.unit,
            'better': self.better,
            'oci_server': self.oci_label,
            'oci_ref': None if math.isnan(oci) else oci,
            'distribution': None if math.isnan(dist) else dist,
            'ratio': ratio(oci, base),
            'target': target_text(self.target),
            'met': judge(self.target, oci, base),
            # The extra columns' engines (moto, a PostgreSQL without fsync) are not
            # the harness: their spread is theirs, in their column.
            'noise': figure_noise({k: v for k, v in self.samples.items()
                                   if k not in self.columns}),
            'samples': self.samples,
        }
        if self.baseline != DIST:
            out['baseline'] = self.baseline
            out['baseline_value'] = None if math.isnan(base) else base
            out['difference'] = difference(oci, base)
        if self.columns:
            out['columns'] = {c: column(self.samples.get(c, []), oci, base, self.target)
                              for c in self.columns}
        return out


def column(samples: list[float], single: float, base: float,
           target: Target | None) -> dict[str, Any]:
    """One more oci-ref variant of a figure: its median, its ratio to the single-node
    default and to the baseline, and the figure's target applied to it."""
    v = median(samples)
    return {
        'value': None if math.isnan(v) else v,
        'vs_oci_ref': ratio(v, single),
        'ratio': ratio(v, base),
        'met': judge(target, v, base),
        'noise': spread(samples),
    }
