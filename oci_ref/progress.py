"""Progress of a long command (``oci-ref migrate``) on stderr.

On a terminal: one line redrawn in place (a bar, counts, bytes), at most ten times a
second. Elsewhere (CI logs, a pipe): plain lines, one per tenth of the work and one
at the end of each phase, so a log shows progress without a flood of lines.
No library: none of the project's dependencies draws progress bars, and this is
a few lines (rich or tqdm would be a new dependency for one line of output).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

BAR_WIDTH = 30
REDRAW_SECONDS = 0.1


def human_bytes(n: float) -> str:
    for unit in ('B', 'KiB', 'MiB', 'GiB'):
        if n < 1024 or unit == 'GiB':
            return f'{n:.0f} {unit}' if unit == 'B' else f'{n:.1f} {unit}'
        n /= 1024
    raise AssertionError('unreachable')


class Progress:
    """One phase at a time: :meth:`start`, :meth:`advance` per item, :meth:`finish`."""

    def __init__(self, stream: TextIO | None = None, *, tty: bool | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.clock = clock
        self.phase = ''
        self.total = self.done = 0
        self.total_bytes = self.done_bytes = 0
        self._drawn = 0.0
        self._tenth = -1

    def start(self, phase: str, total: int, total_bytes: int = 0) -> None:
        self.phase, self.total, self.total_bytes = phase, total, total_bytes
        self.done = self.done_bytes = 0
        self._drawn, self._tenth = 0.0, -1
        self._show(force=True)

    def advance(self, items: int = 1, nbytes: int = 0) -> None:
        self.done += items
        self.done_bytes += nbytes
        self._show()

    def finish(self) -> None:
        self._show(force=True)
        if self.tty:
            print(file=self.stream, flush=True)

    def _text(self) -> str:
        percent = 100 * self.done // self.total if self.total else 100
        text = f'{self.phase}: {self.done}/{self.total} ({percent}%)'
        if self.total_bytes:
            text += (f', {human_bytes(self.done_bytes)} of '
                     f'{human_bytes(self.total_bytes)}')
        return text

    def _show(self, force: bool = False) -> None:
        if self.tty:
            now = self.clock()
            if not force and now - self._drawn < REDRAW_SECONDS:
                return
            self._drawn = now
            share = self.done / self.total if self.total else 1.0
            filled = int(BAR_WIDTH * share)
            bar = '#' * filled + '.' * (BAR_WIDTH - filled)
            print(f'\r[{bar}] {self._text()}\x1b[K', end='', file=self.stream,
                  flush=True)
            return
        tenth = 10 * self.done // self.total if self.total else 10
        if tenth != self._tenth:
            self._tenth = tenth
            print(self._text(), file=self.stream, flush=True)
