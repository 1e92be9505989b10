"""Architecture diagrams like Keras' plot_model(show_shapes=True), with no system tools.

One box per layer (branchy Inception / residual blocks drawn as one box each) with its
input and output shapes, arrows top to bottom. SVG is written by hand (pure Python);
PNG is drawn with matplotlib (the ``plots`` extra).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import torch.nn as nn

from cifarlab.atomic import atomic_path
from cifarlab.errors import CifarlabError, ConfigError
from cifarlab.models.inspect import LayerRecord, is_block_or_leaf, trace

_W, _H, _GAP, _MARGIN, _TITLE = 460, 46, 22, 20, 40  # pixels


@dataclass
class Box:
    x: int
    y: int
    title: str      # "blocks.0: BasicBlock"
    detail: str     # "(64, 32, 32) -> (64, 32, 32) | 73,984 params"


def _fmt(shapes) -> str:
    return " + ".join(str(tuple(s)) for s in shapes)


def layout(records: list[LayerRecord]) -> tuple[list[Box], int, int]:
    boxes = []
    for i, r in enumerate(records):
        detail = f"{tuple(r.input_shape)} -> {_fmt(r.output_shapes)}"
        if r.params:
            detail += f" | {r.params:,} params"
        boxes.append(Box(_MARGIN, _TITLE + _MARGIN + i * (_H + _GAP), f"{r.name}: {r.kind}", detail))
    height = _TITLE + 2 * _MARGIN + len(boxes) * (_H + _GAP) - _GAP
    return boxes, _W + 2 * _MARGIN, height


def to_svg(title: str, records: list[LayerRecord]) -> str:
    boxes, width, height = layout(records)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" font-family="DejaVu Sans, Arial, sans-serif">',
             '<defs><marker id="arrow" markerWidth="10" markerHeight="8" refX="9" refY="4" '
             'orient="auto"><path d="M0,0 L10,4 L0,8 z" fill="#444"/></marker></defs>',
             f'<text x="{width // 2}" y="{_MARGIN + 14}" text-anchor="middle" font-size="16" '
             f'font-weight="bold">{escape(title)}</text>']
    for i, b in enumerate(boxes):
        parts += _svg_box(b)
        if i + 1 < len(boxes):
            cx = b.x + _W // 2
            parts.append(f'<line x1="{cx}" y1="{b.y + _H}" x2="{cx}" y2="{b.y + _H + _GAP - 2}" '
                         'stroke="#444" stroke-width="1.5" marker-end="url(#arrow)"/>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _svg_box(b: Box) -> list[str]:
    cx = b.x + _W // 2
    return [f'<g><rect x="{b.x}" y="{b.y}" width="{_W}" height="{_H}" rx="6" fill="#eef3fb" '
            'stroke="#4a6fa5"/>',
            f'<text x="{cx}" y="{b.y + 19}" text-anchor="middle" font-size="13">{escape(b.title)}</text>',
            f'<text x="{cx}" y="{b.y + 36}" text-anchor="middle" font-size="11" fill="#333">'
            f'{escape(b.detail)}</text></g>']


def _draw_png(title: str, records: list[LayerRecord], path: Path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
        from matplotlib.patches import FancyBboxPatch
    except ImportError:
        raise CifarlabError("PNG diagrams need matplotlib: pip install 'cifarlab[plots]' (or write .svg)") from None
    boxes, width, height = layout(records)
    dpi = 100
    fig = plt.figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.axis("off")
    ax.text(width / 2, _MARGIN + 10, title, ha="center", va="center", fontsize=12, weight="bold")
    for i, b in enumerate(boxes):
        ax.add_patch(FancyBboxPatch((b.x, b.y), _W, _H, boxstyle="round,pad=0,rounding_size=6",
                                    facecolor="#eef3fb", edgecolor="#4a6fa5"))
        ax.text(b.x + _W / 2, b.y + 15, b.title, ha="center", va="center", fontsize=9)
        ax.text(b.x + _W / 2, b.y + 32, b.detail, ha="center", va="center", fontsize=7.5, color="#333")
        if i + 1 < len(boxes):
            ax.annotate("", xy=(b.x + _W / 2, b.y + _H + _GAP), xytext=(b.x + _W / 2, b.y + _H),
                        arrowprops=dict(arrowstyle="->", color="#444"))
    fig.savefig(path, dpi=dpi, format="png")
    plt.close(fig)


def write_diagram(model: nn.Module, path: str | os.PathLike, title: str,
                  input_size: tuple[int, int, int] = (3, 32, 32)) -> Path:
    """Write an .svg or .png diagram of ``model`` at block granularity; returns the path."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".svg", ".png"):
        raise ConfigError(f"diagram file {path} must end in .svg or .png")
    if not path.parent.exists():
        raise ConfigError(f"folder {path.parent} does not exist: create it or choose another -o path")
    records = trace(model, input_size, stop=is_block_or_leaf)
    with atomic_path(path, suffix) as tmp:
        if suffix == ".svg":
            tmp.write_text(to_svg(title, records), encoding="utf-8")
        else:
            _draw_png(title, records, tmp)
    return path
