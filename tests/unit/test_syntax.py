"""oci_ref.syntax: the RFC grammars the image-spec borrows (RFC 6838, RFC 3986,
reverse domain notation, I-JSON strings)."""

from __future__ import annotations

import json

import pytest

from oci_ref.syntax import (
    is_reverse_domain,
    lone_surrogate,
    media_type_problem,
    media_type_strict_problem,
    uri_problem,
)

NAME_127 = 'a' * 127


@pytest.mark.parametrize('value', [
    'application/vnd.oci.image.manifest.v1+json',
    'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip',
    'text/plain', 'TEXT/Plain', 'a/b', '0/9', 'x/a!#$&^_.+-',
    f'{NAME_127}/{NAME_127}',
    'text/plain; charset=utf-8', 'text/plain;charset="utf-8"', 'a/b ; x=y ; z="a b"',
])
def test_rfc6838_media_types_pass(value: str) -> None:
    assert media_type_problem(value) is None


@pytest.mark.parametrize('value', [
    '', 'invalid', '/', 'a/', '/b', 'a/b/c', ' a/b', 'a/b ', 'a /b', '-a/b', 'a/.b',
    'a/b\n', f'{NAME_127}a/b', f'a/{NAME_127}b', 'a/b;', 'a/b; x', 'a/b; x=', 'ä/b',
    'a/b; x="unterminated', 'a/b*', 'a(b)/c',
])
def test_rfc6838_media_types_refused(value: str) -> None:
    assert media_type_problem(value) is not None


@pytest.mark.parametrize(('value', 'problem'), [
    ('text/plain', None),
    ('text/plain; charset=utf-8', 'parameters'),
    (f'{"a" * 65}/b', '64 characters'),
    (f'a/{"b" * 64}', None),
])
def test_rfc6838_strict_points(value: str, problem: str | None) -> None:
    found = media_type_strict_problem(value)
    assert (found is None) if problem is None else (problem in str(found))


@pytest.mark.parametrize('value', [
    'https://example.com/blob', 'http://u:p@h.example:8080/a/b?x=1&y=%20#frag',
    'https://[::1]/x', 'https://[v1.fe]/x', 'ftp://h/x', 'urn:isbn:0451450523',
    'file:///tmp/x', 'mailto:a@b.example', 'https://h/%41',
])
def test_rfc3986_uris_pass(value: str) -> None:
    assert uri_problem(value) is None


@pytest.mark.parametrize('value', [
    '', 'example.com/blob', '/relative/path', 'https://h/a b', 'https://h/%4', 'https://h/%zz',
    'https://h/x#a#b', 'https://[::1/x', 'https://[zz]/x', 'https://[fe80::1%eth0]/',
    '1http://h/', 'https://h/\n', 'https://h/ä', 'https://h/{x}', 'https://h/a\\b',
])
def test_rfc3986_uris_refused(value: str) -> None:
    assert uri_problem(value) is not None


@pytest.mark.parametrize(('key', 'ok'), [
    ('com.example.myKey', True), ('org.opencontainers.image.created', True),
    ('io.cncf.notary.x509chain.thumbprint#S256', True), ('vnd.docker.reference.type', True),
    ('a.b', True), ('key', False), ('', False), ('.com.example', False),
    ('com..example', False), ('-com.example', False), ('com.example', True),
    ('my key.x', False),
])
def test_reverse_domain_notation(key: str, ok: bool) -> None:
    assert is_reverse_domain(key) is ok


@pytest.mark.parametrize(('text', 'pointer'), [
    (r'{"a": "\ud800"}', '/a'),
    (r'{"a": ["ok", "x\udfffy"]}', '/a/1'),
    (r'{"a": {"b/c": "\uDBFF"}}', '/a/b~1c'),
    (r'{"\ud800k": "v"}', '/\\ud800k'),
    (r'{"a": "\ud83d\ude00"}', None),  # a valid pair is one character
    (r'{"a": "\\ud800"}', None),  # an escaped backslash, then text
    ('{"a": "plain"}', None),
])
def test_lone_surrogates_are_found_with_their_path(text: str, pointer: str | None) -> None:
    assert lone_surrogate(text, json.loads(text)) == pointer
