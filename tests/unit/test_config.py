"""Config: flags > OCI_REF_* environment > TOML file > defaults; bad values refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from oci_ref.config import RESOLVED_ENV, SECRETS_ENV, Config, ConfigError

MIB = 1024 * 1024


def toml(tmp_path: Path, text: str, name: str = 'oci-ref.toml') -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults():
    c = Config.load(flags={}, environ={})
    assert c == Config()
    assert c.listen == '127.0.0.1:5000'
    assert c.root == Path('./data')
    assert c.workers == 1
    assert c.log_level == 'info'
    assert c.access_log is True
    assert c.manifest_max_bytes == 4 * MIB
    assert c.page_max == 10000
    assert c.referrers_page_max == 1000
    assert c.fsync is True
    assert c.strict is False  # the image-spec's MUSTs only


def test_r50_default_manifest_limit_is_at_least_four_mib():
    assert Config().manifest_max_bytes >= 4 * MIB


def test_precedence_flag_over_env_over_file_over_default(tmp_path):
    file = toml(tmp_path, 'workers = 2\npage_max = 20\nreferrers_page_max = 30\n'
                          'log_level = "debug"\n')
    environ = {'OCI_REF_WORKERS': '3', 'OCI_REF_PAGE_MAX': '40'}
    flags = {'workers': '4'}
    c = Config.load(flags=flags, environ=environ, file=file)
    assert c.workers == 4  # flag
    assert c.page_max == 40  # env over file
    assert c.referrers_page_max == 30  # file over default
    assert c.log_level == 'debug'  # file
    assert c.manifest_max_bytes == 4 * MIB  # default


@pytest.mark.parametrize(('field', 'flag', 'env', 'file_value', 'expected_file'), [
    ('listen', '0.0.0.0:1', '0.0.0.0:2', '"0.0.0.0:3"', '0.0.0.0:3'),
    ('root', '/flag', '/env', '"/file"', Path('/file')),
    ('workers', '5', '6', '7', 7),
    ('log_level', 'error', 'warning', '"debug"', 'debug'),
    ('access_log', False, 'true', 'false', False),
    ('manifest_max_bytes', str(5 * MIB), str(6 * MIB), str(7 * MIB), 7 * MIB),
    ('page_max', '11', '12', '13', 13),
    ('referrers_page_max', '21', '22', '23', 23),
    ('fsync', True, 'off', 'true', True),
    ('strict', True, 'off', 'true', True),
])
def test_every_setting_in_all_three_places(tmp_path, field, flag, env, file_value,
                                           expected_file):
    file = toml(tmp_path, f'{field} = {file_value}\n')
    env_name = f'OCI_REF_{field.upper()}'
    from_file = Config.load(flags={}, environ={}, file=file)
    assert getattr(from_file, field) == expected_file
    from_env = Config.load(flags={}, environ={env_name: env}, file=file)
    assert getattr(from_env, field) != expected_file
    assert getattr(from_env, field) == getattr(
        Config.load(flags={}, environ={env_name: env}), field)
    from_flag = Config.load(flags={field: flag}, environ={env_name: env}, file=file)
    assert getattr(from_flag, field) == getattr(
        Config.load(flags={field: flag}, environ={}), field)
    assert getattr(from_flag, field) != getattr(from_env, field)


def test_none_flags_do_not_override(tmp_path):
    file = toml(tmp_path, 'workers = 2\n')
    c = Config.load(flags={'workers': None, 'fsync': None},
                    environ={'OCI_REF_FSYNC': 'no'}, file=file)
    assert c.workers == 2
    assert c.fsync is False


def test_config_file_named_by_oci_ref_config(tmp_path):
    file = toml(tmp_path, 'page_max = 77\n')
    c = Config.load(flags={}, environ={'OCI_REF_CONFIG': str(file)})
    assert c.page_max == 77


def test_explicit_file_wins_over_oci_ref_config(tmp_path):
    named = toml(tmp_path, 'page_max = 77\n', 'named.toml')
    explicit = toml(tmp_path, 'page_max = 88\n', 'explicit.toml')
    c = Config.load(flags={}, environ={'OCI_REF_CONFIG': str(named)}, file=explicit)
    assert c.page_max == 88


@pytest.mark.parametrize(('text', 'value'), [
    ('1', True), ('true', True), ('YES', True), ('on', True), (' True ', True),
    ('0', False), ('false', False), ('No', False), ('off', False),
])
def test_bool_spellings_from_env(text, value):
    c = Config.load(flags={}, environ={'OCI_REF_ACCESS_LOG': text})
    assert c.access_log is value


def test_env_values_are_converted_to_their_types():
    c = Config.load(flags={}, environ={'OCI_REF_WORKERS': '8', 'OCI_REF_ROOT': '/srv/x',
                                       'OCI_REF_FSYNC': 'false'})
    assert c.workers == 8 and isinstance(c.workers, int)
    assert c.root == Path('/srv/x') and isinstance(c.root, Path)
    assert c.fsync is False


def test_s3_settings_from_env():
    c = Config.load(flags={}, environ={
        'OCI_REF_BLOB_STORE': 's3', 'OCI_REF_S3_BUCKET': 'layers',
        'OCI_REF_S3_PREFIX': '/reg/', 'OCI_REF_S3_PATH_STYLE': 'true',
        'OCI_REF_S3_TIMEOUT': '2.5', 'OCI_REF_S3_REDIRECT': 'on'})
    assert (c.blob_store, c.s3_bucket, c.s3_path_style, c.s3_redirect) == (
        's3', 'layers', True, True)
    assert c.s3_timeout == 2.5
    from oci_ref.storage.s3_client import S3Settings

    assert S3Settings.from_config(c).prefix == 'reg/'


def test_unrelated_environment_variables_are_ignored():
    c = Config.load(flags={}, environ={'OCI_REF_UNKNOWN': 'x', 'PATH': '/bin',
                                       'WORKERS': '9'})
    assert c == Config()


@pytest.mark.parametrize('environ', [
    {'OCI_REF_WORKERS': 'abc'},
    {'OCI_REF_WORKERS': '1.5'},
    {'OCI_REF_WORKERS': '0'},
    {'OCI_REF_WORKERS': '-1'},
    {'OCI_REF_PAGE_MAX': '0'},
    {'OCI_REF_REFERRERS_PAGE_MAX': '0'},
    {'OCI_REF_MANIFEST_MAX_BYTES': str(4 * MIB - 1)},
    {'OCI_REF_MANIFEST_MAX_BYTES': 'lots'},
    {'OCI_REF_FSYNC': 'maybe'},
    {'OCI_REF_ACCESS_LOG': ''},
    {'OCI_REF_LISTEN': 'nohost'},
    {'OCI_REF_LISTEN': ':5000'},
    {'OCI_REF_LISTEN': 'localhost:'},
    {'OCI_REF_LISTEN': 'localhost:http'},
    {'OCI_REF_LISTEN': 'localhost:65536'},
    {'OCI_REF_LISTEN': 'localhost:-1'},
    {'OCI_REF_BLOB_STORE': 'gcs'},
    {'OCI_REF_BLOB_STORE': 's3'},  # without a bucket
    {'OCI_REF_BLOB_STORE': 's3', 'OCI_REF_S3_BUCKET': 'b', 'OCI_REF_S3_TIMEOUT': '0'},
    {'OCI_REF_S3_TIMEOUT': 'soon'},
    {'OCI_REF_S3_REDIRECT_TTL': '10'},  # SigV4 presigning: 60 s to 7 days
])
def test_bad_environment_values_raise_config_error(environ):
    with pytest.raises(ConfigError):
        Config.load(flags={}, environ=environ)


@pytest.mark.parametrize('flags', [
    {'workers': 'many'}, {'page_max': -5}, {'manifest_max_bytes': 1024},
    {'fsync': 'sometimes'}, {'listen': 'host-without-port'},
])
def test_bad_flag_values_raise_config_error(flags):
    with pytest.raises(ConfigError):
        Config.load(flags=flags, environ={})


@pytest.mark.parametrize('text', [
    'workers = true\n',  # a bool is not an int
    'workers = "two"\n',
    'fsync = "perhaps"\n',
    'manifest_max_bytes = 1000\n',
    'page_max = 0\n',
    'listen = "localhost:99999"\n',
])
def test_bad_file_values_raise_config_error(tmp_path, text):
    with pytest.raises(ConfigError):
        Config.load(flags={}, environ={}, file=toml(tmp_path, text))


def test_unknown_toml_keys_are_rejected(tmp_path):
    file = toml(tmp_path, 'workers = 2\nworker = 3\nmanifest_max = 5\n')
    with pytest.raises(ConfigError) as info:
        Config.load(flags={}, environ={}, file=file)
    assert 'worker' in str(info.value)
    assert 'manifest_max' in str(info.value)


def test_toml_tables_are_unknown_keys(tmp_path):
    with pytest.raises(ConfigError):
        Config.load(flags={}, environ={}, file=toml(tmp_path, '[server]\nworkers = 2\n'))


def test_unknown_flag_is_rejected():
    with pytest.raises(ConfigError):
        Config.load(flags={'no_such_setting': 1}, environ={})


def test_malformed_toml_raises_config_error(tmp_path):
    with pytest.raises(ConfigError):
        Config.load(flags={}, environ={}, file=toml(tmp_path, 'workers = = 2\n'))


def test_missing_config_file_raises_config_error(tmp_path):
    with pytest.raises(ConfigError):
        Config.load(flags={}, environ={}, file=tmp_path / 'absent.toml')
    with pytest.raises(ConfigError):
        Config.load(flags={}, environ={'OCI_REF_CONFIG': str(tmp_path / 'absent.toml')})


@pytest.mark.parametrize(('listen', 'host', 'port'), [
    ('127.0.0.1:5000', '127.0.0.1', 5000),
    ('0.0.0.0:0', '0.0.0.0', 0),
    ('[::1]:8080', '::1', 8080),
    ('localhost:65535', 'localhost', 65535),
])
def test_listen_host_and_port(listen, host, port):
    c = Config.load(flags={'listen': listen}, environ={})
    assert (c.host, c.port) == (host, port)


def test_json_round_trip_for_worker_processes(tmp_path):
    c = Config.load(flags={'root': str(tmp_path), 'workers': '3', 'fsync': False,
                           'manifest_max_bytes': str(8 * MIB)}, environ={})
    again = Config.from_json(c.to_json())
    assert again == c
    assert isinstance(again.root, Path)
    assert RESOLVED_ENV.startswith('OCI_REF_')


def test_secret_settings_reach_workers_by_a_private_file_not_the_environment(tmp_path):
    """Webhook URLs (often with tokens) are not in the resolved-config variable nor
    left in OCI_REF_HOOKS; workers read them from a 0600 file."""
    hook = 'https://user:pw@hooks.example/x?token=Tok3n-771'
    environ = {'OCI_REF_HOOKS': hook, 'OCI_REF_WORKERS': '2'}
    c = Config.load(flags={'root': str(tmp_path)}, environ=environ)
    assert c.hooks == (hook,)
    secrets_file = c.hand_to_workers(environ)
    try:
        assert secrets_file is not None
        assert secrets_file.stat().st_mode & 0o777 == 0o600
        assert not any('Tok3n-771' in v for v in environ.values()), environ
        assert 'OCI_REF_HOOKS' not in environ
        assert environ[SECRETS_ENV] == str(secrets_file)
        assert Config.from_env(environ) == c
    finally:
        secrets_file.unlink()
    # Without secret settings there is no file, and nothing names one.
    plain = Config(root=tmp_path)
    environ = {SECRETS_ENV: '/stale/path'}
    assert plain.hand_to_workers(environ) is None
    assert SECRETS_ENV not in environ
    assert Config.from_env(environ) == plain


def test_a_bad_hook_url_is_reported_without_its_text():
    with pytest.raises(ConfigError) as raised:
        Config(hooks=('ftp://user:Secr3t@h/x',)).validated()
    assert 'Secr3t' not in str(raised.value) and 'URL 1' in str(raised.value)


def test_config_is_frozen():
    c = Config()
    with pytest.raises(AttributeError):
        c.workers = 2  # type: ignore[misc]
