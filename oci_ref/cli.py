"""``oci-ref serve``, ``validate``, ``gc``, ``fsck``, ``migrate``, ...: thin wrappers over
the library."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import socket
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oci_ref import __version__
from oci_ref.config import Config, ConfigError

if TYPE_CHECKING:
    from oci_ref.registry import Registry


def _serve_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser('serve', help='serve the registry (uvicorn + Falcon ASGI)')
    p.add_argument('--config', type=Path, help='TOML settings file (or OCI_REF_CONFIG)')
    for f in dataclasses.fields(Config):
        flag = '--' + f.name.replace('_', '-')
        helptext = f'{f.metadata.get("help", "")} (env OCI_REF_{f.name.upper()})'
        if f.type == 'bool':
            p.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                           default=None, help=helptext)
        else:
            p.add_argument(flag, dest=f.name, default=None, help=helptext)
    p.add_argument('--variation', dest='variation', action='append', metavar='NAME',
                   help='one variation (repeatable; adds to --variations)')


def serve(args: argparse.Namespace) -> int:
    flags = {f.name: getattr(args, f.name) for f in dataclasses.fields(Config)}
    if args.variation:
        flags['variations'] = ','.join([*filter(None, [flags['variations']]),
                                        *args.variation])
    try:
        config = Config.load(flags, os.environ, args.config)
    except ConfigError as ex:
        print(f'oci-ref: {ex}', file=sys.stderr)
        return 2
    config.root.mkdir(parents=True, exist_ok=True)
    # With several workers, each writes its request metrics here; /metrics merges
    # them. Set before prometheus_client is imported; emptied so a previous run is
    # not counted. One worker keeps them in memory: the sample files cost a
    # manifest HEAD a tenth of its CPU (issue 17).
    metrics_dir = config.root / '.metrics'
    shutil.rmtree(metrics_dir, ignore_errors=True)
    if config.workers > 1:
        metrics_dir.mkdir()
        os.environ['PROMETHEUS_MULTIPROC_DIR'] = str(metrics_dir)
    else:
        os.environ.pop('PROMETHEUS_MULTIPROC_DIR', None)
    import uvicorn  # imported late: `oci-ref validate` should not pay for it

    from oci_ref.app import check_access_files
    from oci_ref.auth import AuthError

    # Check the users and rules files before any worker starts: a bad one stops the
    # server, not each worker.
    try:
        check_access_files(config)
    except AuthError as ex:
        print(f'oci-ref: {ex}', file=sys.stderr)
        return 2
    from oci_ref.storage import StoreUnavailable

    # Migrate once, before several workers race to do it. With one worker and the
    # embedded stores, the worker migrates as it opens them (opening them twice was
    # a tenth of the start, issue 17); a shared engine is checked here too, so an
    # unreachable one stops the server with one clear line. Each worker purges
    # expired uploads as it starts (Lifecycle), before it answers. With token auth
    # the signing key is made here (or imported from <root>/.token-key), once, in
    # the metadata store every worker and replica reads it from.
    token = config.auth == 'token'
    if (token or config.workers > 1 or config.metadata_store != 'sqlite'
            or config.blob_store != 'fs'):
        try:
            _prepare_stores(config, token_key=token)
        except StoreUnavailable as ex:
            print(f'oci-ref: {ex}', file=sys.stderr)
            return 1
        except AuthError as ex:
            print(f'oci-ref: {ex}', file=sys.stderr)
            return 2
    config, extra = _faults_and_variations(config)
    secrets_file = config.hand_to_workers(os.environ)
    # uvicorn shuts down gracefully on SIGTERM, then restores the previous handler
    # and re-raises the signal; with Python's default that kills us (exit -15).
    # A stop on SIGTERM is a clean stop: exit 0, as on SIGINT.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    try:
        _run(uvicorn, config, extra)
    finally:
        if secrets_file is not None:
            secrets_file.unlink(missing_ok=True)
    return 0


def _prepare_stores(config: Config, *, token_key: bool) -> None:
    """Open (and so migrate) the stores once; with ``token_key``, make sure the
    metadata store holds a usable token signing key (AuthError if not)."""
    import asyncio

    from oci_ref.app import open_registry
    from oci_ref.auth import stored_signing_key

    registry = open_registry(config)
    try:
        if token_key:
            asyncio.run(stored_signing_key(registry.meta, config.root))
    finally:
        registry.close()


def _faults_and_variations(config: Config) -> tuple[Config, list[socket.socket]]:
    """One fault seed for every worker (logged, to replay a run); the blob-redirect
    target's socket, bound here so its port is known before the workers start."""
    extra: list[socket.socket] = []
    if config.faults and config.faults_seed < 0:
        from oci_ref.faults import new_seed

        config = dataclasses.replace(config, faults_seed=new_seed())
    if config.faults:
        print(f'oci-ref: faults {config.faults} seed {config.faults_seed}',
              file=sys.stderr, flush=True)
    if 'blob-redirect' in config.variations:
        host, _, port = config.redirect_listen.rpartition(':')
        host = host.strip('[]')
        sock = socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, int(port)))
        sock.set_inheritable(True)
        config = dataclasses.replace(
            config, redirect_listen=f'{config.redirect_listen.rpartition(":")[0]}:'
                                    f'{sock.getsockname()[1]}')
        print(f'oci-ref: blob-redirect target on {config.redirect_listen}',
              file=sys.stderr, flush=True)
        extra.append(sock)
    return config, extra


