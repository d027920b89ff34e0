"""The spec's grammars: repository names (R07, R08), tags (R09), digests (image-spec
descriptor.md §Digests and §Registered algorithms)."""

from __future__ import annotations

import hashlib

import pytest

from oci_ref.errors import ErrorCode, RegistryError
from oci_ref.reference import (
    Digest,
    digest_problem,
    is_digest_reference,
    is_valid_name,
    is_valid_tag,
    parse_algorithm,
    validate_name,
)

HEX64 = hashlib.sha256(b'x').hexdigest()
HEX128 = hashlib.sha512(b'x').hexdigest()


# -- names -------------------------------------------------------------------------


@pytest.mark.parametrize('name', [
    'a', '0', 'library/ubuntu', 'a/b/c/d/e/f', 'a.b', 'a_b', 'a__b', 'a-b', 'a--b',
    'a---------b', 'a.b_c__d-e/f0.g', '123/456', 'x' * 255,
    '/'.join(['ab'] * 85),  # 254 characters, 85 components
    'manifests/blobs/tags/uploads/referrers',
])
def test_r07_valid_names(name):
    assert is_valid_name(name)
    assert validate_name(name) == name


@pytest.mark.parametrize('name', [
    '', 'A', 'Library/ubuntu', 'library/Ubuntu', 'a//b', '/a', 'a/', '-a', 'a-', '_a',
    'a_', '.a', 'a.', 'a..b', 'a._b', 'a___b', 'a_-b', 'a/.b', 'a/-b', 'a b', 'a:b',
    'a@b', 'ü', 'a\nb', 'a+b', 'a%2Fb',
])
def test_r07_invalid_names(name):
    assert not is_valid_name(name)


def test_r08_names_are_at_most_255_characters():
    assert is_valid_name('a' * 255)
    assert not is_valid_name('a' * 256)
    long_path = '/'.join(['abc'] * 64)  # 255 characters
    assert len(long_path) == 255 and is_valid_name(long_path)
    assert not is_valid_name(long_path + 'd')


def test_r07_validate_name_raises_400_name_invalid_with_detail():
    with pytest.raises(RegistryError) as info:
        validate_name('Upper')
    ex = info.value
    assert ex.code is ErrorCode.NAME_INVALID
    assert ex.status == 400
    detail = ex.entries[0].detail
    assert detail['name'] == 'Upper'
    assert 'rule' in detail


def test_r07_validate_name_truncates_huge_names_in_the_detail():
    with pytest.raises(RegistryError) as info:
        validate_name('a' * 10000)
    assert len(info.value.entries[0].detail['name']) <= 300


# -- tags --------------------------------------------------------------------------


@pytest.mark.parametrize('tag', [
    'latest', 'v1.0.0', 'LATEST', '_', '_private', '0', '1.0-rc.1', 'a' * 128,
    'A' + '-' * 127, 'sha256-' + HEX64, 'sha256-' + HEX64 + '.sig', 'test0', 'TEST0',
    'x_y.z-W',
])
def test_r09_valid_tags(tag):
    assert is_valid_tag(tag)


@pytest.mark.parametrize('tag', [
    '', 'a' * 129, '-a', '.a', '.INVALID_MANIFEST_NAME', 'a:b', 'a/b', 'a b', 'a+b',
    'a@b', 'ü', 'a\n', '\na',
])
def test_r09_invalid_tags(tag):
    assert not is_valid_tag(tag)


# -- digests -------------------------------------------------------------------------


@pytest.mark.parametrize('value', [f'sha256:{HEX64}', f'sha512:{HEX128}'])
def test_digest_registered_algorithms_parse(value):
    d = Digest.parse(value)
    assert str(d) == value
    assert digest_problem(value) is None
    algorithm, encoded = value.split(':')
    assert (d.algorithm, d.encoded) == (algorithm, encoded)


@pytest.mark.parametrize('value', [
    f'sha256:{HEX64.upper()}',  # upper-case hex MUST NOT be used
    f'sha256:{HEX64[:-1]}A',
    f'sha512:{HEX128.upper()}',
    f'sha256:{HEX64[:-1]}',  # 63
    f'sha256:{HEX64}0',  # 65
    f'sha256:{HEX128}',  # sha512 length under sha256
    f'sha512:{HEX64}',  # sha256 length under sha512
    f'sha512:{HEX128[:-1]}',
    f'sha256:{HEX64[:-1]}g',  # not hex
    f'SHA256:{HEX64}',  # algorithm is lower case
    f'md5:{hashlib.md5(b"x").hexdigest()}',  # unregistered algorithm
    f'sha384:{hashlib.sha384(b"x").hexdigest()}',
    f'sha256+b64u:{HEX64}',  # grammatical, unregistered
    f'sha256:{HEX64}:',
    'sha256:',
    ':' + HEX64,
    HEX64,
    'sha256:baddigeststring',
    'sha256:totallywrong',
    '',
    f' sha256:{HEX64}',
    f'sha256:{HEX64} ',
    f'sha256:{HEX64}\n',
])
def test_digest_rejected_with_400_digest_invalid(value):
    assert digest_problem(value) is not None
    with pytest.raises(RegistryError) as info:
        Digest.parse(value)
    assert info.value.code is ErrorCode.DIGEST_INVALID
    assert info.value.status == 400
    assert info.value.entries[0].detail['rule']


def test_digest_problem_says_which_rule_failed():
    assert 'unsupported algorithm' in digest_problem(f'md5:{"a" * 32}')
    assert '64 lower-case hex' in digest_problem(f'sha256:{HEX64.upper()}')
    assert '128 lower-case hex' in digest_problem(f'sha512:{HEX64}')
    assert '<algorithm>:<encoded>' in digest_problem('nonsense')


@pytest.mark.parametrize('algorithm', ['sha256', 'sha512'])
def test_digest_of_matches_hashlib(algorithm):
    data = b'some content'
    d = Digest.of(data, algorithm)
    assert str(d) == f'{algorithm}:{hashlib.new(algorithm, data).hexdigest()}'
    h = d.hasher()
    h.update(data)
    assert h.hexdigest() == d.encoded
    assert Digest.parse(str(d)) == d


def test_digest_of_defaults_to_sha256():
    assert Digest.of(b'').algorithm == 'sha256'
    assert str(Digest.of(b'')) == (
        'sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855')


@pytest.mark.parametrize('value', ['sha256', 'sha512'])
def test_parse_algorithm_accepts_registered(value):
    assert parse_algorithm(value) == value


@pytest.mark.parametrize('value', ['SHA256', 'md5', 'sha384', 'sha256 ', '', 'blake3'])
def test_parse_algorithm_rejects_others_with_digest_invalid(value):
    with pytest.raises(RegistryError) as info:
        parse_algorithm(value)
    assert info.value.code is ErrorCode.DIGEST_INVALID
    assert info.value.status == 400


@pytest.mark.parametrize(('reference', 'is_digest'), [
    (f'sha256:{HEX64}', True),
    ('sha256:bad', True),
    ('a:b', True),
    ('latest', False),
    (f'sha256-{HEX64}', False),
    ('.INVALID_MANIFEST_NAME', False),
])
def test_r06_reference_is_a_digest_when_it_holds_a_colon(reference, is_digest):
    assert is_digest_reference(reference) is is_digest
