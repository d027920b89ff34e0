"""The bench harness's own arithmetic (bench/stats.py, bench/plan.py): percentiles,
medians, ratios, verdicts, the order of repetitions, the ceilings and the A/A noise.
The benchmark itself is never run here: `make bench` runs it."""

from __future__ import annotations

import math
import statistics

import pytest

from bench.plan import CACHE, DIST, FULL, OCI, QUICK, SCALE, UPSTREAM, GiB, MiB
from bench.stats import (
    CEILINGS,
    Ceiling,
    Figure,
    busy_share,
    ceiling_rows,
    cold_pull_ceiling,
    cold_pull_ceiling_limit,
    difference,
    figure_noise,
    harness_noise,
    judge,
    median,
    other_cores,
    pct,
    push_ceiling,
    push_ceiling_limit,
    ratio,
    rotate,
    spread,
    target_text,
    verdict,
)

# -- percentiles and medians ---------------------------------------------------------


@pytest.mark.parametrize(
    ('values', 'q', 'want'),
    [
        ([1.0, 2.0, 3.0, 4.0, 5.0], 50, 3.0),
        ([4.0, 1.0, 3.0, 2.0], 50, 2.5),  # unsorted input, between two ranks
        ([1.0, 2.0, 3.0, 4.0, 5.0], 0, 1.0),
        ([1.0, 2.0, 3.0, 4.0, 5.0], 100, 5.0),
        ([10.0, 20.0], 99, 19.9),  # linear interpolation: 10 + 0.99 * 10
        ([7.0], 99, 7.0),
    ],
)
def test_pct_interpolates_between_closest_ranks(
    values: list[float], q: float, want: float
) -> None:
    assert pct(values, q) == pytest.approx(want)


def test_pct_agrees_with_statistics_inclusive_quantiles() -> None:
    values = [float(v * v % 97) for v in range(1, 201)]
    cuts = statistics.quantiles(values, n=100, method='inclusive')
    for q in (1, 25, 50, 75, 99):
        assert pct(values, q) == pytest.approx(cuts[q - 1])


def test_pct_of_nothing_is_nan() -> None:
    assert math.isnan(pct([], 50))


def test_median_leaves_nan_out() -> None:
    assert median([3.0, math.nan, 1.0, 2.0]) == 2.0
    assert median([1.0, 4.0]) == 2.5
    assert math.isnan(median([]))
    assert math.isnan(median([math.nan]))


# -- ratios and verdicts -------------------------------------------------------------


@pytest.mark.parametrize(
    ('a', 'b', 'want'),
    [
        (300.0, 150.0, 2.0),
        (1.0, 4.0, 0.25),
        (None, 1.0, None),
        (1.0, None, None),
        (math.nan, 1.0, None),
        (1.0, math.nan, None),
        (1.0, 0.0, None),
    ],
)
def test_ratio(a: float | None, b: float | None, want: float | None) -> None:
    assert ratio(a, b) == want


@pytest.mark.parametrize(
    ('x', 'op', 'value', 'want'),
    [
        (1.0, '>=', 1.0, True),
        (0.99, '>=', 1.0, False),
        (0.5, '<=', 0.5, True),
        (0.51, '<=', 0.5, False),
        (0.15, '<', 0.15, False),
        (0.149, '<', 0.15, True),
        (None, '>=', 1.0, None),
        (math.nan, '<', 1.0, None),
    ],
)
def test_verdict(x: float | None, op: str, value: float, want: bool | None) -> None:
    assert verdict(x, op, value) is want


def test_target_text() -> None:
    assert target_text(None) == ''
    assert target_text(('ratio', '>=', 2.5)) == 'ratio ≥ 2.5'
    assert target_text(('ratio', '<=', 0.5)) == 'ratio ≤ 0.5'
    assert target_text(('abs', '<', 150)) == '< 150 (absolute)'
    assert target_text(('share', '>=', 0.7)) == '≥ 70% of the ceiling'


def test_rotate_puts_each_server_first_in_turn() -> None:
    servers = ['a', 'b', 'c']
    orders = [rotate(servers, rep) for rep in range(3)]
    assert orders == [['a', 'b', 'c'], ['b', 'c', 'a'], ['c', 'a', 'b']]
    assert rotate(['a', 'b'], 1) == ['b', 'a']  # A B, then B A
    assert rotate(servers, 4) == rotate(servers, 1)
    assert rotate([], 3) == []


