"""The variations' names, the settings they stand for, and the README table."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from oci_ref.config import Config, ConfigError
from oci_ref.variations import (
    VARIATIONS,
    adjust,
    check_names,
    redact_signature,
    tag_page_max,
)

README = Path(__file__).resolve().parents[2] / 'README.md'


def test_readme_table_is_the_variations() -> None:
    text = README.read_text()
    start = text.index('<!-- variations-table:')
    rows = [line for line in text[start:].splitlines()[1:] if line.startswith('| `')]
    rows = rows[:len(VARIATIONS)]
    assert rows == [f'| `{v.name}` | {v.spec} | {v.client} |' for v in VARIATIONS.values()]


def test_every_variation_cites_the_spec_and_says_what_to_do() -> None:
    for v in VARIATIONS.values():
        assert '"' in v.spec, v.name  # a quotation or the section's words
        assert v.client, v.name


def test_unknown_names_are_refused() -> None:
    check_names(list(VARIATIONS))
    with pytest.raises(ValueError, match='unknown nope'):
        check_names(['warnings', 'nope'])
    with pytest.raises(ConfigError, match='variations: unknown nope'):
        Config.load({'variations': 'warnings,nope'}, environ={})
    config = Config.load(environ={'OCI_REF_VARIATIONS': 'warnings, mount-202'})
    assert config.variations == ('warnings', 'mount-202')


def test_no_deletes_is_the_delete_switches() -> None:
    config = adjust(Config(variations=('no-deletes',)))
    assert not (config.delete_manifests or config.delete_tags or config.delete_blobs)
    assert adjust(Config()) == Config()


def test_no_tag_pagination_lifts_the_tag_page_size_only() -> None:
    config = Config(variations=('no-tag-pagination',), page_max=5)
    assert tag_page_max(config) > 2**30 and config.page_max == 5
    assert tag_page_max(dataclasses.replace(config, variations=())) == 5


def test_presigned_signatures_are_redacted_from_access_lines() -> None:
    import logging

    record = logging.LogRecord('uvicorn.access', logging.INFO, '', 0,
                               '%s - "%s %s HTTP/%s" %d',
                               ('127.0.0.1:1', 'GET', '/redirected/sha256%3Aab?name=a'
                                '&expires=1&signature=SECRET', '1.1', 200), None)
    assert redact_signature(record)
    assert 'SECRET' not in record.getMessage()
    assert 'signature=REDACTED' in record.getMessage()
