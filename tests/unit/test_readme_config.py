"""Every oci-ref configuration the README shows is one oci-ref accepts: the keys
exist and the values validate (a worked example that fails at start helps no one).
Blocks for other tools (registries.conf, hosts.toml) share no key with oci-ref's
settings and are left to those tools."""

from __future__ import annotations

import re
import tomllib
from dataclasses import fields
from pathlib import Path

import pytest

from oci_ref.config import Config

README = Path(__file__).resolve().parents[2] / 'README.md'
SETTINGS = {f.name for f in fields(Config)}


def oci_ref_blocks() -> list[str]:
    blocks = re.findall(r'```toml\n(.*?)```', README.read_text(), flags=re.S)
    return [b for b in blocks if set(tomllib.loads(b)) & SETTINGS]


def test_the_readme_shows_the_configurations_that_matter():
    keys = set().union(*(tomllib.loads(b) for b in oci_ref_blocks()))
    # The single node, S3 blobs, upstreams and the replicas' shared file.
    assert {'listen', 'blob_store', 'upstream', 'metadata_store'} <= keys


@pytest.mark.parametrize('block', oci_ref_blocks(),
                         ids=lambda b: b.splitlines()[0][:40])
def test_each_readme_configuration_loads(block: str, tmp_path: Path):
    # The files the example names (users, rules, upstream credentials) are the
    # reader's: stand-ins here, so the check is about the settings themselves.
    for path in sorted(set(re.findall(r'"(/etc/[^"]+)"', block))):
        stand_in = tmp_path / path.lstrip('/')
        stand_in.parent.mkdir(parents=True, exist_ok=True)
        stand_in.write_text('{"auths": {}}' if path.endswith('.json') else '')
        block = block.replace(f'"{path}"', f'"{stand_in}"')
    file = tmp_path / 'oci-ref.toml'
    file.write_text(block)
    Config.load(environ={}, file=file)  # unknown keys and bad values raise ConfigError