# -- figures -------------------------------------------------------------------------


def test_figure_summary_is_the_ratio_of_medians() -> None:
    f = Figure('2a_push_mono', 'push', 'MB/s', 'higher', ('ratio', '>=', 1.0))
    for v in (200.0, 250.0, 210.0):
        f.add(OCI, v)
    for v in (100.0, 90.0, 120.0):
        f.add(DIST, v)
    s = f.summary()
    assert s['oci_ref'] == 210.0
    assert s['distribution'] == 100.0
    assert s['ratio'] == pytest.approx(2.1)
    assert s['met'] is True
    assert s['target'] == 'ratio ≥ 1'
    assert s['samples'] == {OCI: [200.0, 250.0, 210.0], DIST: [100.0, 90.0, 120.0]}


def test_figure_absolute_target_judges_oci_ref_alone() -> None:
    f = Figure('1_startup', 'startup', 's', 'lower', ('abs', '<', 0.15))
    f.add(OCI, 0.2)
    s = f.summary()
    assert s['met'] is False
    assert s['distribution'] is None
    assert s['ratio'] is None
    assert s['noise'] is None  # one repetition: no noise to measure


def test_figure_without_baseline_has_no_ratio_verdict() -> None:
    f = Figure('3_pull', 'pull', 'MB/s', 'higher', ('ratio', '>=', 1.0))
    f.add(OCI, 2000.0)
    s = f.summary()
    assert (s['ratio'], s['met']) == (None, None)


@pytest.mark.parametrize(
    ('target', 'value', 'base', 'want'),
    [
        (('ratio', '>=', 0.8), 81.0, 100.0, True),  # 0.81 of the baseline
        (('ratio', '>=', 0.8), 79.0, 100.0, False),
        (('ratio', '>=', 0.8), 79.0, None, None),  # no baseline: no verdict
        (('abs', '<', 150), 149.9, None, True),  # the baseline plays no part
        (('abs', '<', 150), 150.0, 10.0, False),
        (('diff', '<=', 5.0), 7.5, 2.5, True),  # exactly 5 ms more
        (('diff', '<=', 5.0), 7.6, 2.5, False),
        (('diff', '<=', 5.0), math.nan, 2.5, None),
        (None, 1.0, 1.0, None),
    ],
)
def test_judge(target: tuple | None, value: float, base: float | None,
               want: bool | None) -> None:
    assert judge(target, value, base) is want


def test_difference_of_missing_figures_is_none() -> None:
    assert difference(7.5, 2.5) == 5.0
    assert difference(None, 1.0) is None
    assert difference(1.0, math.nan) is None
    assert target_text(('diff', '<=', 5.0)) == 'difference ≤ 5'


def test_a_figure_against_another_baseline() -> None:
    """The pull-through cache's figures: the cache against its upstream pulled
    directly, not against distribution (whose samples, if any, play no part)."""
    f = Figure('9c_cache_cold_ttfb', 'ttfb', 'ms', 'lower', ('diff', '<=', 5.0),
               oci_label=CACHE, baseline=UPSTREAM)
    for cache, direct in ((4.0, 1.0), (9.0, 2.0), (5.0, 1.5)):
        f.add(CACHE, cache)
        f.add(UPSTREAM, direct)
    f.add(DIST, 100.0)
    s = f.summary()
    assert (s['oci_ref'], s['baseline'], s['baseline_value']) == (5.0, UPSTREAM, 1.5)
    assert s['difference'] == pytest.approx(3.5)
    assert s['ratio'] == pytest.approx(5.0 / 1.5)
    assert s['met'] is True
    assert s['distribution'] == 100.0


def test_a_figure_compared_with_distribution_has_no_baseline_keys() -> None:
    f = Figure('3_pull', 'pull', 'MB/s', 'higher', ('ratio', '>=', 1.0))
    f.add(OCI, 1.0)
    assert {'baseline', 'baseline_value', 'difference', 'columns'}.isdisjoint(
        f.summary())