def _run(uvicorn: Any, config: Config, extra: list[socket.socket] | None = None
         ) -> None:
    settings: dict[str, Any] = dict(
        factory=True,
        host=config.host,
        port=config.port,
        workers=config.workers if config.workers > 1 else None,
        log_level=config.log_level,
        access_log=config.access_log,
        loop='uvloop',
        # httptools, with the parser's own refusals (a >64 KiB request line) in the
        # spec's error envelope and, on a plain port, one clear line when a client
        # tries TLS (oci_ref/protocol.py).
        http=('oci_ref.protocol:OCIHttpToolsProtocol' if config.tls_cert
              else 'oci_ref.protocol:PlainHTTPProtocol'),
        lifespan='on',  # background work: webhooks, purges, online GC
        # The spec's errors are ours to send; uvicorn's "Server" header adds nothing.
        server_header=False,
        ssl_certfile=str(config.tls_cert) if config.tls_cert else None,
        ssl_keyfile=str(config.tls_key) if config.tls_key else None,
        timeout_graceful_shutdown=10,
    )
    if not extra:
        uvicorn.run('oci_ref.app:create_app_from_env', **settings)
        return
    # A second listener (the blob-redirect target): uvicorn.run binds one socket,
    # Server.run and Multiprocess take several.
    from uvicorn.supervisors import Multiprocess

    settings['workers'] = config.workers
    uv_config = uvicorn.Config('oci_ref.app:create_app_from_env', **settings)
    sockets = [uv_config.bind_socket(), *extra]
    if config.workers > 1:
        Multiprocess(uv_config, sockets=sockets).run()
    else:
        uvicorn.Server(uv_config).run(sockets=sockets)


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _load(args: argparse.Namespace) -> Config | None:
    try:
        return Config.load({'root': args.root}, os.environ, args.config)
    except ConfigError as ex:
        print(f'oci-ref: {ex}', file=sys.stderr)
        return None


def _progress(phase: str, done: int, total: int) -> None:
    if sys.stderr.isatty():
        end = '\n' if done == total else ''
        print(f'\r{phase}: {done}/{total}', end=end, file=sys.stderr, flush=True)


@contextlib.contextmanager
def _registry(config: Config) -> Iterator[Registry]:
    from oci_ref.app import open_registry

    registry = open_registry(config)
    try:
        yield registry
    finally:
        registry.close()


def gc(args: argparse.Namespace) -> int:
    from oci_ref.gc import collect

    config = _load(args)
    if config is None:
        return 2
    grace = config.gc_grace if args.grace is None else args.grace
    cached = _cached(config)
    with _registry(config) as registry:
        report = asyncio.run(collect(registry, untagged=args.untagged, grace=grace,
                                     dry_run=args.dry_run, progress=_progress,
                                     cached=cached))
    if report is None:
        # The pass gives up rather than wait on the GC lock (gc.collect): held
        # exclusively by another pass, or shared by a blob commit for a moment.
        print('oci-ref gc: another collection is running, or a blob commit holds the '
              'GC lock for a moment; try again', file=sys.stderr)
        return 1

    def mark(repo: str) -> str:
        return ' (cached)' if cached(repo) else ''

    for repo, digest in report.manifests:
        print(f'manifest {repo}@{digest}{mark(repo)}')
    for repo, digest in report.links:
        print(f'link     {repo} -> {digest}{mark(repo)}')
    for digest in report.blobs + report.orphan_files:
        print(f'blob     {digest}')
    for name in report.repositories:
        print(f'repo     {name}')
    print(report.summary())
    kept = report.kept()
    if kept:
        print(kept)
    return 0


