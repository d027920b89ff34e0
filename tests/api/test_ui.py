"""The web view in-process: what each page shows, who sees what, escaping, CSP,
and the delete flow with its CSRF checks. (The same views in a real browser, with
real clients' content: tests/e2e/test_ui_browser.py.)"""

from __future__ import annotations

import asyncio
import html
import json
import re
from pathlib import Path
from typing import Any

import markupsafe
import pytest

from oci_ref.app import create_app, open_registry
from oci_ref.config import Config
from oci_ref.ui.render import CSP
from oci_ref.upstream.config import parse_upstreams
from tests.interop.auth import basic_header, write_htpasswd
from tests.support import (
    EMPTY_JSON,
    OCI_INDEX,
    OCI_MANIFEST,
    InProcess,
    Resp,
    digest,
    push_blob,
    push_image,
)

HOSTILE = '<script>alert("x")</script>\'"&<img src=x onerror=alert(1)>'
PASSWORDS = {'admin': 'admin-pw', 'reader': 'reader-pw'}
ACCESS = '''
[[rule]]
repository = "*"
principals = ["admin"]
actions = ["pull", "push", "delete"]

[[rule]]
repository = "public/*"
principals = ["reader"]
actions = ["pull"]

[catalog]
principals = ["admin", "reader"]
'''


def app(root: Path, **settings: Any) -> InProcess:
    return InProcess(create_app(Config(root=root, **settings).validated()))


def page(c: InProcess, url: str, headers: dict[str, str] | None = None,
         status: int = 200) -> str:
    r = c.get(url, headers=headers)
    assert r.status_code == status, (url, r.status_code, r.content[:300])
    assert r.headers['content-type'] == 'text/html; charset=utf-8'
    assert r.headers['content-security-policy'] == CSP
    return r.content.decode()


def links(text: str) -> set[str]:
    return {html.unescape(h) for h in re.findall(r'href="([^"]*)"', text)}


def push_index(c: InProcess, name: str, tag: str) -> tuple[str, list[str]]:
    children = []
    for arch in ('amd64', 'arm64'):
        d, body = push_image(c, name, d_tag := f'{tag}-{arch}', seed=f'{name} {arch}')
        children.append({'mediaType': OCI_MANIFEST, 'digest': d, 'size': len(body),
                         'platform': {'os': 'linux', 'architecture': arch}})
        c.delete(f'/v2/{name}/manifests/{d_tag}')
    body = json.dumps({'schemaVersion': 2, 'mediaType': OCI_INDEX,
                       'manifests': children}).encode()
    r = c.put(f'/v2/{name}/manifests/{tag}', content=body,
              headers={'Content-Type': OCI_INDEX})
    assert r.status_code == 201, r.content
    return digest(body), [ch['digest'] for ch in children]


def push_artifact(c: InProcess, name: str, reference: str | None, *,
                  subject: tuple[str, int] | None, artifact_type: str,
                  annotations: dict[str, str] | None = None) -> str:
    empty = push_blob(c, name, b'{}')
    doc: dict[str, Any] = {
        'schemaVersion': 2, 'mediaType': OCI_MANIFEST, 'artifactType': artifact_type,
        'config': {'mediaType': EMPTY_JSON, 'digest': empty, 'size': 2},
        'layers': [{'mediaType': EMPTY_JSON, 'digest': empty, 'size': 2}]}
    if subject:
        doc['subject'] = {'mediaType': OCI_INDEX, 'digest': subject[0], 'size': subject[1]}
    if annotations:
        doc['annotations'] = annotations
    body = json.dumps(doc).encode()
    r = c.put(f'/v2/{name}/manifests/{reference or digest(body)}', content=body,
              headers={'Content-Type': OCI_MANIFEST})
    assert r.status_code == 201, r.content
    return digest(body)


