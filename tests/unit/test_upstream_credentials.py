"""Upstream credentials from auth.json / config.json and the environment."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from oci_ref.config import ConfigError
from oci_ref.upstream.config import parse_upstreams
from oci_ref.upstream.credentials import Credentials, CredentialStore, read_file


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def write(tmp_path: Path, auths: object) -> Path:
    path = tmp_path / 'auth.json'
    path.write_text(json.dumps({'auths': auths}))
    return path


def store(tmp_path: Path, auths: object, url: str, name: str,
          environ: dict[str, str] | None = None) -> CredentialStore:
    path = write(tmp_path, auths)
    (u,) = parse_upstreams([{'name': name, 'url': url, 'credentials': str(path)}])
    return CredentialStore(u, environ or {})


def test_entry_forms(tmp_path: Path) -> None:
    entries = read_file(write(tmp_path, {
        'a.io': {'auth': b64('alice:pw:with:colons')},
        'https://b.io/v2/': {'username': 'bob', 'password': 'pw'},
        'c.io': {'identitytoken': 'refresh-me'},
        'http://d.io:5000': {'auth': b64('dave:x'), 'identitytoken': 'tok'},
    }))
    assert entries['a.io'] == Credentials('alice', 'pw:with:colons')
    assert entries['b.io'] == Credentials('bob', 'pw')
    assert entries['c.io'] == Credentials('', '', 'refresh-me')
    assert entries['d.io:5000'] == Credentials('dave', 'x', 'tok')


def test_docker_hub_key(tmp_path: Path) -> None:
    s = store(tmp_path, {'https://index.docker.io/v1/': {'auth': b64('hub:pw')}},
              'https://registry-1.docker.io', 'docker.io')
    assert s.for_repository('library/alpine') == Credentials('hub', 'pw')


def test_api_host_and_ns_keys(tmp_path: Path) -> None:
    s = store(tmp_path, {'r.example:8443': {'auth': b64('u:p')}},
              'https://r.example:8443', 'r.example')
    assert s.for_repository('x/y') == Credentials('u', 'p')


def test_most_specific_entry_wins(tmp_path: Path) -> None:
    s = store(tmp_path, {'ghcr.io': {'auth': b64('host:1')},
                         'ghcr.io/org': {'auth': b64('org:2')},
                         'ghcr.io/org/app': {'auth': b64('app:3')}},
              'https://ghcr.io', 'ghcr.io')
    assert s.for_repository('org/app').username == 'app'
    assert s.for_repository('org/other').username == 'org'
    assert s.for_repository('orgx/app').username == 'host'
    assert s.for_repository('other').username == 'host'


def test_no_entry_is_anonymous(tmp_path: Path) -> None:
    s = store(tmp_path, {'quay.io': {'auth': b64('q:p')}}, 'https://ghcr.io', 'ghcr.io')
    assert s.for_repository('org/app') is None


def test_environment_wins(tmp_path: Path) -> None:
    s = store(tmp_path, {'ghcr.io': {'auth': b64('file:pw')}}, 'https://ghcr.io',
              'ghcr.io', {'OCI_REF_UPSTREAM_GHCR_IO_USERNAME': 'env',
                          'OCI_REF_UPSTREAM_GHCR_IO_PASSWORD': 'env-pw'})
    assert s.for_repository('org/app') == Credentials('env', 'env-pw')
    (u,) = parse_upstreams([{'name': 'ghcr.io', 'url': 'https://ghcr.io'}])
    token = CredentialStore(u, {'OCI_REF_UPSTREAM_GHCR_IO_IDENTITY_TOKEN': 't'})
    assert token.for_repository('a') == Credentials('', '', 't')
    with pytest.raises(ConfigError, match='PASSWORD is set without'):
        CredentialStore(u, {'OCI_REF_UPSTREAM_GHCR_IO_PASSWORD': 'p'})


def test_secrets_never_in_repr() -> None:
    c = Credentials('alice', 'hunter2-secret', 'identity-secret')
    for text in (repr(c), str(c), f'{c}', repr([c]), repr({'c': c})):
        assert 'hunter2' not in text and 'identity-secret' not in text
        assert 'alice' in text


@pytest.mark.parametrize(('content', 'message'), [
    ('not json', 'is not JSON'),
    ('[]', 'has no "auths" object'),
    ('{"auths": []}', 'has no "auths" object'),
    ('{"auths": {"x.io": "str"}}', "auths['x.io'] is not an object"),
    ('{"auths": {"x.io": {"auth": "***"}}}', "auths['x.io'].auth is not base64"),
    ('{"auths": {"x.io": {"username": 5}}}', 'are strings'),
])
def test_bad_files(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / 'auth.json'
    path.write_text(content)
    with pytest.raises(ConfigError, match=None) as info:
        read_file(path, 'upstream[0] (x.io): credentials')
    assert message in str(info.value)
    assert str(info.value).startswith('upstream[0] (x.io): credentials')