def _cached(config: Config) -> Callable[[str], bool]:
    """Whether a repository is a pull-through cache's (under an upstream's prefix)."""
    from oci_ref.upstream.routing import reserved_by

    def cached(repo: str) -> bool:
        return reserved_by(repo, config.upstream) is not None

    return cached


def fsck(args: argparse.Namespace) -> int:
    from oci_ref.gc import Problem, census
    from oci_ref.gc import fsck as check

    config = _load(args)
    if config is None:
        return 2

    async def run(registry: Registry) -> tuple[list[Problem], dict[str, dict[str, int]]]:
        problems = await check(registry, repair=args.repair, progress=_progress,
                               cached=_cached(config))
        # Pushed and cached content apart (issue 13), with upstreams configured.
        counts = (await census(registry, [u.name for u in config.upstream])
                  if config.upstream else {})
        return problems, counts

    with _registry(config) as registry:
        problems, counts = asyncio.run(run(registry))
    serious = sum(p.serious for p in problems)
    notices = len(problems) - serious
    repaired = bool(args.repair and serious)
    for p in problems:
        if args.json:
            print(json.dumps(p.to_dict()))
        else:
            level = 'ERROR ' if p.serious else 'notice'
            print(f'{level} {p.kind}: {p.subject}: {p.detail}')
    if args.json:
        # Always last, clean or not: a consumer can tell "all clean" from "fsck
        # printed nothing because it died" only by this line.
        print(json.dumps({'kind': 'summary', 'problems': serious, 'notices': notices,
                          'repaired': repaired, **counts}))
    else:
        done = ' (repaired: moved to quarantine/)' if repaired else ''
        if counts:
            print('checked: {} pushed manifests, {} pushed blobs; {} cached manifests, '
                  '{} cached blobs'.format(
                      counts['pushed']['manifests'], counts['pushed']['blobs'],
                      counts['cached']['manifests'], counts['cached']['blobs']))
        print(f'{serious} problems, {notices} notices{done}')
    return 1 if serious else 0


def prefetch(args: argparse.Namespace) -> int:
    """Fill the pull-through cache (issue 13): each image, every platform, its
    referrers and their blobs."""
    from oci_ref.upstream.cache import PullThrough
    from oci_ref.upstream.pool import Upstreams
    from oci_ref.upstream.prefetch import prefetch as fill

    config = _load(args)
    if config is None:
        return 2
    if not config.upstream:
        print('oci-ref: prefetch needs [[upstream]] tables (--config)', file=sys.stderr)
        return 2

    async def run(registry: Registry) -> int:
        cache = PullThrough(registry, Upstreams(
            config.upstream, manifest_max_bytes=config.manifest_max_bytes))
        try:
            report = await fill(cache, args.references, _progress)
        finally:
            await cache.aclose()
        for failure in report.failed:
            print(f'oci-ref: prefetch: {failure}', file=sys.stderr)
        print(f'{report.manifests} manifests, {report.blobs} blobs fetched '
              f'({report.bytes} bytes), {len(report.failed)} failed')
        return 1 if report.failed else 0

    with _registry(config) as registry:
        return asyncio.run(run(registry))


# The target's settings `oci-ref migrate` takes as flags: the stores' own, named as
# `oci-ref serve` names them (copy them from the replicas' command line).
TARGET_SETTINGS = ('root', 'metadata_store', 'metadata_pool', 'blob_store',
                   's3_bucket', 's3_prefix', 's3_endpoint_url', 's3_region',
                   's3_path_style', 's3_timeout', 'busy_timeout_ms', 'fsync')


