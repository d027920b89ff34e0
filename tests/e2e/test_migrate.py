"""`oci-ref migrate` end to end (issue 14): a single node (`oci-ref serve` on SQLite +
filesystem) filled over HTTP, moved by the real command onto PostgreSQL + S3 (moto),
then served from there by `oci-ref serve` on the replicas' config: pulls give the
same bytes, tag lists and referrers; `oci-ref fsck` on the target is clean; a second
run is a no-op; a run killed with SIGKILL is finished by the next; a corrupt source
blob is named and the command fails."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from oci_ref.reference import Digest
from oci_ref.testing import OCIRegistry
from tests.engines import S3Bucket
from tests.migration_content import Sample, push_sample, view

pytestmark = [pytest.mark.e2e, pytest.mark.engines]

MiB = 1 << 20


@dataclass
class Target:
    """The scale-out deployment: the replicas' TOML file and their environment (the
    PostgreSQL URL and S3 credentials by environment, never on a command line)."""

    config: Path
    env: dict[str, str]
    root: Path

    def cli(self, *args: str | Path, timeout: float = 300
            ) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, '-m', 'oci_ref', *map(str, args)],
                              capture_output=True, text=True, env=self.full_env(),
                              timeout=timeout)

    def full_env(self) -> dict[str, str]:
        clean = {k: v for k, v in os.environ.items() if not k.startswith('OCI_REF_')}
        return {**clean, **self.env}

    def serve(self) -> OCIRegistry:
        return OCIRegistry(self.root, args=['--config', str(self.config)], env=self.env)


@pytest.fixture
def target(tmp_path: Path, postgres_metadata_url: str, s3_bucket: S3Bucket) -> Target:
    config = tmp_path / 'scale.toml'
    config.write_text(
        'blob_store = "s3"\n'
        f's3_bucket = "{s3_bucket.bucket}"\n'
        f's3_endpoint_url = "{s3_bucket.endpoint_url}"\n'
        f's3_region = "{s3_bucket.region}"\n'
        's3_path_style = true\n'
        f'root = "{tmp_path / "replica"}"\n')
    env = {**s3_bucket.env, 'OCI_REF_METADATA_STORE': postgres_metadata_url}
    return Target(config, env, tmp_path / 'replica')


@dataclass
class Source:
    root: Path
    sample: Sample
    seen: dict[str, Any]


def fill(root: Path, **kw: Any) -> Source:
    """A single node filled over HTTP, read back, then stopped (the cut-over)."""
    with OCIRegistry(root) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        sample = push_sample(c, **kw)
        return Source(root, sample, view(c, sample))


@pytest.fixture
def source(tmp_path: Path) -> Source:
    # A 12 MiB layer: more than one S3 part (multipart) on the target.
    return fill(tmp_path / 'source', big=12 * MiB)


def migrate(source: Source, target: Target, *extra: str
            ) -> subprocess.CompletedProcess[str]:
    return target.cli('migrate', '--root', source.root, '--to-config', target.config,
                      *extra)


def served_view(target: Target, sample: Sample) -> dict[str, Any]:
    with target.serve() as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        return view(c, sample)


def fsck_clean(target: Target) -> None:
    r = target.cli('fsck', '--config', target.config)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip().endswith('0 problems, 0 notices'), r.stdout


def test_a_single_node_moves_onto_postgresql_and_s3(source, target):
    r = migrate(source, target)
    assert r.returncode == 0, r.stdout + r.stderr
    blobs = len({d for ds in source.sample.blobs.values() for d in ds})
    lines = r.stdout.splitlines()
    assert lines[0].startswith(f'blobs: {blobs} copied (12.'), r.stdout
    assert lines[0].endswith(', 0 already there')
    assert lines[2] == ('manifests: 6 copied, 0 already there (1 referrers, '
                        '0 sparse)')
    assert lines[3] == 'tags: 5 set, 0 already there, 0 conflicts'
    assert lines[4] == 'repositories: 3'
    assert 'upload sessions in progress: 0 not migrated' in lines[5]
    # Not a terminal: plain progress lines, no carriage returns.
    assert 'blobs: 0/' in r.stderr and f'blobs: {blobs}/{blobs} (100%)' in r.stderr
    assert '\r' not in r.stderr
    assert served_view(target, source.sample) == source.seen
    fsck_clean(target)

    again = migrate(source, target)
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.splitlines()[:4] == [
        f'blobs: 0 copied (0 B), {blobs} already there',
        'blob links: 0 made, 11 already there',
        'manifests: 0 copied, 6 already there (1 referrers, 0 sparse)',
        'tags: 0 set, 5 already there, 0 conflicts']


def test_a_cut_over_copies_while_serving_then_what_changed(tmp_path, target):
    """The README's cut-over: a first pass while the single node serves, pushes and a
    moved tag meanwhile, then a last pass after it stopped."""
    root = tmp_path / 'source'
    with OCIRegistry(root) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        sample = push_sample(c)
        first = migrate(Source(root, sample, {}), target)
        assert first.returncode == 0, first.stdout + first.stderr
        sample.image(c, 'app/web', 'latest', 'pushed during the first pass')
        sample.image(c, 'app/new', 'v1', 'a new repository')
        seen = view(c, sample)
    source = Source(root, sample, seen)
    r = migrate(source, target)
    assert r.returncode == 1, r.stdout + r.stderr
    assert 'oci-ref migrate: tag app/web:latest: the target points it at' in r.stderr
    r = migrate(source, target, '--overwrite-tags')
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines()[2] == ('manifests: 0 copied, 8 already there '
                                        '(1 referrers, 0 sparse)')
    assert r.stdout.splitlines()[3] == 'tags: 1 set, 5 already there, 0 conflicts'
    assert served_view(target, sample) == seen
    fsck_clean(target)


def test_a_run_killed_with_sigkill_is_finished_by_the_next(tmp_path, target):
    # Many blobs, so the kill lands with some copied and some not.
    root = tmp_path / 'source'
    with OCIRegistry(root) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        sample = push_sample(c, big=2 * MiB)
        for i in range(30):
            sample.image(c, f'bulk/{i % 3}', f't{i}', f'bulk {i}', layer=os.urandom(MiB))
        seen = view(c, sample)
    proc = subprocess.Popen(
        [sys.executable, '-m', 'oci_ref', 'migrate', '--root', str(root),
         '--to-config', str(target.config)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=target.full_env())
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.startswith('blobs: ') and '(30%)' in line:
                break  # a third of the blobs are in: kill it now
        else:
            raise AssertionError('no progress line before it ended')
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]
    assert proc.returncode == -signal.SIGKILL
    r = migrate(Source(root, sample, seen), target)
    assert r.returncode == 0, r.stdout + r.stderr
    m = re.match(r'blobs: (\d+) copied \(.*\), (\d+) already there', r.stdout)
    assert m and int(m[1]) > 0 and int(m[2]) > 0, r.stdout  # the kill was mid-run
    assert served_view(target, sample) == seen
    fsck_clean(target)


def test_a_corrupt_source_blob_is_named_and_fails_the_command(tmp_path, target):
    source = fill(tmp_path / 'source')
    layer = source.sample.blobs['lib/db'][1]
    d = Digest.parse(layer)
    path = source.root / 'blobs' / d.algorithm / d.encoded[:2] / d.encoded
    path.write_bytes(b'\0' * path.stat().st_size)
    r = migrate(source, target)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f'oci-ref migrate: blob {layer}: corrupt in the source' in r.stderr
    assert 'oci-ref migrate: manifest lib/db@' in r.stderr
    assert r.stdout.splitlines()[-1] == '4 failed (see above)'
    with target.serve() as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        assert c.get(f'/v2/lib/db/blobs/{layer}').status_code == 404
        assert c.get('/v2/app/web/manifests/amd64').status_code == 200
    fsck_clean(target)


def test_bad_invocations_are_refused_clearly(tmp_path, target):
    r = target.cli('migrate', '--root', tmp_path / 'nothing', '--to-config',
                   target.config)
    assert r.returncode == 2
    assert 'no registry under' in r.stderr
    fill(tmp_path / 'source')
    r = subprocess.run([sys.executable, '-m', 'oci_ref', 'migrate', '--root',
                        str(tmp_path / 'source')], capture_output=True, text=True,
                       env={k: v for k, v in os.environ.items()
                            if not k.startswith('OCI_REF_')}, timeout=60)
    assert r.returncode == 2
    assert 'the target is a single node too' in r.stderr
