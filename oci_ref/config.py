"""Settings: one frozen value, filled from flags > ``OCI_REF_*`` env > TOML file > defaults.

Every field can be set in all three places under the same name: ``--manifest-max-bytes``,
``OCI_REF_MANIFEST_MAX_BYTES``, ``manifest_max_bytes = …`` in the TOML file.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tempfile
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from oci_ref.upstream.config import Upstream

ENV_PREFIX = 'OCI_REF_'
# Handed from `oci-ref serve` to each uvicorn worker process (workers re-import the
# app and cannot receive Python objects).
RESOLVED_ENV = 'OCI_REF__RESOLVED_CONFIG'
# Settings that may hold credentials (webhook URLs often carry a token) never travel
# in that variable (every child process and /proc/<pid>/environ would show them):
# they go in a 0600 file whose path is in this one.
SECRETS_ENV = 'OCI_REF__SECRETS_FILE'
# metadata_store: a PostgreSQL URL may carry a password.
SECRET_SETTINGS = ('hooks', 'metadata_store')
POSTGRES_SCHEMES = ('postgresql://', 'postgres://')


class ConfigError(ValueError):
    pass


def _help(text: str) -> dict[str, str]:
    return {'help': text}


@dataclass(frozen=True)
class Config:
    listen: str = field(default='127.0.0.1:5000', metadata=_help('host:port to serve on'))
    root: Path = field(default=Path('./data'), metadata=_help('storage directory'))
    workers: int = field(default=1, metadata=_help('uvicorn worker processes'))
    log_level: str = field(default='info', metadata=_help('debug, info, warning, error'))
    access_log: bool = field(default=True, metadata=_help('one log line per request'))
    ui: bool = field(default=True, metadata=_help('serve the web view at /ui/'))
    # §Pushing Manifests: SHOULD accept at least 4 MB; larger -> 413.
    manifest_max_bytes: int = field(
        default=4 * 1024 * 1024, metadata=_help('largest manifest accepted (bytes)')
    )
    # A page without `n` (or with a larger one) stops here and carries a Link.
    page_max: int = field(default=10000, metadata=_help('most tags/repositories per page'))
    referrers_page_max: int = field(
        default=1000, metadata=_help('most referrers per page')
    )
    fsync: bool = field(default=True, metadata=_help('fsync blobs before committing'))
    # image-spec SHOULDs on manifest PUT (schemas/README.md); default: MUSTs only.
    strict: bool = field(
        default=False, metadata=_help('also refuse manifests that break a SHOULD of the '
                                      'image-spec (each refusal names the rule)')
    )
    lint: bool = field(
        default=False, metadata=_help('record requests that break or bend the spec, per '
                                      'client; report at /lint/report')
    )
    metadata_store: str = field(default='sqlite', metadata=_help(
        'where metadata lives: sqlite (<root>/oci-ref.db) or a PostgreSQL URL '
        '(postgresql://user@host/db, shared by replicas)'))
    metadata_pool: int = field(default=10, metadata=_help(
        'PostgreSQL connections per worker process'))
    blob_store: str = field(default='fs', metadata=_help(
        'where blobs live: fs (<root>/blobs) or s3 (an S3-compatible bucket)'))
    # S3-compatible blobs (blob_store = s3); credentials come from the standard
    # AWS_* environment variables or profile, never from here.
    s3_bucket: str = field(default='', metadata=_help('s3: the bucket'))
    s3_prefix: str = field(default='', metadata=_help('s3: key prefix inside the bucket'))
    s3_endpoint_url: str = field(default='', metadata=_help(
        's3: endpoint URL (empty: AWS, or AWS_ENDPOINT_URL_S3)'))
    s3_region: str = field(default='', metadata=_help(
        's3: region (empty: AWS_REGION / AWS_DEFAULT_REGION / profile)'))
    s3_path_style: bool = field(default=False, metadata=_help(
        's3: path-style addressing (Ceph RGW, Garage, loopback endpoints)'))
    s3_timeout: float = field(default=30.0, metadata=_help(
        's3: seconds one S3 call may take, then 503'))
    # §Pulling blobs: a registry may answer a blob GET with a redirect; clients
    # follow it without forwarding Authorization, so the URL carries its own.
    s3_redirect: bool = field(default=False, metadata=_help(
        's3: answer blob GETs with a redirect to a presigned URL (else stream)'))
    s3_redirect_ttl: int = field(default=300, metadata=_help(
        's3: seconds a presigned blob URL is valid'))
    busy_timeout_ms: int = field(default=10000, metadata=_help(
        'ms a metadata call waits for a lock held elsewhere, then 503'))
    # §Content Management: deletion MAY be disabled (405 UNSUPPORTED when it is).
    delete_manifests: bool = field(default=True, metadata=_help('allow manifest deletes'))
    delete_tags: bool = field(default=True, metadata=_help('allow tag deletes'))
    delete_blobs: bool = field(default=True, metadata=_help('allow blob deletes'))
    read_only: bool = field(default=False, metadata=_help('refuse every write (405)'))
    # §Pushing Manifests: a registry MAY reject a manifest whose descriptors reference
    # content it does not have (the default); with this on it accepts them, and that
    # content is simply absent (fsck notes it).
    sparse_manifests: bool = field(
        default=False, metadata=_help('accept manifests/indexes referencing absent '
                                      'blobs or manifests')
    )
    # §Mounting a blob from another repository: without `from`, a registry MAY mount
    # from any repository the caller may pull; off -> 202 (a normal upload).
    automatic_mount: bool = field(
        default=True, metadata=_help('mount without `from` from any readable repository')
    )
    # §Cancel a blob upload: the server SHOULD expire abandoned uploads.
    upload_ttl: int = field(
        default=86400, metadata=_help('seconds an idle upload session lives')
    )
    max_upload_sessions: int = field(
        default=1000, metadata=_help('open upload sessions at most (then 429); 0: no cap')
    )
    purge_interval: int = field(
        default=300, metadata=_help('seconds between purges of expired uploads')
    )
    hooks: tuple[str, ...] = field(
        default=(), metadata=_help('webhook URLs for push/pull/delete/mount events')
    )
    hook_queue: int = field(
        default=1000, metadata=_help('events queued at most per worker')
    )
    hook_retries: int = field(default=3, metadata=_help('retries per webhook delivery'))
    gc_interval: int = field(
        default=0, metadata=_help('seconds between online garbage collections; 0: off')
    )
    gc_grace: int = field(
        default=3600, metadata=_help('content younger than this is never collected (s)')
    )
    gc_untagged: bool = field(
        default=False, metadata=_help('online GC also removes untagged manifests')
    )
    auth: str = field(default='none', metadata=_help('none, basic or token'))
    htpasswd: Path | None = field(
        default=None, metadata=_help('users: an htpasswd file with bcrypt entries')
    )
    access: Path | None = field(
        default=None, metadata=_help('per-repository rules (TOML); default: users may '
                                     'do everything')
    )
    anonymous_read: bool = field(
        default=False, metadata=_help('with auth on, anyone may pull')
    )
    token_service: str = field(default='oci-ref', metadata=_help('token auth service'))
    token_ttl: int = field(default=300, metadata=_help('seconds a bearer token lives'))
    token_realm: str = field(
        default='', metadata=_help('token endpoint URL in Bearer challenges; default: '
                                   '/token on the scheme and Host the request used')
    )
    health_open: bool = field(
        default=True, metadata=_help('with auth on, /healthz and /readyz need no login')
    )
    metrics_open: bool = field(
        default=False, metadata=_help('with auth on, /metrics needs no login')
    )
    login_failures: int = field(
        default=10, metadata=_help('failed logins per client per minute, then 429')
    )
    tls_cert: Path | None = field(default=None, metadata=_help('TLS certificate (PEM)'))
    tls_key: Path | None = field(default=None, metadata=_help('TLS private key (PEM)'))
    # Behaviours the spec allows, one switch each (oci_ref/variations.py, README).
    variations: tuple[str, ...] = field(
        default=(), metadata=_help('spec-allowed behaviours to show clients: '
                                   'NAME,... (see README "Variations")')
    )
    chunk_min_length: int = field(
        default=1024 * 1024, metadata=_help('with chunk-min-length: the smallest chunk '
                                            'but the last (bytes)')
    )
    redirect_listen: str = field(
        default='127.0.0.2:0', metadata=_help('with blob-redirect: host:port the blob '
                                              'redirect target listens on (0: any)')
    )
    # Fault injection (oci_ref/faults.py): ENDPOINTS:KIND[(PARAM)]=RATE,...
    faults: str = field(
        default='', metadata=_help('inject faults, e.g. blob-get:truncate=0.1,'
                                   '*:reset=0.05 (see README "Fault injection")')
    )
    faults_seed: int = field(
        default=-1, metadata=_help('seed of the fault draws; -1: a new one, logged')
    )
    # [[upstream]] tables (oci_ref/upstream/config.py); flag/env: name=url,...
    upstream: tuple[Upstream, ...] = field(
        default=(), metadata=_help('upstream registries to mirror, as name=url,...')
    )

    @property
    def host(self) -> str:
        host, _, _ = self.listen.rpartition(':')
        return host.strip('[]')

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(':')[2])

    @classmethod
    def load(
        cls,
        flags: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
        file: Path | None = None,
    ) -> Config:
        """Merge the sources; the config file may also be named by OCI_REF_CONFIG."""
        environ = os.environ if environ is None else environ
        flags = {k: v for k, v in (flags or {}).items() if v is not None}
        values: dict[str, Any] = {}
        file = file or (Path(environ['OCI_REF_CONFIG']) if 'OCI_REF_CONFIG' in environ
                        else None)
        if file is not None:
            import tomllib  # only with a settings file: a visible share of a start

            try:
                with open(file, 'rb') as f:
                    data = tomllib.load(f)
            except (OSError, tomllib.TOMLDecodeError) as ex:
                raise ConfigError(f'cannot read config file {file}: {ex}') from None
            unknown = set(data) - {f.name for f in fields(cls)}
            if unknown:
                raise ConfigError(f'{file}: unknown settings: {", ".join(sorted(unknown))}')
            values.update(data)
        for setting in fields(cls):
            env = environ.get(ENV_PREFIX + setting.name.upper())
            if env is not None:
                values[setting.name] = env
        values.update(flags)
        if 'upstream' in values or any(k.startswith(ENV_PREFIX + 'UPSTREAM_')
                                       for k in environ):
            from oci_ref.upstream.config import parse_upstreams  # here: an import cycle

            values['upstream'] = parse_upstreams(values.get('upstream', ()), environ)
        return cls(**{k: _convert(cls, k, v) for k, v in values.items()}).validated()

    def validated(self) -> Config:
        host, sep, port = self.listen.rpartition(':')
        if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ConfigError(f'listen must be host:port, got {self.listen!r}')
        if self.workers < 1:
            raise ConfigError('workers must be at least 1')
        if self.manifest_max_bytes < 4 * 1024 * 1024:
            raise ConfigError('manifest_max_bytes must be at least 4 MiB (spec SHOULD)')
        if self.page_max < 1 or self.referrers_page_max < 1:
            raise ConfigError('page sizes must be at least 1')
        for name in ('upload_ttl', 'purge_interval', 'hook_queue', 'gc_grace'):
            if getattr(self, name) < 1:
                raise ConfigError(f'{name} must be at least 1')
        for name in ('max_upload_sessions', 'hook_retries', 'gc_interval'):
            if getattr(self, name) < 0:
                raise ConfigError(f'{name} must not be negative')
        for i, url in enumerate(self.hooks, 1):
            if not url.startswith(('http://', 'https://')):
                # Not the URL itself: it may carry a token.
                raise ConfigError(f'hooks: URL {i} is not an http(s) URL')
        if self.token_realm and not _REALM.fullmatch(self.token_realm):
            raise ConfigError('token_realm must be an http(s) URL without spaces, '
                              'quotes or backslashes')
        if self.metadata_store != 'sqlite' and not self.metadata_store.startswith(
                POSTGRES_SCHEMES):
            # Not the value itself: a URL may carry a password.
            raise ConfigError('metadata_store must be sqlite or a postgresql:// URL')
        if self.metadata_pool < 1:
            raise ConfigError('metadata_pool must be at least 1')
        if self.blob_store not in ('fs', 's3'):
            raise ConfigError(f'blob_store must be fs or s3, not {self.blob_store!r}')
        if self.blob_store == 's3' and not self.s3_bucket:
            raise ConfigError('blob_store = s3 needs s3_bucket')
        if self.s3_timeout <= 0 or not 60 <= self.s3_redirect_ttl <= 7 * 86400:
            raise ConfigError('s3_timeout must be positive; s3_redirect_ttl between '
                              '60 s and 7 days (SigV4 presigning)')
        if self.busy_timeout_ms < 1:
            raise ConfigError('busy_timeout_ms must be at least 1')
        if self.auth not in ('none', 'basic', 'token'):
            raise ConfigError(f'auth must be none, basic or token, not {self.auth!r}')
        if self.auth == 'basic' and self.htpasswd is None:
            raise ConfigError('auth = basic needs htpasswd')
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError('tls_cert and tls_key go together')
        for name in ('htpasswd', 'access', 'tls_cert', 'tls_key'):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ConfigError(f'{name}: no such file {str(path)!r}')
        # Imported only when set (here: an import cycle): neither is on the
        # default start's path (issue 17).
        try:
            if self.faults:
                from oci_ref.faults import parse

                parse(self.faults)
            if self.variations:
                from oci_ref.variations import check_names

                check_names(self.variations)
        except ValueError as ex:  # FaultSpecError is one
            raise ConfigError(str(ex)) from None
        if self.faults_seed < -1 or self.chunk_min_length < 1:
            raise ConfigError('faults_seed is -1 or more; chunk_min_length at least 1')
        rhost, rsep, rport = self.redirect_listen.rpartition(':')
        if not rsep or not rhost or not rport.isdigit() or int(rport) > 65535:
            raise ConfigError(f'redirect_listen must be host:port, '
                              f'got {self.redirect_listen!r}')
        if self.token_ttl < 60 or self.login_failures < 1:
            raise ConfigError('token_ttl is at least 60 s; login_failures at least 1')
        return self

    def to_json(self, *, secrets: bool = True) -> str:
        return json.dumps({k: str(v) if isinstance(v, Path) else v
                           for k, v in dataclasses.asdict(self).items()
                           if secrets or k not in SECRET_SETTINGS}, default=str)

    def hand_to_workers(self, environ: MutableMapping[str, str]) -> Path | None:
        """Put this config where ``from_env`` finds it: the settings in ``environ``,
        the secret ones in a new 0600 file (returned: the caller removes it when the
        server stops). ``OCI_REF_<SECRET>`` variables are dropped from ``environ``."""
        environ[RESOLVED_ENV] = self.to_json(secrets=False)
        for name in SECRET_SETTINGS:
            environ.pop(ENV_PREFIX + name.upper(), None)
        environ.pop(SECRETS_ENV, None)
        defaults = {f.name: f.default for f in fields(self)}
        secret = {name: getattr(self, name) for name in SECRET_SETTINGS
                  if getattr(self, name) and getattr(self, name) != defaults[name]}
        if not secret:
            return None
        fd, name = tempfile.mkstemp(prefix='oci-ref-secrets-', suffix='.json')
        with os.fdopen(fd, 'w') as f:  # mkstemp: mode 0600
            json.dump(secret, f)
        environ[SECRETS_ENV] = name
        return Path(name)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        """The config ``hand_to_workers`` left, or one loaded from the sources."""
        environ = os.environ if environ is None else environ
        raw = environ.get(RESOLVED_ENV)
        if not raw:
            return cls.load(environ=environ)
        values = json.loads(raw)
        if environ.get(SECRETS_ENV):
            with open(environ[SECRETS_ENV]) as f:
                values.update(json.load(f))
        return cls(**{k: _convert(cls, k, v) for k, v in values.items()})

    @classmethod
    def from_json(cls, text: str) -> Config:
        return cls(**{k: _convert(cls, k, v) for k, v in json.loads(text).items()})


_REALM = re.compile(r'https?://[^\s"\\\x00-\x1f\x7f]+')


def parse_bool(value: Any) -> bool:
    """A switch from TOML (a bool) or a flag / the environment (1/0, true/false,
    yes/no, on/off); ValueError otherwise."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ('1', 'true', 'yes', 'on'):
        return True
    if text in ('0', 'false', 'no', 'off'):
        return False
    raise ValueError(value)


def _convert(cls: type[Config], name: str, value: Any) -> Any:
    types = {f.name: f.type for f in fields(cls)}
    if name not in types:
        raise ConfigError(f'unknown setting {name!r}')
    kind = types[name]
    try:
        if kind == 'bool':
            return parse_bool(value)
        if kind == 'int':
            if isinstance(value, bool):
                raise ValueError(value)
            return int(value)
        if kind == 'float':
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if kind == 'Path':
            return Path(value)
        if kind == 'Path | None':
            return None if value in (None, '') else Path(value)
        if kind == 'tuple[Upstream, ...]':
            if isinstance(value, (list, tuple)) and not value:
                return ()  # what every worker gets without upstreams: no import
            from oci_ref.upstream.config import parse_upstreams  # here: an import cycle

            return parse_upstreams(value)
        if kind == 'tuple[str, ...]':
            # A TOML array, or a comma-separated string (flags, environment).
            items = value if isinstance(value, (list, tuple)) else str(value).split(',')
            return tuple(str(v).strip() for v in items if str(v).strip())
        return str(value)
    except ValueError:
        raise ConfigError(f'{name}: invalid value {value!r} (expected {kind})') from None
