"""ErrorCode against distribution-spec §Error Codes, and the error envelope (R77)."""

from __future__ import annotations

import json
import re

import pytest

from oci_ref.errors import (
    ErrorCode,
    ErrorEntry,
    ExtensionCode,
    RegistryError,
    status_code_for,
    store_unavailable,
)

# distribution-spec spec.md (main and v1.1.x), "#### Error Codes" (padding removed).
SPEC_TABLE = """
|ID|Code|Description|
|---|---|---|
|code-1|`BLOB_UNKNOWN`|blob unknown to registry|
|code-2|`BLOB_UPLOAD_INVALID`|blob upload invalid|
|code-3|`BLOB_UPLOAD_UNKNOWN`|blob upload unknown to registry|
|code-4|`DIGEST_INVALID`|provided digest did not match uploaded content|
|code-5|`MANIFEST_BLOB_UNKNOWN`|manifest references a manifest or blob unknown to registry|
|code-6|`MANIFEST_INVALID`|manifest invalid|
|code-7|`MANIFEST_UNKNOWN`|manifest unknown to registry|
|code-8|`NAME_INVALID`|invalid repository name|
|code-9|`NAME_UNKNOWN`|repository name not known to registry|
|code-10|`SIZE_INVALID`|provided length did not match content length|
|code-11|`UNAUTHORIZED`|authentication required|
|code-12|`DENIED`|requested access to the resource is denied|
|code-13|`UNSUPPORTED`|the operation is unsupported|
|code-14|`TOOMANYREQUESTS`|too many requests|
"""

ROW = re.compile(r'^\|\s*(code-\d+)\s*\|\s*`([A-Z_]+)`\s*\|\s*(.*?)\s*\|$')


def spec_rows() -> list[tuple[str, str, str]]:
    rows = [m.groups() for line in SPEC_TABLE.strip().splitlines()
            if (m := ROW.match(line.strip()))]
    assert len(rows) == 14
    return rows  # type: ignore[return-value]


def test_r77_error_codes_are_exactly_the_fourteen_of_the_spec_table():
    assert [c.name for c in ErrorCode] == [code for _, code, _ in spec_rows()]


def test_r77_error_code_ids_are_code_1_to_14_in_table_order():
    assert [c.spec_id for c in ErrorCode] == [f'code-{i}' for i in range(1, 15)]
    assert [(c.spec_id, c.name) for c in ErrorCode] == [
        (spec_id, code) for spec_id, code, _ in spec_rows()]


def test_r77_default_messages_are_the_spec_descriptions():
    assert {c.name: c.message for c in ErrorCode} == {
        code: text for _, code, text in spec_rows()}


def test_r77_codes_are_upper_case_letters_and_underscores():
    for c in ErrorCode:
        assert re.fullmatch(r'[A-Z_]+', c.name)


def test_r77_ids_and_names_are_unique():
    assert len({c.spec_id for c in ErrorCode}) == 14
    assert len({c.name for c in ErrorCode}) == 14


@pytest.mark.parametrize(('code', 'status'), [
    (ErrorCode.BLOB_UNKNOWN, 404),
    (ErrorCode.BLOB_UPLOAD_INVALID, 400),
    (ErrorCode.BLOB_UPLOAD_UNKNOWN, 404),
    (ErrorCode.DIGEST_INVALID, 400),
    (ErrorCode.MANIFEST_BLOB_UNKNOWN, 400),
    (ErrorCode.MANIFEST_INVALID, 400),
    (ErrorCode.MANIFEST_UNKNOWN, 404),
    (ErrorCode.NAME_INVALID, 400),
    (ErrorCode.NAME_UNKNOWN, 404),
    (ErrorCode.SIZE_INVALID, 400),
    (ErrorCode.UNAUTHORIZED, 401),
    (ErrorCode.DENIED, 403),
    (ErrorCode.UNSUPPORTED, 405),
    (ErrorCode.TOOMANYREQUESTS, 429),
])
def test_s6_each_code_is_bound_to_the_cheat_sheet_status(code, status):
    assert code.status == status


