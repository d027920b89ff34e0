"""Our JSON Schemas: well-formed, self-contained, and every rule cites the spec."""

from __future__ import annotations

import importlib.resources
import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012

from oci_ref import manifest as m

SCHEMA_FILES = sorted(m.schema_dir().glob('*.schema.json'))
EXPECTED = {
    'descriptor.schema.json',
    'image-manifest.schema.json',
    'image-index.schema.json',
    'image-config.schema.json',
    'docker-manifest-v2.schema.json',
    'docker-manifest-list-v2.schema.json',
}
# Keywords that can make validation fail; a subschema using one states a rule.
ASSERTIONS = {
    'type', 'const', 'enum', 'required', 'pattern', 'minimum', 'maximum',
    'minItems', 'maxItems', 'minLength', 'maxLength', 'not',
}  # fmt: skip


def load(path: Path) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(path.read_text(encoding='utf-8'))
    return schema


# Where subschemas sit: keyword -> a schema, a list of schemas, or a map of schemas.
ONE = {'items', 'additionalProperties', 'not', 'then', 'else', 'contains'}
MANY = {'allOf', 'anyOf', 'oneOf', 'prefixItems'}
MAPS = {'properties', '$defs', 'patternProperties'}


def subschemas(schema: Any, pointer: str = '') -> Any:
    """Every (pointer, subschema) pair, skipping ``if`` (it never reports errors)."""
    if not isinstance(schema, dict):
        return
    yield pointer, schema
    for key, value in schema.items():
        if key in ONE:
            yield from subschemas(value, f'{pointer}/{key}')
        elif key in MANY:
            for i, item in enumerate(value):
                yield from subschemas(item, f'{pointer}/{key}/{i}')
        elif key in MAPS:
            for name, item in value.items():
                yield from subschemas(item, f'{pointer}/{key}/{name}')


def refs(node: Any) -> Any:
    for _, schema in subschemas(node):
        if '$ref' in schema:
            yield schema['$ref']


def test_the_six_schemas_exist() -> None:
    assert {p.name for p in SCHEMA_FILES} == EXPECTED


@pytest.mark.parametrize('path', SCHEMA_FILES, ids=lambda p: p.name)
def test_schemas_are_valid_draft_2020_12(path: Path) -> None:
    schema = load(path)
    assert schema['$schema'] == 'https://json-schema.org/draft/2020-12/schema'
    Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize('path', SCHEMA_FILES, ids=lambda p: p.name)
def test_schema_id_matches_file_name(path: Path) -> None:
    assert load(path)['$id'] == m.SCHEMA_BASE + path.name


@pytest.mark.parametrize('path', SCHEMA_FILES, ids=lambda p: p.name)
def test_refs_are_relative_and_resolve_without_network(path: Path) -> None:
    # A registry holding only our files, with no retrieve hook: any ref that would
    # need the network raises Unresolvable.
    registry: Registry[Any] = Registry().with_resources(
        (load(p)['$id'], DRAFT202012.create_resource(load(p))) for p in SCHEMA_FILES
    )
    schema = load(path)
    resolver = registry.resolver(base_uri=schema['$id'])
    for ref in refs(schema):
        assert '://' not in ref, ref
        resolver.lookup(ref)
    with pytest.raises(Unresolvable):
        resolver.lookup('https://example.com/other.json')


@pytest.mark.parametrize('path', SCHEMA_FILES, ids=lambda p: p.name)
def test_every_rule_bearing_subschema_names_its_rule_and_spec_section(
    path: Path,
) -> None:
    for pointer, schema in subschemas(load(path)):
        if ASSERTIONS & schema.keys() or pointer.endswith('/then'):
            assert schema.get('x-spec', '').startswith(('image-spec ', 'distribution ')), (
                pointer
            )
            assert schema.get('description'), pointer


@pytest.mark.parametrize('path', SCHEMA_FILES, ids=lambda p: p.name)
def test_unknown_fields_are_never_forbidden(path: Path) -> None:
    for pointer, schema in subschemas(load(path)):
        assert schema.get('additionalProperties', True) is not False, pointer
        assert 'unevaluatedProperties' not in schema, pointer


def test_layers_and_manifests_may_be_empty() -> None:
    for name, member in [
        ('image-manifest.schema.json', 'layers'),
        ('image-index.schema.json', 'manifests'),
        ('docker-manifest-list-v2.schema.json', 'manifests'),
    ]:
        assert 'minItems' not in load(m.schema_dir() / name)['properties'][member]


def test_descriptor_media_type_grammar_is_left_to_code() -> None:
    # RFC 6838 is checked with fullmatch in oci_ref/image_rules.py: a JSON Schema
    # pattern's $ would also accept a final newline under Python's re.
    media_type = load(m.schema_dir() / 'descriptor.schema.json')['$defs']['mediaType']
    assert 'pattern' not in media_type and 'image_rules' in media_type['$comment']


def test_every_optional_config_member_allows_null() -> None:
    # config.md §Properties: any OPTIONAL field MAY be null (same as absent).
    schema = load(m.schema_dir() / 'image-config.schema.json')
    members = {k: v for k, v in schema['properties'].items()
               if k not in schema['required']}
    members.update({f'config.{k}': v for k, v in
                    schema['properties']['config']['properties'].items()})
    for name, sub in members.items():
        if '$ref' in sub:  # local: #/$defs/<name>
            sub = schema['$defs'][sub['$ref'].rpartition('/')[2]]
        types = sub['type'] if isinstance(sub['type'], list) else [sub['type']]
        assert 'null' in types, name


def test_digest_pattern_is_the_image_spec_grammar() -> None:
    digest = load(m.schema_dir() / 'descriptor.schema.json')['$defs']['digest']
    assert digest['pattern'] == '^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$'


def test_schema_dir_falls_back_to_the_checkout() -> None:
    assert m.schema_dir() == Path(m.__file__).resolve().parent.parent / 'schemas'


def test_schema_dir_prefers_the_packaged_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / '_schemas').mkdir()
    monkeypatch.setattr(importlib.resources, 'files', lambda package: tmp_path)
    assert m.schema_dir() == tmp_path / '_schemas'