def test_every_view_shows_the_content_and_links_onwards(tmp_path: Path) -> None:
    c = app(tmp_path / 'data')
    index, children = push_index(c, 'apps/web', 'multi')
    index_size = len(c.get(f'/v2/apps/web/manifests/{index}').content)
    sbom = push_artifact(c, 'apps/web', None, subject=(index, index_size),
                         artifact_type='application/vnd.example.sbom',
                         annotations={'org.example.kind': 'sbom'})
    sig = push_artifact(c, 'apps/web', None, subject=(sbom, 0),
                        artifact_type='application/vnd.example.sig')
    push_image(c, 'apps/db', 'v1')

    home = page(c, '/ui/')
    assert {'/ui/r/apps/web/', '/ui/r/apps/db/'} <= links(home)
    repo = page(c, '/ui/r/apps/web/')
    assert f'/ui/r/apps/web/-/m/{index}' in links(repo)
    assert '/ui/r/apps/web/-/m/multi' in links(repo)
    assert 'linux/amd64' in repo and 'linux/arm64' in repo

    view = page(c, '/ui/r/apps/web/-/m/multi')
    assert {f'/ui/r/apps/web/-/m/{d}' for d in (*children, sbom)} <= links(view)
    assert f'podman pull --tls-verify=false falconframework.org/apps/web@{index}' in view
    assert 'application/vnd.example.sbom' in view
    assert 'Valid:' in view
    # The raw JSON is the stored document.
    raw = re.search(r'<pre class="raw" id="raw">(.*?)</pre>', view, re.S)
    assert raw is not None
    assert json.loads(html.unescape(raw[1]))['manifests'][0]['digest'] == children[0]

    child = page(c, f'/ui/r/apps/web/-/m/{children[0]}')
    assert 'application/vnd.oci.image.layer.v1.tar+gzip' in child
    artifact = page(c, f'/ui/r/apps/web/-/m/{sbom}')
    assert f'/ui/r/apps/web/-/m/{index}' in links(artifact)  # the subject

    graph = page(c, f'/ui/r/apps/web/-/referrers/{index}')
    # Server-side SVG: every manifest a link, two levels of referrers drawn.
    svg = re.search(r'<svg id="graph".*?</svg>', graph, re.S)
    assert svg is not None
    assert {f'/ui/r/apps/web/-/m/{d}' for d in (index, sbom, sig)} <= links(svg[0])
    assert svg[0].count('<line ') == 2


def test_tag_schema_fallback_referrers_are_shown(tmp_path: Path) -> None:
    """distribution-spec §Referrers Tag Schema: a ``sha256-<hex>`` index lists the
    referrers; cosign's ``sha256-<hex>.sig`` tag names a signature."""
    c = app(tmp_path / 'data')
    image, _ = push_image(c, 'apps/signed', 'v1')
    attached = push_artifact(c, 'apps/signed', None, subject=None,
                             artifact_type='application/vnd.example.attestation')
    fallback = json.dumps({'schemaVersion': 2, 'mediaType': OCI_INDEX, 'manifests': [
        {'mediaType': OCI_MANIFEST, 'digest': attached, 'size': 1,
         'artifactType': 'application/vnd.example.attestation'}]}).encode()
    tag = f'sha256-{image[7:]}'
    r = c.put(f'/v2/apps/signed/manifests/{tag}', content=fallback,
              headers={'Content-Type': OCI_INDEX})
    assert r.status_code == 201, r.content
    sig = push_artifact(c, 'apps/signed', f'{tag}.sig', subject=None,
                        artifact_type='application/vnd.example.sig')
    view = page(c, '/ui/r/apps/signed/-/m/v1')
    assert f'tag {tag}' in view and f'tag {tag}.sig' in view
    graph = page(c, f'/ui/r/apps/signed/-/referrers/{image}')
    assert {f'/ui/r/apps/signed/-/m/{d}' for d in (attached, sig)} <= links(graph)


def test_tags_sort_by_name_and_push_time_and_paginate(tmp_path: Path) -> None:
    c = app(tmp_path / 'data')
    order = ['b', 'c', 'a', 'e', 'd']
    for tag in order:
        push_image(c, 'apps/many', tag, seed=tag)

    def shown(url: str) -> list[str]:
        return re.findall(r'<td class="tag"><a href="[^"]*">([^<]*)</a>', page(c, url))

    assert shown('/ui/r/apps/many/') == sorted(order)
    assert shown('/ui/r/apps/many/?sort=name&order=desc') == sorted(order)[::-1]
    assert shown('/ui/r/apps/many/?sort=pushed&order=desc') == order[::-1]
    assert shown('/ui/r/apps/many/?sort=pushed&order=asc') == order
    pages = [shown(f'/ui/r/apps/many/?sort=pushed&order=asc&n=2&page={p}')
             for p in (1, 2, 3)]
    assert pages == [order[:2], order[2:4], order[4:]]
    assert 'page 2 of 3' in page(c, '/ui/r/apps/many/?n=2&page=2')


