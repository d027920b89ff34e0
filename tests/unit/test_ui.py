"""The web view's HTTP-free parts: CSRF tokens, the origin check, the graph layout,
the filters and paths the templates use."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from oci_ref.ui.csrf import Csrf, same_origin
from oci_ref.ui.graph import BOX_W, layout
from oci_ref.ui.model import Graph, GraphNode
from oci_ref.ui.render import human_size, render, short_digest, ui_path
from tests.backends import Backend


def test_csrf_tokens_bind_user_action_and_target_and_expire() -> None:
    csrf = Csrf(secrets.token_bytes(32))
    token = csrf.issue('alice', 'delete', 'a/b', 'v1', now=1000)
    assert csrf.valid(token, 'alice', 'delete', 'a/b', 'v1', now=1000 + 3599)
    for parts in (('bob', 'delete', 'a/b', 'v1'), ('alice', 'delete', 'a/b', 'v2'),
                  ('alice', 'delete', 'a/c', 'v1'), ('', 'delete', 'a/b', 'v1')):
        assert not csrf.valid(token, *parts, now=1001)
    assert not csrf.valid(token, 'alice', 'delete', 'a/b', 'v1', now=1000 + 3601)
    assert not csrf.valid(token, 'alice', 'delete', 'a/b', 'v1', now=999)  # future
    issued, mac = token.split('.')
    full_width = '\uff11\uff10\uff10\uff10'  # '1000' in full-width digits
    for forged in ('', 'x', f'{issued}.', f'{int(issued) + 1}.{mac}',
                   f'{issued}.{mac[:-1]}', f'-1.{mac}', f'{"9" * 40}.{mac}',
                   f'{full_width}.{mac}'):
        assert not csrf.valid(forged, 'alice', 'delete', 'a/b', 'v1', now=1001), forged


@pytest.mark.parametrize('backend', ['sqlite+filesystem', 'postgresql+filesystem'],
                         indirect=True)
def test_the_csrf_key_is_one_for_every_process_of_a_store(backend: Backend,
                                                          tmp_path: Path) -> None:
    """Two stores on one database (two workers or replicas) issue and accept each
    other's tokens; another registry's store does not; no key file on disk."""
    one, two = backend.registry(), backend.registry()
    other = Backend(tmp_path / 'other').registry()
    try:
        first, second = Csrf.from_store(one.meta), Csrf.from_store(two.meta)
        token = first.issue('u', 'delete', 'r', 't')
        assert second.valid(token, 'u', 'delete', 'r', 't')
        assert len(first.key) == 32
        assert not Csrf.from_store(other.meta).valid(token, 'u', 'delete', 'r', 't')
        assert not list(backend.root.glob('.ui-csrf-key*'))
    finally:
        for registry in (one, two, other):
            registry.close()


@pytest.mark.parametrize(('origin', 'site', 'ok'), [
    (None, 'same-origin', True), (None, 'none', True), (None, 'cross-site', False),
    (None, 'same-site', False), ('http://127.0.0.1:5000', None, True),
    ('http://evil.example', None, False), ('https://127.0.0.1:5000', None, False),
    ('http://evil.example', 'same-origin', True),  # fetch metadata decides
    (None, None, True),  # neither sent: the token alone decides
])
def test_same_origin(origin: str | None, site: str | None, ok: bool) -> None:
    assert same_origin(origin, site, '127.0.0.1:5000', 'http') is ok


def test_graph_layout_puts_referrers_in_columns_with_arrows_to_subjects() -> None:
    graph = Graph('sha256:' + 'a' * 64, [
        GraphNode('sha256:' + 'a' * 64, 'application/vnd.oci.image.index.v1+json', '', 0,
                  True),
        GraphNode('sha256:' + 'b' * 64, 'x' * 100, 'subject', 1, True),
        GraphNode('sha256:' + 'c' * 64, 'sig', f'tag sha256-{"a" * 64}.sig', 1, True),
        GraphNode('sha256:' + 'd' * 64, 'att', 'subject', 2, False),
    ], [('sha256:' + 'b' * 64, 'sha256:' + 'a' * 64),
        ('sha256:' + 'c' * 64, 'sha256:' + 'a' * 64),
        ('sha256:' + 'd' * 64, 'sha256:' + 'b' * 64)], False)
    drawn = layout(graph)
    boxes = {b.digest[7]: b for b in drawn.boxes}
    assert boxes['a'].root and not boxes['b'].root
    assert boxes['b'].x == boxes['c'].x > boxes['a'].x and boxes['d'].x > boxes['b'].x
    assert boxes['c'].y > boxes['b'].y
    assert len(boxes['b'].label) <= 36 and boxes['b'].title == 'x' * 100
    assert len(boxes['c'].note) < 25 and boxes['c'].note.endswith('.sig')
    assert len(drawn.arrows) == 3
    # Each arrow runs from the referrer's left edge to its subject's right edge.
    first = drawn.arrows[0]
    assert (first.x1, first.x2) == (boxes['b'].x, boxes['a'].x + BOX_W)
    assert drawn.width >= boxes['d'].x + BOX_W and drawn.height > boxes['c'].y


def test_filters_and_paths() -> None:
    assert [human_size(n) for n in (None, 0, 1023, 1024, 5 * 1024**3)] == [
        '-', '0 B', '1023 B', '1.0 KiB', '5.0 GiB']
    assert short_digest('sha256:' + 'f' * 64) == 'sha256:ffffffffffff'
    assert ui_path('a/b') == '/ui/r/a/b/'
    assert ui_path('a/b', 'm', 'sha256:00') == '/ui/r/a/b/-/m/sha256:00'
    assert ui_path('a', 'm', 'x y/<z>') == '/ui/r/a/-/m/x%20y%2F%3Cz%3E'


def test_templates_autoescape() -> None:
    text = render('error.html', viewer=None, status=400, title='<b>"x"</b>',
                  detail="<script>'y'</script>").decode()
    assert '<b>' not in text and '<script>' not in text
    assert '&lt;b&gt;&#34;x&#34;&lt;/b&gt;' in text
