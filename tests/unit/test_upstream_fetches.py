"""The in-memory window of a pull-through download (oci_ref/upstream/fetches.py):
what readers take from it is byte-exact, it holds only a bounded tail, and it
drops only bytes that are already on the spool."""

from __future__ import annotations

import random

import pytest

from oci_ref.reference import Digest
from oci_ref.upstream.fetches import KEEP, SEND_MAX, Fetch

DIGEST = Digest.parse('sha256:' + '0' * 64)


@pytest.mark.parametrize('seed', [1, 2, 3])
def test_window_serves_exact_bytes_and_stays_bounded(seed: int) -> None:
    rng = random.Random(seed)
    data = rng.randbytes(24 * 1024 * 1024)
    fetch = Fetch('up', 'cache', DIGEST)
    pos = 0
    while pos < len(data):
        n = rng.choice([1, 4096, 65536, 262144, 300_001])
        fetch.publish(data[pos:pos + n])
        pos = min(pos + n, len(data))
        if rng.random() < 0.3:  # the spool catches up now and then
            fetch.spooled_to(rng.randint(fetch.spooled, fetch.published))
        held_from = fetch.held_from
        assert held_from is not None
        # Only bytes on the spool leave memory: a reader behind finds them there.
        assert held_from <= fetch.written == min(fetch.spooled, fetch.published)
        assert fetch.published - held_from <= (
            KEEP + fetch.published - fetch.spooled + 300_001)
        for _ in range(3):
            at = rng.randint(held_from, fetch.published - 1)
            end = rng.randint(at + 1, len(data))
            got = fetch.take(at, end)
            assert got == data[at:at + len(got)]
            assert 0 < len(got) <= min(SEND_MAX, end - at, fetch.published - at)
    assert fetch.published == len(data)


def test_nothing_is_dropped_before_it_is_on_the_spool() -> None:
    fetch = Fetch('up', 'cache', DIGEST)
    for _ in range(40):
        fetch.publish(b'x' * 1024 * 1024)
    assert fetch.held_from == 0  # nothing spooled: all of it is held
    fetch.spooled_to(30 * 1024 * 1024)
    held_from = fetch.held_from
    assert held_from is not None
    assert 30 * 1024 * 1024 - KEEP <= held_from <= 30 * 1024 * 1024
