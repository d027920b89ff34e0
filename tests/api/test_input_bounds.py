"""Numbers and sizes a client controls are bounded: huge values are 4xx, never 500."""

from __future__ import annotations

from tests.support import assert_error, push_blob

HUGE = '9' * 5000  # past int()'s 4300-digit limit


def test_huge_range_numbers_are_answered_not_crashed(client, repo):
    d = push_blob(client, repo, b'x' * 2048)
    url = f'/v2/{repo}/blobs/{d}'
    r = client.get(url, headers={'Range': f'bytes=0-{HUGE}'})
    assert (r.status_code, r.headers['content-range']) == (206, 'bytes 0-2047/2048')
    assert client.get(url, headers={'Range': f'bytes={HUGE}-'}).status_code == 416
    r = client.get(url, headers={'Range': f'bytes=-{HUGE}'})
    assert (r.status_code, len(r.content)) == (206, 2048)


def test_huge_content_range_numbers_are_4xx_and_change_nothing(client, repo):
    loc = client.post(f'/v2/{repo}/blobs/uploads/').headers['location']
    for value in (f'0-{HUGE}', f'{HUGE}-1', f'{HUGE}-{HUGE}'):
        r = client.patch(loc, content=b'abc', headers={'Content-Range': value})
        assert 400 <= r.status_code < 500, (value, r.status_code)
    assert client.get(loc).headers['range'] == '0-0'


def test_huge_page_size_is_capped_not_crashed(client, repo):
    push_blob(client, repo, b'x')
    assert client.get(f'/v2/_catalog?n={"9" * 100}').status_code == 200
    assert_error(client.get(f'/v2/_catalog?n={HUGE}'), 400, 'UNSUPPORTED')


def test_oversized_request_headers_are_431_before_any_handler(client, repo):
    r = client.post(f'/v2/{repo}/blobs/uploads/', headers={'X-Junk': 'j' * 70_000})
    assert_error(r, 431, 'UNSUPPORTED')
    assert r.headers['docker-distribution-api-version'] == 'registry/2.0'
    # Nothing was started: the repository still has no sessions or content.
    assert client.get(f'/v2/{repo}/tags/list').status_code == 404
