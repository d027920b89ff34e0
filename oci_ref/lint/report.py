"""The lint report: findings grouped by client and rule, as JSON, HTML or text.

``GET /lint/report`` (JSON; HTML when the client prefers text/html) and
``GET /lint/report.html`` serve it; ``oci-ref lint report`` prints it.
"""

from __future__ import annotations

import asyncio
import html
import json
from typing import Any

import falcon
import falcon.asgi

from oci_ref.lint.rules import NOT_OBSERVABLE, RULES
from oci_ref.lint.store import LintStore


def build(findings: list[dict[str, Any]],
          seen: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The report: each client (User-Agent and address) with the requests linted,
    its rules, counts and one example request each; and the rule catalog."""
    clients: dict[tuple[str, str], dict[str, Any]] = {}

    def entry(ua: str, address: str) -> dict[str, Any]:
        return clients.setdefault((ua, address), {
            'user_agent': ua, 'address': address, 'requests': 0, 'total': 0,
            'rules': []})

    for c in seen or []:
        entry(c['user_agent'], c['address'])['requests'] = c['requests']
    for f in findings:
        client = entry(f['user_agent'], f['address'])
        client['total'] += f['count']
        client['rules'].append({'id': f['rule'], 'count': f['count'],
                                'first_seen': f['first_seen'],
                                'last_seen': f['last_seen'], 'example': f['example']})
    return {
        'clients': list(clients.values()),
        'total': sum(c['total'] for c in clients.values()),
        'rules': {r.id: {'title': r.title, 'level': r.level, 'section': r.section,
                         'spec': r.spec} for r in RULES.values()},
        'not_observable': [{'what': what, 'section': section, 'why': why}
                           for what, section, why in NOT_OBSERVABLE],
    }


def to_text(report: dict[str, Any]) -> str:
    if not report['clients']:
        return 'no requests linted yet\n'
    lines = []
    for client in report['clients']:
        lines.append(f'{client["user_agent"] or "(no User-Agent)"} '
                     f'[{client["address"]}]: {client["total"]} findings in '
                     f'{client["requests"]} requests')
        for rule in client['rules']:
            info = report['rules'].get(rule['id'], {})
            ex = rule['example']
            lines.append(f'  {rule["id"]} x{rule["count"]} ({info.get("level", "")} '
                         f'{info.get("section", "")})')
            lines.append(f'    e.g. {ex["method"]} {ex["path"]} -> {ex["status"]}: '
                         f'{ex["detail"]}')
    return '\n'.join(lines) + '\n'


def to_html(report: dict[str, Any]) -> str:
    e = html.escape
    parts = ['<!doctype html><html><head><meta charset="utf-8">'
             '<title>oci-ref lint report</title><style>'
             'body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}'
             'td,th{border:1px solid #ccc;padding:.3em .6em;vertical-align:top;'
             'text-align:left}code{font-size:90%}</style></head><body>',
             f'<h1>oci-ref lint report</h1><p>{report["total"]} findings; '
             f'{len(report["clients"])} clients.</p>']
    for client in report['clients']:
        parts.append(f'<h2>{e(client["user_agent"] or "(no User-Agent)")} '
                     f'<small>{e(client["address"])}: {client["total"]} findings in '
                     f'{client["requests"]} requests</small></h2>')
        if not client['rules']:
            continue
        parts.append('<table><tr><th>rule</th><th>count</th><th>spec</th>'
                     '<th>example</th></tr>')
        for rule in client['rules']:
            info = report['rules'].get(rule['id'], {})
            ex = rule['example']
            parts.append(
                f'<tr><td><code>{e(rule["id"])}</code><br>{e(info.get("title", ""))}'
                f'</td><td>{rule["count"]}</td><td>{e(info.get("level", ""))} '
                f'{e(info.get("section", ""))}<br><small>{e(info.get("spec", ""))}'
                f'</small></td><td><code>{e(ex["method"])} {e(ex["path"])}</code> '
                f'&rarr; {ex["status"]}<br>{e(ex["detail"])}<details><summary>headers'
                f'</summary><pre>{e(json.dumps(ex["headers"], indent=1))}</pre>'
                f'</details></td></tr>')
        parts.append('</table>')
    parts.append('<h2>Not observable from the registry</h2><ul>')
    for item in report['not_observable']:
        parts.append(f'<li>{e(item["what"])} ({e(item["section"])}): '
                     f'{e(item["why"])}</li>')
    parts.append('</ul></body></html>')
    return ''.join(parts)


def prefers_html(accept: str | None) -> bool:
    """text/html listed before (or without) application/json."""
    if not accept:
        return False
    types = [part.split(';', 1)[0].strip().lower() for part in accept.split(',')]
    if 'text/html' not in types:
        return False
    return 'application/json' not in types or \
        types.index('text/html') < types.index('application/json')


class LintReport:
    """GET /lint/report and /lint/report.html."""

    def __init__(self, store: LintStore):
        self.store = store

    async def _report(self) -> dict[str, Any]:
        def read() -> dict[str, Any]:
            return build(self.store.findings(), self.store.clients())

        return await asyncio.to_thread(read)

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """GET /lint/report: JSON, or HTML when Accept prefers text/html."""
        report = await self._report()
        if prefers_html(req.get_header('Accept')):
            resp.content_type = 'text/html; charset=utf-8'
            resp.text = to_html(report)
        else:
            resp.content_type = 'application/json'
            resp.data = json.dumps(report).encode()

    async def on_get_html(self, req: falcon.asgi.Request,
                          resp: falcon.asgi.Response) -> None:
        """GET /lint/report.html."""
        resp.content_type = 'text/html; charset=utf-8'
        resp.text = to_html(await self._report())