def test_repositories_search_and_pages(tmp_path: Path) -> None:
    c = app(tmp_path / 'data')
    names = ['alpha/one', 'alpha/two', 'beta/one', 'gamma/three']
    for name in names:
        push_image(c, name, 'v1', seed=name)
    listed = re.findall(r'<td><a href="/ui/r/([^"]*)/">', page(c, '/ui/?q=one'))
    assert listed == ['alpha/one', 'beta/one']
    first = page(c, '/ui/?n=3')
    assert re.findall(r'<td><a href="/ui/r/([^"]*)/">', first) == names[:3]
    nxt = re.search(r'<a rel="next" href="([^"]*)"', first)
    assert nxt is not None
    rest = page(c, '/ui/' + html.unescape(nxt[1]))
    assert re.findall(r'<td><a href="/ui/r/([^"]*)/">', rest) == names[3:]
    # Tag counts and sizes (config + layer of push_image, as linked blobs).
    row = re.search(r'alpha/one</a></td><td class="num">(\d+)</td><td class="num">([^<]*)<',
                    first)
    assert row is not None and row[1] == '1' and row[2].endswith(' B')


def test_hostile_manifest_content_is_escaped(tmp_path: Path) -> None:
    c = app(tmp_path / 'data')
    long_value = 'y' * 20000
    image, _ = push_image(c, 'apps/evil', 'v1', annotations={
        'org.example.evil': HOSTILE, HOSTILE: 'key', 'org.example.long': long_value})
    push_artifact(c, 'apps/evil', 'art', subject=(image, 1),
                  artifact_type='application/vnd.example.evil',
                  annotations={'org.example.note': HOSTILE})
    # Tags cannot carry markup: the tag grammar refuses it before any page shows it.
    r = c.put('/v2/apps/evil/manifests/%3Cscript%3E', content=b'{}',
              headers={'Content-Type': OCI_MANIFEST})
    assert r.status_code in (400, 404)
    long_tag = 'T' * 128
    push_image(c, 'apps/evil', long_tag)
    for url in ('/ui/r/apps/evil/', '/ui/r/apps/evil/-/m/v1', '/ui/r/apps/evil/-/m/art',
                f'/ui/r/apps/evil/-/referrers/{image}', f'/ui/r/apps/evil/-/m/{long_tag}'):
        text = page(c, url)
        assert '<script>' not in text and '<img' not in text, url
        assert 'onerror=alert' not in text.replace('onerror=alert(1)&gt;', ''), url
    text = page(c, '/ui/r/apps/evil/-/m/v1')
    assert str(markupsafe.escape(HOSTILE)) in text
    assert long_value in text
    assert long_tag in page(c, '/ui/r/apps/evil/')


def _delete_form(c: InProcess, url: str, headers: dict[str, str] | None = None
                 ) -> dict[str, str]:
    text = page(c, url, headers)
    form = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', text))
    return {k: html.unescape(v) for k, v in form.items()}


def _post(c: InProcess, name: str, form: dict[str, str],
          headers: dict[str, str] | None = None) -> Resp:
    from urllib.parse import urlencode

    return c.post(f'/ui/r/{name}/-/delete', content=urlencode(form).encode(),
                  headers={'Content-Type': 'application/x-www-form-urlencoded',
                           'Sec-Fetch-Site': 'same-origin', **(headers or {})})