def test_a_column_gets_the_figures_target_and_both_ratios() -> None:
    """The scale-out replicas: their median, against the single node and against
    distribution, judged by the figure's own target."""
    f = Figure('2a_push_mono', 'push', 'MB/s', 'higher', ('ratio', '>=', 1.0),
               columns=(SCALE,))
    for oci, dist, scale in ((300.0, 150.0, 120.0), (320.0, 160.0, 140.0),
                             (310.0, 140.0, 130.0)):
        f.add(OCI, oci)
        f.add(DIST, dist)
        f.add(SCALE, scale)
    s = f.summary()
    col = s['columns'][SCALE]
    assert col['value'] == 130.0
    assert col['vs_oci_ref'] == pytest.approx(130.0 / 310.0)
    assert col['ratio'] == pytest.approx(130.0 / 150.0)
    assert col['met'] is False  # 0.87 x distribution: below the ratio target
    assert s['met'] is True  # the single node's verdict is its own
    absent = Figure('4_rss', 'rss', 'MiB', 'lower', ('abs', '<', 150), columns=(SCALE,))
    absent.add(OCI, 60.0)
    assert absent.summary()['columns'][SCALE] == {
        'value': None, 'vs_oci_ref': None, 'ratio': None, 'met': None, 'noise': None}


def test_a_columns_spread_stays_out_of_the_figures_noise() -> None:
    f = Figure('3_pull', 'pull', 'MB/s', 'higher', columns=(SCALE,))
    for oci, scale in ((100.0, 10.0), (110.0, 20.0), (90.0, 40.0)):
        f.add(OCI, oci)
        f.add(SCALE, scale)
    s = f.summary()
    assert s['noise'] == pytest.approx(0.1)  # oci-ref's alone
    assert s['columns'][SCALE]['noise'] == pytest.approx(0.5)  # |10/20-1|, 0, |40/20-1|


def test_figure_reads_its_own_oci_label() -> None:
    f = Figure('6_get_rps_w2', 'GET', 'req/s', 'higher', oci_label=f'{OCI} w2')
    f.add(f'{OCI} w2', 12000.0)
    f.add(DIST, 1500.0)
    s = f.summary()
    assert s['oci_server'] == f'{OCI} w2'
    assert s['ratio'] == pytest.approx(8.0)


# -- A/A noise -----------------------------------------------------------------------


def test_spread_is_the_relative_median_absolute_deviation() -> None:
    # median 100; deviations 0.1, 0, 0.2 -> their median 0.1
    assert spread([90.0, 100.0, 120.0]) == pytest.approx(0.1)
    # one wild outlier moves it no more than any other single sample would
    assert spread([100.0, 101.0, 99.0, 100.0, 1000.0]) == pytest.approx(0.01)
    assert spread([5.0, 5.0, 5.0]) == 0.0


@pytest.mark.parametrize('samples', [[], [1.0], [1.0, math.nan], [0.0, 0.0]])
def test_spread_needs_two_samples_and_a_median(samples: list[float]) -> None:
    assert spread(samples) is None


def test_figure_noise_is_the_noisiest_server() -> None:
    assert figure_noise({OCI: [90.0, 100.0, 120.0], DIST: [99.0, 100.0, 101.0]}) == (
        pytest.approx(0.1)
    )
    assert figure_noise({OCI: [1.0]}) is None
    assert figure_noise({}) is None


def test_harness_noise_over_figures() -> None:
    figures = [
        {'key': 'a', 'samples': {OCI: [90.0, 100.0, 120.0]}},  # 0.1
        {'key': 'b', 'samples': {OCI: [95.0, 100.0, 110.0]}},  # 0.05
        {'key': 'c', 'samples': {OCI: [100.0, 130.0, 70.0]}},  # 0.3
        {'key': 'd', 'samples': {OCI: [1.0]}},  # one repetition: left out
        {'key': 'e', 'noise': 0.02, 'samples': {}},  # as recorded
    ]
    n = harness_noise(figures)
    assert n is not None
    assert n['per_figure'] == pytest.approx({'a': 0.1, 'b': 0.05, 'c': 0.3, 'e': 0.02})
    assert n['median'] == pytest.approx(0.075)
    assert n['max'] == pytest.approx(0.3)