def test_r77_entry_has_code_name_message_and_optional_detail():
    assert ErrorEntry(ErrorCode.BLOB_UNKNOWN).to_dict() == {
        'code': 'BLOB_UNKNOWN', 'message': 'blob unknown to registry'}
    entry = ErrorEntry(ErrorCode.DIGEST_INVALID, 'custom', {'digest': 'sha256:x'})
    assert entry.to_dict() == {'code': 'DIGEST_INVALID', 'message': 'custom',
                               'detail': {'digest': 'sha256:x'}}
    # detail may be any JSON value, falsy ones included
    assert ErrorEntry(ErrorCode.DENIED, detail=0).to_dict()['detail'] == 0
    assert ErrorEntry(ErrorCode.DENIED, detail='').to_dict()['detail'] == ''


def test_r77_registry_error_body_is_the_spec_envelope():
    ex = RegistryError(ErrorCode.NAME_INVALID, detail={'name': 'A'})
    body = json.loads(ex.body())
    assert body == {'errors': [{'code': 'NAME_INVALID',
                                'message': 'invalid repository name',
                                'detail': {'name': 'A'}}]}
    assert ex.status == 400
    assert ex.code is ErrorCode.NAME_INVALID
    assert ex.headers == {}
    assert str(ex) == 'invalid repository name'


def test_registry_error_status_and_headers_override():
    ex = RegistryError(ErrorCode.BLOB_UPLOAD_INVALID, status=416,
                       headers={'Range': '0-9', 'Location': '/v2/a/blobs/uploads/x'})
    assert ex.status == 416
    assert ex.headers == {'Range': '0-9', 'Location': '/v2/a/blobs/uploads/x'}
    assert RegistryError(ErrorCode.MANIFEST_INVALID, status=413).status == 413


def test_registry_error_of_several_entries_keeps_them_all_in_order():
    entries = [ErrorEntry(ErrorCode.MANIFEST_BLOB_UNKNOWN, detail={'digest': d})
               for d in ('sha256:a', 'sha256:b', 'sha256:c')]
    ex = RegistryError.of(entries)
    assert ex.status == 400
    assert ex.code is ErrorCode.MANIFEST_BLOB_UNKNOWN
    errors = json.loads(ex.body())['errors']
    assert [e['detail']['digest'] for e in errors] == ['sha256:a', 'sha256:b', 'sha256:c']
    assert {e['code'] for e in errors} == {'MANIFEST_BLOB_UNKNOWN'}
    assert RegistryError.of(entries[:1], status=422).status == 422


@pytest.mark.parametrize(('status', 'code'), [
    (401, ErrorCode.UNAUTHORIZED),
    (403, ErrorCode.DENIED),
    (413, ErrorCode.SIZE_INVALID),
    (429, ErrorCode.TOOMANYREQUESTS),
    (404, ErrorCode.UNSUPPORTED),
    (405, ErrorCode.UNSUPPORTED),
    (400, ErrorCode.UNSUPPORTED),
])
def test_r77_http_layer_refusals_map_to_a_spec_code(status, code):
    assert status_code_for(status) is code


def test_extension_codes_are_only_for_server_failures_and_name_the_store():
    """5xx answers are outside the spec's table (its codes say what a client did
    wrong): ExtensionCode entries carry a 5xx status, never a 4xx."""
    assert all(c.status >= 500 for c in ExtensionCode)
    assert not {c.name for c in ExtensionCode} & {c.name for c in ErrorCode}
    err = store_unavailable('metadata (sqlite)', 'database is locked')
    assert err.status == 503
    assert int(err.headers['Retry-After']) >= 1
    assert json.loads(err.body()) == {'errors': [{
        'code': 'UNAVAILABLE',
        'message': 'metadata (sqlite) is unavailable: database is locked',
        'detail': {'store': 'metadata (sqlite)', 'reason': 'database is locked'}}]}
