"""schemas/openapi.yaml describes exactly the routes the app serves."""

from __future__ import annotations

from pathlib import Path

import falcon.routing
import yaml

from oci_ref.app import open_registry, routes
from oci_ref.config import Config
from oci_ref.manifest import schema_dir

HTTP_METHODS = {'get', 'head', 'post', 'put', 'patch', 'delete'}


def app_operations(tmp_path: Path) -> set[tuple[str, str]]:
    registry = open_registry(Config(root=tmp_path / 'data'))
    ops = set()
    for template, resource, suffix in routes(Config(root=tmp_path / 'data'), registry):
        for method in falcon.routing.map_http_methods(resource, suffix=suffix):
            ops.add((template, method.lower()))
    registry.close()
    return ops


def document() -> dict:
    return yaml.safe_load((schema_dir() / 'openapi.yaml').read_text())


def documented_operations() -> set[tuple[str, str]]:
    return {
        (path, method)
        for path, item in document()['paths'].items()
        for method in item
        if method in HTTP_METHODS
    }


def test_every_app_route_and_method_is_in_openapi_and_vice_versa(tmp_path: Path) -> None:
    served = app_operations(tmp_path)
    documented = documented_operations()
    assert served - documented == set(), 'served but not documented'
    assert documented - served == set(), 'documented but not served'
    assert len(served) >= 20


def test_every_operation_documents_an_error_response() -> None:
    for path, item in document()['paths'].items():
        for method, op in item.items():
            if method not in HTTP_METHODS:
                continue
            assert 'default' in op['responses'], (path, method)


def test_error_envelope_codes_are_the_spec_codes() -> None:
    from oci_ref.errors import ErrorCode

    envelope = document()['components']['schemas']['ErrorResponse']
    codes = envelope['properties']['errors']['items']['properties']['code']['enum']
    assert codes == [c.name for c in ErrorCode]


def test_openapi_grammars_match_the_server(tmp_path: Path) -> None:
    from oci_ref.reference import NAME_MAX, NAME_RE, TAG_RE

    schemas = document()['components']['schemas']
    assert schemas['Name']['pattern'] == f'^{NAME_RE.pattern}$'
    assert schemas['Name']['maxLength'] == NAME_MAX
    assert schemas['Tag']['pattern'] == f'^{TAG_RE.pattern}$'