def test_harness_noise_of_a_run_without_repetitions_is_none() -> None:
    assert harness_noise([{'key': 'a', 'samples': {OCI: [1.0], DIST: [2.0]}}]) is None


# -- other load ----------------------------------------------------------------------


def test_other_cores_is_what_neither_server_nor_bench_used() -> None:
    # 10 s: the machine's processes used 15 CPU-s, the server 8, the bench 2
    assert other_cores(15.0, 8.0, 2.0, 10.0) == pytest.approx(0.5)
    assert other_cores(10.0, 8.0, 2.0, 10.0) == 0.0
    assert other_cores(9.9, 8.0, 2.0, 10.0) == 0.0  # counters read apart: not < 0
    assert other_cores(1.0, 0.0, 0.0, 0.0) > 0  # no division by zero


def test_busy_share() -> None:
    assert busy_share(150, 200) == 0.75
    assert busy_share(0, 0) == 0.0


# -- ceilings ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ('sha', 'disk', 'want'),
    [(1613.0, 633.0, 633.0), (400.0, 900.0, 400.0), (500.0, 500.0, 500.0)],
)
def test_push_ceiling_is_the_slower_of_hash_and_disk(
    sha: float, disk: float, want: float
) -> None:
    assert push_ceiling(sha, disk) == want


def test_push_ceiling_limit_takes_the_smaller_median() -> None:
    lim = push_ceiling_limit([1600.0, 1700.0, 1650.0], [540.0, 2035.0, 768.0])
    assert lim['median'] == 768.0  # min(median 1650, median 768)
    assert lim['samples'] == [540.0, 1700.0, 768.0]  # per repetition
    assert lim['of'] == ['sha256_MBps', 'disk_write_fsync_MBps']


def test_push_ceiling_limit_needs_paired_samples() -> None:
    with pytest.raises(ValueError):
        push_ceiling_limit([1.0, 2.0], [1.0])


def summary(key: str, oci: float | None, dist: float | None) -> dict:
    return {'key': key, 'figure': key, 'unit': 'MB/s', 'oci_ref': oci, 'distribution': dist}


def test_ceiling_rows_share_and_verdict() -> None:
    figures = [
        summary('2a_push_mono', 450.0, 180.0),
        summary('2b_push_chunked', 420.0, 170.0),
        summary('6_head_rps_w1', 11000.0, 1250.0),
    ]
    limits = {
        'push_ceiling_MBps': {'median': 600.0},
        'falcon_bare_head_rps': {'median': 20000.0},
    }
    rows = {r['key']: r for r in ceiling_rows(figures, limits)}
    assert set(rows) == {'2a_push_mono', '2b_push_chunked', '6_head_rps_w1'}
    mono = rows['2a_push_mono']
    assert mono['ceiling'] == 600.0
    assert mono['oci_share'] == pytest.approx(0.75)
    assert mono['distribution_share'] == pytest.approx(0.3)
    assert mono['met'] is True  # 75 % >= 70 %
    assert rows['2b_push_chunked']['oci_share'] == pytest.approx(0.7)
    assert rows['2b_push_chunked']['met'] is True  # at the target is meeting it (≥)
    head = rows['6_head_rps_w1']
    assert head['oci_share'] == pytest.approx(0.55)
    assert head['met'] is False
    assert head['target'] == '≥ 70% of the ceiling'


def test_ceiling_rows_skip_what_the_run_lacks() -> None:
    figures = [summary('3_pull', 2000.0, None), summary('2a_push_mono', 200.0, 150.0)]
    rows = ceiling_rows(figures, {'loopback_tcp_MBps': {'median': 4000.0}})
    assert [r['key'] for r in rows] == ['3_pull']  # no push ceiling measured
    assert rows[0]['distribution_share'] is None
    assert rows[0]['met'] is False  # 50 % < 90 %
    assert ceiling_rows([], {'loopback_tcp_MBps': {'median': 1.0}}) == []