def test_delete_needs_confirmation_and_a_valid_csrf_token(tmp_path: Path) -> None:
    c = app(tmp_path / 'data')
    image, _ = push_image(c, 'apps/del', 'v1')
    push_image(c, 'apps/del', 'v2', seed='two')
    form = _delete_form(c, '/ui/r/apps/del/-/delete?reference=v1')
    assert form['reference'] == 'v1'

    refused = [
        {**form, 'csrf': ''},                                   # no token
        # forged: the last character changed (never to itself, as a fixed '0' was
        # one run in 16)
        {**form, 'csrf': form['csrf'][:-1] + ('1' if form['csrf'][-1] == '0' else '0')},
        {**form, 'reference': 'v2'},                            # token for v1 only
        {**form, 'csrf': '1.' + form['csrf'].split('.')[1]},    # expired
    ]
    for bad in refused:
        assert _post(c, 'apps/del', bad).status_code == 403
    cross = _post(c, 'apps/del', form, {'Sec-Fetch-Site': 'cross-site'})
    assert cross.status_code == 403
    assert c.get('/v2/apps/del/manifests/v1').status_code == 200
    assert c.get('/v2/apps/del/manifests/v2').status_code == 200

    done = _post(c, 'apps/del', form)
    assert done.status_code == 303
    assert done.headers['location'].endswith('/ui/r/apps/del/?deleted=v1')
    assert c.get('/v2/apps/del/manifests/v1').status_code == 404
    assert c.get(f'/v2/apps/del/manifests/{image}').status_code == 200  # a tag delete

    form = _delete_form(c, f'/ui/r/apps/del/-/delete?reference={image}')
    assert _post(c, 'apps/del', form).status_code == 303
    assert c.get(f'/v2/apps/del/manifests/{image}').status_code == 404


def test_disabled_deletes_show_no_button_and_refuse(tmp_path: Path) -> None:
    c = app(tmp_path / 'data', delete_tags=False, delete_manifests=False)
    push_image(c, 'apps/keep', 'v1')
    assert 'Delete' not in page(c, '/ui/r/apps/keep/')
    assert 'Delete manifest' not in page(c, '/ui/r/apps/keep/-/m/v1')
    page(c, '/ui/r/apps/keep/-/delete?reference=v1', status=405)


def test_odd_paths_are_404_pages_or_redirects_never_errors(tmp_path: Path) -> None:
    c = app(tmp_path / 'data')
    push_image(c, 'apps/x', 'v1')
    for url in ('/ui/r/A/', '/ui/r//-/m/x', '/ui/r/apps/x/-/referrers/sha256:zz',
                '/ui/r/apps/x/-/referrers/v1', f'/ui/r/apps/x/-/m/sha256:{"a" * 64}',
                '/ui/r/apps/x/-/m/%3Cx%3E', '/ui/static/..%2Fapp.py', '/ui/x',
                '/ui/r/apps/x/-/delete', '/ui/r/apps/x/-/delete?reference=sha256:bad',
                '/ui/r/apps/x/-/m/'):
        page(c, url, status=404)
    for url in ('/ui/?n=abc&last=%00', '/ui/r/apps/x/?page=99999999999&n=0',
                '/ui/r/apps/x/?sort=%3Cx&order=zz'):
        page(c, url)
    for url, to in (('/ui', '/ui/'), ('/ui/r/apps/x', '/ui/r/apps/x/')):
        r = c.get(url)
        assert r.status_code == 301 and r.headers['location'].endswith(to)
    assert c.post('/ui/').status_code == 405


def test_cached_repositories_are_marked_with_their_upstream(tmp_path: Path) -> None:
    """Issue 13 x 16: a repository under an upstream's prefix is marked as its
    cache, and its tags say when each was last revalidated there."""
    root = tmp_path / 'data'
    plain = app(root)  # no upstreams yet: the names are plain ones to push to
    v1, _ = push_image(plain, 'up.test/lib/app', 'v1', seed='cached')
    push_image(plain, 'up.test/lib/app', 'v2', seed='cached too')
    push_image(plain, 'mine/app', 'v1', seed='pushed')
    registry = open_registry(Config(root=root))
    asyncio.run(registry.meta.set_cache_tag('up.test/lib/app', 'v1', v1, 1_700_000_000.0))
    registry.close()
    c = app(root, upstream=parse_upstreams([{'name': 'up.test',
                                             'url': 'http://127.0.0.1:9'}]))
    rows = re.findall(r'<tr><td><a href="/ui/r/([^"]*)/">.*?<td class="source">(.*?)'
                      r'</td></tr>', page(c, '/ui/'))
    assert [(n, re.sub(r'<[^>]+>', '', s)) for n, s in rows] == [
        ('mine/app', 'pushed'), ('up.test/lib/app', 'cached from up.test')]
    text = page(c, '/ui/r/up.test/lib/app/')
    assert '<span class="kind cached" id="cached-from">cached from up.test</span>' in text
    assert re.findall(r'<td class="nowrap revalidated">([^<]*)</td>', text) == [
        '2023-11-14 22:13:20 UTC', 'unknown']  # v2: never revalidated
    # Its content is the upstream's: no delete (the API refuses writes there too).
    assert 'Delete tag' not in text
    assert 'Delete' not in page(c, f'/ui/r/up.test/lib/app/-/m/{v1}')
    assert 'pull-through cache of up.test' in page(
        c, '/ui/r/up.test/lib/app/-/delete?reference=v1', status=405)
    own = page(c, '/ui/r/mine/app/')
    assert 'cached-from' not in own and 'Revalidated' not in own
    assert 'Delete tag' in own
    # A registry without upstreams shows no source column at all.
    assert 'class="source"' not in page(app(root), '/ui/')


