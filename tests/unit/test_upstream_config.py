"""[[upstream]] tables: defaults, env overrides, and a clear error naming the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from oci_ref.config import Config, ConfigError
from oci_ref.upstream.config import Upstream, env_name, parse_upstreams

HUB = 'https://registry-1.docker.io'


def load(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> Config:
    path = tmp_path / 'oci-ref.toml'
    path.write_text(text)
    return Config.load(flags={}, environ=environ or {}, file=path)


def test_tables_from_the_config_file(tmp_path: Path) -> None:
    auth = tmp_path / 'auth.json'
    auth.write_text('{"auths": {}}')
    c = load(tmp_path, f'''
[[upstream]]
name = "docker.io"
url = "{HUB}"
credentials = "{auth}"
tag_ttl = 60
default = true
repositories = ["library/*", "bitnami/*"]

[[upstream]]
name = "ghcr.io"
url = "https://ghcr.io/"
tls_verify = true
connect_timeout = 2.5
read_timeout = 30
max_stale = 0
''')
    hub, ghcr = c.upstream
    assert hub == Upstream(
        name='docker.io', url=HUB, credentials=auth, tag_ttl=60, default=True,
        repositories=('library/*', 'bitnami/*'),
        namespaces=('docker.io', 'index.docker.io', 'registry-1.docker.io'),
        realm_hosts=('auth.docker.io',), library=True)
    assert ghcr.url == 'https://ghcr.io'  # normalised: no trailing slash
    assert ghcr.namespaces == ('ghcr.io',)
    assert (ghcr.connect_timeout, ghcr.read_timeout, ghcr.max_stale) == (2.5, 30.0, 0)
    assert ghcr.library is False and ghcr.realm_hosts == ()
    assert ghcr.allows('anything/at/all') and not hub.allows('someone/else')


def test_cache_max_bytes_parses_on_either_metadata_store(tmp_path: Path) -> None:
    (u,) = parse_upstreams([{'name': 'x', 'url': 'https://x', 'cache_max_bytes': '20 GiB',
                             'cache_touch_interval': '5'}])
    assert (u.cache_max_bytes, u.cache_touch_interval) == (20 * 1024**3, 5)
    table = '[[upstream]]\nname = "x"\nurl = "https://x"\ncache_max_bytes = "1 MB"\n'
    assert load(tmp_path, table).upstream[0].cache_max_bytes == 1000**2
    # Eviction is built on PostgreSQL too (oci_ref/storage/postgres_evict.py).
    config = load(tmp_path, 'metadata_store = "postgresql://h/db"\n' + table)
    assert config.upstream[0].cache_max_bytes == 1000**2


def test_no_upstreams_by_default() -> None:
    assert Config.load(flags={}, environ={}).upstream == ()


def test_compact_form_from_flag_and_env_with_per_upstream_overrides() -> None:
    environ = {'OCI_REF_UPSTREAM': f'docker.io={HUB}, quay.io=https://quay.io',
               'OCI_REF_UPSTREAM_DOCKER_IO_DEFAULT': 'yes',
               'OCI_REF_UPSTREAM_QUAY_IO_TAG_TTL': '5',
               'OCI_REF_UPSTREAM_QUAY_IO_REPOSITORIES': 'coreos/*,prometheus/*',
               # Secrets are the credential store's, not the config's.
               'OCI_REF_UPSTREAM_QUAY_IO_PASSWORD': 'not-in-the-config'}
    c = Config.load(flags={}, environ=environ)
    assert [u.name for u in c.upstream] == ['docker.io', 'quay.io']
    assert c.upstream[0].default and c.upstream[1].tag_ttl == 5
    assert c.upstream[1].repositories == ('coreos/*', 'prometheus/*')
    assert 'not-in-the-config' not in c.to_json()
    flagged = Config.load(flags={'upstream': 'ghcr.io=https://ghcr.io'},
                          environ={'OCI_REF_UPSTREAM': environ['OCI_REF_UPSTREAM']})
    assert [u.name for u in flagged.upstream] == ['ghcr.io']  # flag over env


def test_env_overrides_a_file_table(tmp_path: Path) -> None:
    c = load(tmp_path, '[[upstream]]\nname = "ghcr.io"\nurl = "https://ghcr.io"\n',
             {'OCI_REF_UPSTREAM_GHCR_IO_TAG_TTL': '7',
              'OCI_REF_UPSTREAM_GHCR_IO_TLS_VERIFY': 'off'})
    assert (c.upstream[0].tag_ttl, c.upstream[0].tls_verify) == (7, False)


def test_survives_the_hand_over_to_workers(tmp_path: Path) -> None:
    ca = tmp_path / 'ca.pem'
    ca.write_text('x')
    c = load(tmp_path, f'[[upstream]]\nname = "r.example"\nurl = "https://r.example:8443"'
                       f'\nca_file = "{ca}"\nnamespaces = ["r.example:8443"]\n')
    assert json.loads(c.to_json())['upstream'][0]['ca_file'] == str(ca)
    assert Config.from_json(c.to_json()) == c


def test_env_name() -> None:
    assert env_name('docker.io') == 'DOCKER_IO'
    assert env_name('my-reg.example.com') == 'MY_REG_EXAMPLE_COM'


@pytest.mark.parametrize(('table', 'message'), [
    ({'url': HUB}, 'upstream[0]: name is required'),
    ({'name': 'Docker.IO', 'url': HUB}, 'upstream[0] (Docker.IO): name must be one'),
    ({'name': 'reg:5000', 'url': HUB}, 'name must be one repository-name component'),
    ({'name': 'a/b', 'url': HUB}, 'name must be one'),
    ({'name': 'docker.io'}, 'upstream[0] (docker.io): url is required'),
    ({'name': 'x', 'url': 'ftp://x'}, 'url must be an http(s) URL'),
    ({'name': 'x', 'url': 'https://x/v2/'}, 'url is the registry root'),
    ({'name': 'x', 'url': 'https://u:p@x'}, 'url must not carry credentials'),
    ({'name': 'x', 'url': 'https://x', 'tag_ttl': -1}, 'tag_ttl must not be negative'),
    ({'name': 'x', 'url': 'https://x', 'tag_ttl': 'soon'},
     "upstream[0] (x): tag_ttl: invalid value 'soon' (expected an integer)"),
    ({'name': 'x', 'url': 'https://x', 'max_stale': -5}, 'max_stale must not be negative'),
    ({'name': 'x', 'url': 'https://x', 'tls_verify': 'maybe'}, 'tls_verify: invalid'),
    ({'name': 'x', 'url': 'https://x', 'read_timeout': 0}, 'read_timeout must be between'),
    ({'name': 'x', 'url': 'https://x', 'connect_timeout': 'x'}, 'connect_timeout: invalid'),
    ({'name': 'x', 'url': 'https://x', 'cache_max_bytes': '3 parsecs'},
     'cache_max_bytes: invalid'),
    ({'name': 'x', 'url': 'https://x', 'cache_touch_interval': -1},
     'cache_touch_interval must not be negative'),
    ({'name': 'x', 'url': 'https://x', 'repositories': []}, 'at least one pattern'),
    ({'name': 'x', 'url': 'https://x', 'repositories': ['']}, 'repositories: invalid'),
    ({'name': 'x', 'url': 'https://x', 'credentials': '/nonexistent/auth.json'},
     "credentials: no such file '/nonexistent/auth.json'"),
    ({'name': 'x', 'url': 'https://x', 'ca_file': '/nonexistent/ca'}, 'ca_file: no such'),
    ({'name': 'x', 'url': 'http://x', 'ca_file': '/etc/hostname'},
     'ca_file needs an https'),
    ({'name': 'x', 'url': 'https://x', 'ca_file': '/etc/hostname', 'tls_verify': False},
     'ca_file has no effect with tls_verify = false'),
    ({'name': 'x', 'url': 'https://x', 'namespaces': ['not a host']},
     "namespaces: 'not a host' is not a host[:port]"),
    ({'name': 'x', 'url': 'https://x', 'realm_hosts': ['a b']}, 'realm_hosts:'),
    ({'name': 'x', 'url': 'https://x', 'mirror': True}, 'unknown keys: mirror'),
])
def test_bad_table_names_the_key(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        parse_upstreams([table])
    assert message in str(info.value)


@pytest.mark.parametrize(('tables', 'message'), [
    ([{'name': 'a', 'url': 'https://a'}, {'name': 'a', 'url': 'https://b'}],
     'upstream (a): name is used twice'),
    ([{'name': 'a', 'url': 'https://a', 'default': True},
      {'name': 'b', 'url': 'https://b', 'default': True}],
     'default = true on more than one upstream: a, b'),
    ([{'name': 'a', 'url': 'https://a', 'namespaces': ['h.io']},
      {'name': 'b', 'url': 'https://b', 'namespaces': ['h.io']}],
     "upstream (b): namespaces: 'h.io' is also claimed by a"),
])
def test_bad_combination(tables: list[dict[str, object]], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_upstreams(tables)
    assert message in str(info.value)


def test_bad_file_shapes(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r'upstream\[0\]: must be a table'):
        load(tmp_path, 'upstream = ["docker.io"]\n')
    with pytest.raises(ConfigError, match='must be an array of tables'):
        load(tmp_path, '[upstream]\nname = "x"\n')
    with pytest.raises(ConfigError, match='is not name=url'):
        Config.load(flags={'upstream': 'docker.io'}, environ={})


def test_bad_environment_names_the_variable(tmp_path: Path) -> None:
    text = '[[upstream]]\nname = "ghcr.io"\nurl = "https://ghcr.io"\n'
    with pytest.raises(ConfigError, match="OCI_REF_UPSTREAM_GHCR_IO_TTL: 'ttl' is not"):
        load(tmp_path, text, {'OCI_REF_UPSTREAM_GHCR_IO_TTL': '1'})
    with pytest.raises(ConfigError, match='OCI_REF_UPSTREAM_QUAY_IO_TAG_TTL: no upstream'):
        load(tmp_path, text, {'OCI_REF_UPSTREAM_QUAY_IO_TAG_TTL': '1'})
    with pytest.raises(ConfigError, match=r'tag_ttl: invalid value'):
        load(tmp_path, text, {'OCI_REF_UPSTREAM_GHCR_IO_TAG_TTL': 'x'})


def test_bad_credentials_file_fails_at_start_without_echoing_it(tmp_path: Path) -> None:
    auth = tmp_path / 'auth.json'
    auth.write_text('{"auths": {"ghcr.io": {"auth": "c2VjcmV0LXdpdGhvdXQtY29sb24="}}}')
    with pytest.raises(ConfigError) as info:
        parse_upstreams([{'name': 'ghcr.io', 'url': 'https://ghcr.io',
                          'credentials': str(auth)}])
    assert 'upstream[0] (ghcr.io): credentials' in str(info.value)
    assert "auths['ghcr.io'].auth" in str(info.value)
    assert 'c2VjcmV0' not in str(info.value) and 'secret' not in str(info.value)


def test_cli_reports_a_bad_table_without_a_traceback(tmp_path: Path) -> None:
    import subprocess
    import sys
    path = tmp_path / 'bad.toml'
    path.write_text('[[upstream]]\nname = "ghcr.io"\nurl = "https://ghcr.io"\n'
                    'tag_ttl = -3\n')
    done = subprocess.run([sys.executable, '-m', 'oci_ref', 'serve', '--config', str(path),
                           '--root', str(tmp_path / 'data')],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert 'upstream[0] (ghcr.io): tag_ttl must not be negative' in done.stderr
    assert 'Traceback' not in done.stderr
