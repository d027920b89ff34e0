"""``oci-ref serve`` and ``oci-ref validate``: thin wrappers over the library."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from oci_ref import __version__
from oci_ref.config import RESOLVED_ENV, Config, ConfigError


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


def serve(args: argparse.Namespace) -> int:
    flags = {f.name: getattr(args, f.name) for f in dataclasses.fields(Config)}
    try:
        config = Config.load(flags, os.environ, args.config)
    except ConfigError as ex:
        print(f'oci-ref: {ex}', file=sys.stderr)
        return 2
    import uvicorn  # imported late: `oci-ref validate` should not pay for it

    config.root.mkdir(parents=True, exist_ok=True)
    # Migrate once, before the workers race to do it.
    from oci_ref.registry import Registry

    Registry(config.root, fsync=config.fsync).close()
    os.environ[RESOLVED_ENV] = config.to_json()
    # uvicorn shuts down gracefully on SIGTERM, then restores the previous handler
    # and re-raises the signal; with Python's default that kills us (exit -15).
    # A stop on SIGTERM is a clean stop: exit 0, as on SIGINT.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    uvicorn.run(
        'oci_ref.app:create_app_from_env',
        factory=True,
        host=config.host,
        port=config.port,
        workers=config.workers if config.workers > 1 else None,
        log_level=config.log_level,
        access_log=config.access_log,
        loop='uvloop',
        http='httptools',
        lifespan='off',
        # The spec's errors are ours to send; uvicorn's "Server" header adds nothing.
        server_header=False,
        timeout_graceful_shutdown=10,
    )
    return 0


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


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
        problems = check(body, args.media_type)
        if not problems:
            print(f'{path}: ok')
            continue
        failed += 1
        for p in problems:
            if args.json:
                print(json.dumps({'file': str(path), **p}))
            else:
                where = p.get('path') or '/'
                print(f'{path}: {where}: {p.get("rule")} [{p.get("spec")}]')
    return 1 if failed else 0


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
    args = parser.parse_args(argv)
    if args.command == 'serve':
        return serve(args)
    return validate(args)


if __name__ == '__main__':
    sys.exit(main())
