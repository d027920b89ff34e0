"""end-11 with token auth: a mount's challenge names the source repository too.

A mount reads its source, so the 401 for ``POST …/blobs/uploads/?mount=&from=`` names
``repository:<name>:pull,push`` and ``repository:<from>:pull`` (CNCF distribution asks
for the same): a client that fetches the token the challenge names can mount. A token
without pull on the source gets a 401 ``insufficient_scope`` when its holder may pull
the source, and a 202 upload when they may not.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlencode

import bcrypt
import pytest

from oci_ref.app import create_app
from oci_ref.config import Config
from tests.interop.auth import basic_header, parse_challenge
from tests.support import InProcess, digest, push_blob

ACCESS = '''
[[rule]]
repository = "secret/*"
principals = ["admin"]
actions = ["pull", "push", "delete"]

[[rule]]                    # first match wins: nobody else reads secret/*
repository = "secret/*"
principals = ["*"]
actions = []

[[rule]]
repository = "*"
principals = ["*"]
actions = ["pull", "push", "delete"]
'''
USER, PASSWORD = 'dev', 'dev-password'
TARGET, SOURCE, HIDDEN = 'team/app', 'public/lib', 'secret/lib'


@pytest.fixture
def world(tmp_path: Path) -> tuple[InProcess, InProcess]:
    """(open app for seeding, token-auth app) over one storage root."""
    root = tmp_path / 'data'
    htpasswd = tmp_path / 'htpasswd'
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    htpasswd.write_text(f'{USER}:{hashed}\n')
    access = tmp_path / 'access.toml'
    access.write_text(ACCESS)
    opened = InProcess(create_app(Config(root=root)))
    secured = InProcess(create_app(Config(root=root, auth='token', htpasswd=htpasswd,
                                          access=access).validated()))
    return opened, secured


def token(app: InProcess, scope: str) -> dict[str, str]:
    """A token for ``scope`` as the suite's client asks: one space-separated value."""
    r = app.get('/token?' + urlencode({'service': 'oci-ref', 'scope': scope}),
                headers={'Authorization': basic_header(USER, PASSWORD)})
    assert r.status_code == 200, r.content
    return {'Authorization': f'Bearer {r.json()["token"]}'}


def mount(app: InProcess, blob: bytes, source: str, headers: dict[str, str] | None = None
          ) -> object:
    query = urlencode({'mount': digest(blob), 'from': source})
    return app.post(f'/v2/{TARGET}/blobs/uploads/?{query}', headers=headers or {})


def test_the_challenge_names_both_scopes_and_their_token_mounts(world) -> None:
    opened, secured = world
    blob = b'a layer in public/lib'
    push_blob(opened, SOURCE, blob)
    r = mount(secured, blob, SOURCE)
    assert r.status_code == 401, r.content
    scheme, params = parse_challenge(r.headers['www-authenticate'])
    assert scheme == 'bearer'
    assert params['scope'] == f'repository:{TARGET}:pull,push repository:{SOURCE}:pull'
    r = mount(secured, blob, SOURCE, token(secured, params['scope']))
    assert r.status_code == 201, r.content
    assert r.headers['location'] == f'/v2/{TARGET}/blobs/{digest(blob)}'


def test_a_token_without_the_source_is_asked_to_widen_then_mounts(world) -> None:
    opened, secured = world
    blob = b'another layer in public/lib'
    push_blob(opened, SOURCE, blob)
    narrow = token(secured, f'repository:{TARGET}:pull,push')
    r = mount(secured, blob, SOURCE, narrow)
    assert r.status_code == 401, r.content
    _, params = parse_challenge(r.headers['www-authenticate'])
    assert params['error'] == 'insufficient_scope'
    assert params['scope'] == f'repository:{TARGET}:pull,push repository:{SOURCE}:pull'
    assert mount(secured, blob, SOURCE, token(secured, params['scope'])).status_code == 201


def test_a_source_the_holder_may_not_pull_falls_back_to_an_upload(world) -> None:
    opened, secured = world
    blob = b'a layer only admin may read'
    push_blob(opened, HIDDEN, blob)
    for scope in (f'repository:{TARGET}:pull,push',
                  f'repository:{TARGET}:pull,push repository:{HIDDEN}:pull'):
        r = mount(secured, blob, HIDDEN, token(secured, scope))
        assert r.status_code == 202, (scope, r.content)
        assert f'/v2/{TARGET}/blobs/uploads/' in r.headers['location']
        head = secured.head(f'/v2/{TARGET}/blobs/{digest(blob)}',
                            headers=token(secured, f'repository:{TARGET}:pull'))
        assert head.status_code == 404
