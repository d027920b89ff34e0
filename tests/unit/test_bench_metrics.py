"""bench/metrics.py: the peak RSS of replicas is the largest replica's, not their sum
(each replica serves its own requests; the target is per process tree)."""

from __future__ import annotations

import os

from bench.metrics import peak_rss, vm_rss


def test_peak_rss_is_the_largest_groups_sum() -> None:
    me = os.getpid()
    one = vm_rss(me)
    assert one > 0
    # a group of the same process twice sums; the single one is the smaller group
    both = peak_rss([[me], [me, me]])
    assert 1.8 * one < both < 2.2 * one
    assert peak_rss([[me]]) < both


def test_peak_rss_of_nothing_is_zero() -> None:
    assert peak_rss([]) == 0
    assert peak_rss([[]]) == 0
    assert vm_rss(-1) == 0  # gone: counts as nothing