def test_ui_can_be_turned_off(tmp_path: Path) -> None:
    c = app(tmp_path / 'data', ui=False)
    assert c.get('/ui/').status_code == 404


@pytest.fixture(scope='module')
def users(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp('ui-users')
    access = base / 'access.toml'
    access.write_text(ACCESS)
    return write_htpasswd(base / 'htpasswd', PASSWORDS), access


@pytest.mark.parametrize('mode', ['basic', 'token'])
def test_pages_obey_the_api_access_rules(mode: str, tmp_path: Path,
                                         users: tuple[Path, Path]) -> None:
    htpasswd, access = users
    root = tmp_path / 'data'
    seed = app(root)
    push_image(seed, 'public/lib', 'v1')
    private, _ = push_image(seed, 'private/app', 'v1')
    c = app(root, auth=mode, htpasswd=htpasswd, access=access)
    reader = {'Authorization': basic_header('reader', PASSWORDS['reader'])}
    admin = {'Authorization': basic_header('admin', PASSWORDS['admin'])}

    # Anonymous and wrong passwords: the browser's Basic prompt.
    for headers in (None, {'Authorization': basic_header('reader', 'wrong')}):
        r = c.get('/ui/', headers=headers)
        assert r.status_code == 401
        assert r.headers['www-authenticate'].startswith('Basic realm=')

    home = page(c, '/ui/', reader)
    assert '/ui/r/public/lib/' in links(home) and 'private' not in home
    unknown = page(c, '/ui/r/nothing/here/', reader, status=404)
    for url in ('/ui/r/private/app/', '/ui/r/private/app/-/m/v1',
                f'/ui/r/private/app/-/m/{private}',
                f'/ui/r/private/app/-/referrers/{private}',
                '/ui/r/private/app/-/delete?reference=v1'):
        assert page(c, url, reader, status=404) == unknown, url
    assert 'Delete' not in page(c, '/ui/r/public/lib/', reader)
    page(c, '/ui/r/public/lib/-/delete?reference=v1', reader, status=403)
    assert _post(c, 'public/lib', {'reference': 'v1', 'csrf': 'x'},
                 reader).status_code == 403

    assert 'private/app' in page(c, '/ui/', admin)
    assert 'Delete tag' in page(c, '/ui/r/private/app/', admin)
    form = _delete_form(c, '/ui/r/private/app/-/delete?reference=v1', admin)
    # A token issued to one user is no good for another.
    assert _post(c, 'public/lib', {**form, 'reference': 'v1'},
                 reader).status_code == 403
    assert _post(c, 'private/app', form, admin).status_code == 303
    assert seed.get('/v2/private/app/manifests/v1').status_code == 404


def test_token_mode_accepts_a_bearer_token_with_its_own_scopes(
        tmp_path: Path, users: tuple[Path, Path]) -> None:
    htpasswd, access = users
    root = tmp_path / 'data'
    seed = app(root)
    push_image(seed, 'public/lib', 'v1')
    push_image(seed, 'public/other', 'v1')
    c = app(root, auth='token', htpasswd=htpasswd, access=access)
    r = c.get('/token?service=oci-ref&scope=repository:public/lib:pull',
              headers={'Authorization': basic_header('reader', PASSWORDS['reader'])})
    token = {'Authorization': 'Bearer ' + r.json()['token']}
    assert 'linux/amd64' in page(c, '/ui/r/public/lib/', token)
    # The token grants public/lib only, though the user could pull public/other.
    page(c, '/ui/r/public/other/', token, status=404)
    bad = c.get('/ui/r/public/lib/', headers={'Authorization': 'Bearer nope'})
    assert bad.status_code == 401