def _migrate_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    m = sub.add_parser(
        'migrate', help='copy a single-node registry onto other stores '
        '(PostgreSQL + S3), verifying every digest; safe to run again',
        description='The source is this node, named as gc and fsck name it '
        '(--root/--config; always its SQLite file and blob directory). The target '
        'is named as the replicas name it: --to-config (their TOML file), '
        'OCI_REF_* variables, or the store flags below.')
    m.add_argument('--root', type=Path, help='source storage directory (or OCI_REF_ROOT)')
    m.add_argument('--config', type=Path, help="source: the single node's TOML file")
    m.add_argument('--to-config', type=Path, help="target: the replicas' TOML file")
    fields = {f.name: f for f in dataclasses.fields(Config)}
    for name in TARGET_SETTINGS:
        f = fields[name]
        flag = '--to-root' if name == 'root' else '--' + name.replace('_', '-')
        helptext = f'target: {f.metadata.get("help", "")}'
        if f.type == 'bool':
            m.add_argument(flag, dest=f'to_{name}', default=None, help=helptext,
                           action=argparse.BooleanOptionalAction)
        else:
            m.add_argument(flag, dest=f'to_{name}', default=None, help=helptext,
                           metavar=name.upper())
    m.add_argument('--jobs', type=int, default=4,
                   help='blobs copied at once (default 4)')
    m.add_argument('--overwrite-tags', action='store_true',
                   help='a tag the target points elsewhere takes the source\'s digest '
                        '(default: kept, reported, exit 1)')
    m.add_argument('--verify-existing', action='store_true',
                   help='re-hash blobs the target already holds before skipping them')


def _migration_configs(args: argparse.Namespace) -> tuple[Config, Config]:
    """(source, target); ConfigError when they cannot be used together."""
    # The source is a single node whatever the environment says (OCI_REF_* may
    # name the target's stores for the replicas on this machine).
    source = Config.load({'root': args.root, 'metadata_store': 'sqlite',
                          'blob_store': 'fs'}, os.environ, args.config)
    target = Config.load({n: getattr(args, f'to_{n}') for n in TARGET_SETTINGS},
                         {k: v for k, v in os.environ.items() if k != 'OCI_REF_CONFIG'},
                         args.to_config)
    if target.metadata_store == 'sqlite' and target.blob_store == 'fs':
        if args.to_root is None and args.to_config is None:
            raise ConfigError(
                'migrate: the target is a single node too: name the scale-out stores '
                '(--to-config, --metadata-store / --blob-store or OCI_REF_*), or '
                '--to-root for another single node')
        if target.root.resolve() == source.root.resolve():
            raise ConfigError('migrate: the target is the source')
    from oci_ref.storage.sqlite import DB_FILE

    if not (source.root / DB_FILE).is_file():
        raise ConfigError(f'migrate: no registry under {source.root} (no {DB_FILE})')
    return source, target


def migrate(args: argparse.Namespace) -> int:
    try:
        source_config, target_config = _migration_configs(args)
    except ConfigError as ex:
        print(f'oci-ref: {ex}', file=sys.stderr)
        return 2
    from oci_ref.migrate import Dating, Migration
    from oci_ref.progress import Progress
    from oci_ref.storage import StoreUnavailable, open_stores

    dating = Dating()
    try:
        source = open_stores(source_config)
    except (StoreUnavailable, ValueError) as ex:
        print(f'oci-ref migrate: source: {ex}', file=sys.stderr)
        return 1
    try:
        target = open_stores(target_config, clock=dating)
    except (StoreUnavailable, ValueError) as ex:
        source.close()
        print(f'oci-ref migrate: target: {ex}', file=sys.stderr)
        return 1
    migration = Migration(source, target, dating, overwrite_tags=args.overwrite_tags,
                          verify_existing=args.verify_existing, jobs=args.jobs,
                          progress=Progress())
    try:
        report = asyncio.run(migration.run())
    except StoreUnavailable as ex:
        print(f'oci-ref migrate: {ex} (nothing half-done: run it again)',
              file=sys.stderr)
        return 1
    finally:
        target.close()
        source.close()
    if report is None:
        print('oci-ref migrate: another migration into the target is running',
              file=sys.stderr)
        return 1
    for line in [*report.failures, *report.conflicts]:
        print(f'oci-ref migrate: {line}', file=sys.stderr)
    for line in report.summary():
        print(line)
    return 0 if report.ok else 1


def validate(args: argparse.Namespace) -> int:
    from oci_ref.manifest import check

    failed = 0
    for path in args.files:
        try:
            body = Path(path).read_bytes()
        except OSError as ex:
            print(f'{path}: cannot read: {ex.strerror}')
            failed += 1
            continue
        problems = check(body, args.media_type, strict=args.strict)
        if not problems:
            print(f'{path}: ok')
            continue
        failed += 1
        for p in problems:
            if args.json:
                print(json.dumps({'file': str(path), **p}))
            else:
                where = p.get('path') or '/'
                mode = ' (strict)' if p.get('mode') == 'strict' else ''
                print(f'{path}: {where}: {p.get("rule")} [{p.get("spec")}]{mode}')
    return 1 if failed else 0


