"""The resumable SHA-2 the S3 store keeps between requests agrees with hashlib."""

from __future__ import annotations

import hashlib
import os

import pytest

from oci_ref.storage.resumable_hash import ResumableHash


@pytest.mark.parametrize('algorithm', ['sha256', 'sha512'])
@pytest.mark.parametrize('sizes', [[], [0], [1], [55, 9], [64, 64, 1], [1000, 3, 100_000]])
def test_saved_and_resumed_state_hashes_like_hashlib(algorithm, sizes):
    reference = hashlib.new(algorithm)
    state = ResumableHash(algorithm).state()
    for n in sizes:
        data = os.urandom(n)
        h = ResumableHash.resume(algorithm, state)  # as another process would
        h.update(data)
        reference.update(data)
        state = h.state()
    assert ResumableHash.resume(algorithm, state).hexdigest() == reference.hexdigest()


def test_update_takes_bytes_bytearray_and_memoryview_and_hexdigest_does_not_finish():
    h = ResumableHash('sha256')
    h.update(b'ab')
    h.update(bytearray(b'cd'))
    h.update(memoryview(b'xef')[1:])
    assert h.hexdigest() == hashlib.sha256(b'abcdef').hexdigest()
    h.update(b'g')  # reading the digest left the state usable
    assert h.hexdigest() == hashlib.sha256(b'abcdefg').hexdigest()
    assert h.copy().hexdigest() == h.hexdigest()


def test_a_state_of_another_algorithm_or_a_damaged_one_is_refused():
    state = ResumableHash('sha256').state()
    with pytest.raises(ValueError):
        ResumableHash.resume('sha512', state)
    with pytest.raises(ValueError):
        ResumableHash.resume('sha256', state[:-1])
    with pytest.raises(ValueError):
        ResumableHash('md5')
