"""Layout of the referrer graph as server-side SVG: columns by distance from the
subject, one box per manifest, an arrow from each referrer to its subject. Drawn
by the template as plain SVG with links, so it works with JavaScript off."""

from __future__ import annotations

from dataclasses import dataclass

from oci_ref.ui.model import Graph

BOX_W = 340
BOX_H = 58
COL_GAP = 90
ROW_GAP = 18
MARGIN = 12
LABEL_MAX = 36  # characters of a type shown in a box (the full one is in the title)


@dataclass(frozen=True, slots=True)
class Box:
    digest: str
    label: str
    title: str
    via: str
    note: str  # how it was found, short enough for the box
    present: bool
    root: bool
    x: int
    y: int


@dataclass(frozen=True, slots=True)
class Arrow:
    x1: int
    y1: int
    x2: int
    y2: int


@dataclass(frozen=True, slots=True)
class Layout:
    boxes: list[Box]
    arrows: list[Arrow]
    width: int
    height: int
    box_w: int = BOX_W
    box_h: int = BOX_H


def layout(graph: Graph) -> Layout:
    columns: dict[int, int] = {}
    boxes: dict[str, Box] = {}
    for node in graph.nodes:
        row = columns.get(node.depth, 0)
        columns[node.depth] = row + 1
        label = node.label
        if len(label) > LABEL_MAX:
            label = label[:LABEL_MAX - 1] + '…'
        boxes[node.digest] = Box(
            node.digest, label, node.label, node.via, _note(node.via), node.present,
            node.digest == graph.root,
            MARGIN + node.depth * (BOX_W + COL_GAP), MARGIN + row * (BOX_H + ROW_GAP))
    arrows = []
    for referrer, subject in graph.edges:
        a, b = boxes.get(referrer), boxes.get(subject)
        if a is None or b is None or a is b:
            continue
        arrows.append(Arrow(a.x, a.y + BOX_H // 2, b.x + BOX_W, b.y + BOX_H // 2))
    width = MARGIN * 2 + max(columns) * (BOX_W + COL_GAP) + BOX_W if columns else 0
    height = MARGIN * 2 + max(columns.values(), default=0) * (BOX_H + ROW_GAP)
    return Layout(list(boxes.values()), arrows, width, height)


def _note(via: str) -> str:
    """'subject', or the fallback tag cut to fit (``tag sha256-93bd…sig``)."""
    if not via.startswith('tag '):
        return via
    tag = via[4:]
    return 'tag ' + (tag if len(tag) <= 16 else f'{tag[:11]}…{tag[-4:]}')