def lint(args: argparse.Namespace) -> int:
    """``oci-ref lint report``: the findings of ``serve --lint``, from the storage
    root (read directly) or a running server (``--url``, GET /lint/report)."""
    from oci_ref.lint.report import build, to_html, to_text

    if args.url:
        import httpx

        try:
            r = httpx.get(args.url.rstrip('/') + '/lint/report', timeout=60)
        except httpx.HTTPError as ex:
            print(f'oci-ref lint: {args.url}: {ex}', file=sys.stderr)
            return 2
        if r.status_code != 200:
            print(f'oci-ref lint: {args.url}: /lint/report answered {r.status_code} '
                  '(is the server running with --lint? with auth on, use --root)',
                  file=sys.stderr)
            return 2
        report = r.json()
    else:
        config = _load(args)
        if config is None:
            return 2
        from oci_ref.lint.store import SQLiteLintStore

        if not (config.root / '.lint' / 'lint.db').is_file():
            print(f'oci-ref lint: no lint data under {config.root} (serve with --lint)',
                  file=sys.stderr)
            return 2
        store = SQLiteLintStore(config.root)
        try:
            report = build(store.findings(), store.clients())
        finally:
            store.close()
    if args.format == 'json':
        print(json.dumps(report, indent=2))
    elif args.format == 'html':
        print(to_html(report))
    else:
        print(to_text(report), end='')
    return 1 if args.fail and report['total'] else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog='oci-ref', description='OCI Distribution Spec reference registry'
    )
    parser.add_argument('--version', action='version', version=f'oci-ref {__version__}')
    sub = parser.add_subparsers(dest='command', required=True)
    _serve_parser(sub)
    v = sub.add_parser('validate', help='validate manifest/index/config JSON files offline')
    v.add_argument('files', nargs='+', type=Path)
    v.add_argument('--media-type', help='treat the files as this media type')
    v.add_argument('--json', action='store_true', help='one JSON object per problem')
    v.add_argument('--strict', action='store_true',
                   help="also the image-spec's SHOULDs (see schemas/README.md)")
    for command, helptext in (('gc', 'remove content nothing references'),
                              ('fsck', 're-hash blobs, check manifests and references')):
        p = sub.add_parser(command, help=helptext)
        p.add_argument('--root', type=Path, help='storage directory (or OCI_REF_ROOT)')
        p.add_argument('--config', type=Path, help='TOML settings file')
        if command == 'gc':
            p.add_argument('--dry-run', action='store_true', help='only report')
            p.add_argument('--untagged', action='store_true',
                           help='also remove manifests no tag reaches')
            p.add_argument('--grace', type=int, help='seconds (default: gc_grace)')
        else:
            p.add_argument('--repair', action='store_true',
                           help='quarantine corrupt content')
            p.add_argument('--json', action='store_true',
                           help='one JSON object per line: each problem, then '
                                'the summary')
    pf = sub.add_parser('prefetch', help='fill the pull-through cache with images')
    pf.add_argument('references', nargs='+',
                    help='<upstream name>/<repository>[:<tag>|@<digest>]')
    pf.add_argument('--root', type=Path, help='storage directory (or OCI_REF_ROOT)')
    pf.add_argument('--config', type=Path, help='TOML settings file with [[upstream]]')
    _migrate_parser(sub)
    lp = sub.add_parser('lint', help='the client linter (serve --lint)')
    lsub = lp.add_subparsers(dest='lint_command', required=True)
    report = lsub.add_parser('report', help='findings grouped by client and rule')
    where = report.add_mutually_exclusive_group()
    where.add_argument('--root', type=Path, help='storage directory (or OCI_REF_ROOT)')
    where.add_argument('--url', help='a running server, e.g. http://127.0.0.1:5000')
    report.add_argument('--config', type=Path, help='TOML settings file')
    report.add_argument('--format', choices=('text', 'json', 'html'), default='text')
    report.add_argument('--fail', action='store_true',
                        help='exit 1 when there is any finding (for CI)')
    args = parser.parse_args(argv)
    commands = {'serve': serve, 'gc': gc, 'fsck': fsck, 'validate': validate,
                'prefetch': prefetch, 'migrate': migrate,
                'lint': lint}
    return commands[args.command](args)


if __name__ == '__main__':
    sys.exit(main())