def test_ceiling_without_target_has_no_verdict() -> None:
    rows = ceiling_rows(
        [summary('x', 10.0, 5.0)], {'lim': {'median': 20.0}}, [Ceiling('x', 'lim')]
    )
    assert rows[0]['oci_share'] == pytest.approx(0.5)
    assert (rows[0]['met'], rows[0]['target']) == (None, '')


def test_the_cold_pull_through_is_held_against_its_own_ceiling() -> None:
    """A cold pull-through hashes and writes what it streams, beside its upstream
    and client on the same cores: for the record (its target is the ratio to the
    direct pull)."""
    cold = Figure('9a_cache_cold_pull', 'cold', 'MB/s', 'higher', ('ratio', '>=', 0.8),
                  oci_label=CACHE, baseline=UPSTREAM)
    cold.add(CACHE, 300.0)
    cold.add(UPSTREAM, 1500.0)
    (row,) = ceiling_rows([cold.summary()], {'cold_pull_ceiling_MBps': {'median': 600.0}})
    assert row['oci_share'] == pytest.approx(0.5)
    assert (row['distribution_share'], row['met'], row['target']) == (None, None, '')


@pytest.mark.parametrize(
    ('sha', 'disk', 'write_cpu', 'direct_cpu', 'cores', 'want'),
    [
        # The CPU binds: 2 x 0.5 + 1000 / 1600 + 0.5 = 2.125 ms per MB on 2 cores.
        (1600.0, 2000.0, 0.5, 0.5, 2, 2000 / 2.125),
        (1600.0, 2000.0, 0.5, 1.0, 2, 2000 / 3.125),
        # The disk binds (the last bytes wait for the fsync).
        (1600.0, 700.0, 0.5, 0.5, 2, 700.0),
        # One core: the hash alone is 1 ms per MB.
        (1000.0, 5000.0, 0.0, 0.0, 1, 1000.0),
    ],
)
def test_cold_pull_ceiling(sha: float, disk: float, write_cpu: float,
                           direct_cpu: float, cores: int, want: float) -> None:
    assert cold_pull_ceiling(sha, disk, write_cpu, direct_cpu, cores) == pytest.approx(
        want)


def test_cold_pull_ceiling_limit_per_direct_pull() -> None:
    limits = {'sha256_MBps': {'median': 1600.0}, 'disk_write_fsync_MBps': {'median': 900.0},
              'disk_write_cpu_ms_per_MB': {'median': 0.5}}
    lim = cold_pull_ceiling_limit(limits, [0.5, 1.0, 0.25], 2)
    assert lim['samples'] == pytest.approx([900.0, 2000 / 3.125, 900.0])  # 941 > 900
    assert lim['median'] == pytest.approx(900.0)


def test_every_ceiling_names_a_limit_the_bench_measures() -> None:
    measured = {
        'sha256_MBps',
        'disk_write_fsync_MBps',
        'disk_write_cpu_ms_per_MB',
        'fsync_4k_ms',
        'loopback_tcp_MBps',
        'push_ceiling_MBps',
        'cold_pull_ceiling_MBps',
        'falcon_bare_head_rps',
        'falcon_bare_get_rps',
    }
    assert {c.limit for c in CEILINGS} <= measured


# -- plans ---------------------------------------------------------------------------


def test_space_needed() -> None:
    # quick: per server 1 x 2 x 256 MiB + 256 MiB + 1 x 8 x 16 MiB = 896 MiB
    assert QUICK.space_needed(2) == 256 * MiB + 2 * 896 * MiB + 2 * GiB
    # full: per server 5 x 2 GiB + 1 GiB + 3 x 8 x 64 MiB = 12.5 GiB
    assert FULL.space_needed(1) == GiB + 12 * GiB + 512 * MiB + 2 * GiB


def test_space_needed_by_the_replicas_and_the_cache() -> None:
    base = QUICK.space_needed(2)
    # the replicas' S3: 1 x 2 x 256 MiB; the cache and its upstream: 1 x 2 x 256 MiB
    assert QUICK.space_needed(2, scaleout=True) == base + 512 * MiB
    assert QUICK.space_needed(2, cache=True) == base + 512 * MiB
    # full: the S3 server 5 x 2 GiB, the cache 3 x 2 GiB
    assert FULL.space_needed(1, True, True) == FULL.space_needed(1) + 16 * GiB
