"""Architecture diagrams with their joins, like Keras' ``plot_model(show_shapes=True,
expand_nested=True)``, with no system tools.

``graph(model)`` traces the model with ``torch.fx`` into layers (leaf modules) and the
operations that join them (additions of residual blocks, concatenations of Inception
branches), each with its output shape; each node remembers the block it sits in. The
drawing puts every node on the row of its longest path from the input, the branches of a
block side by side, and routes an edge that skips rows (a shortcut) around the nodes it
passes; each top-level block gets a frame with its name. A model ``torch.fx`` cannot trace
is drawn as the chain of its blocks, as before (``chain_graph``).

SVG is written by hand (pure Python); PNG is drawn with matplotlib (the ``plots`` extra).
"""

from __future__ import annotations

import operator
import os
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

import torch
import torch.nn as nn

from cifarlab.atomic import atomic_path
from cifarlab.errors import CifarlabError, ConfigError
from cifarlab.models.inspect import is_block_or_leaf, trace

_W, _H, _HGAP, _VGAP, _MARGIN, _TITLE, _LANE = 230, 40, 24, 26, 24, 40, 14  # pixels


@dataclass
class Node:
    id: str
    title: str  # "layer1.0.conv1: Conv2d", "add", "concat"
    shape: str  # output shape per image, "(64, 32, 32)"
    kind: str  # "input" | "layer" | "join" | "op" | "output"
    block: str = ""  # the top-level block the node sits in ("layer1.0"), "" outside any
    params: int = 0
    inputs: list[str] = field(default_factory=list)  # ids of the nodes feeding it, in order
    rank: int = 0
    x: float = 0.0
    y: float = 0.0


@dataclass
class Graph:
    nodes: dict[str, Node]  # in execution order

    def by_title(self, text: str) -> list[Node]:
        return [n for n in self.nodes.values() if text in n.title]

    @property
    def edges(self) -> list[tuple[str, str]]:
        return [(src, n.id) for n in self.nodes.values() for src in n.inputs]


_JOINS = {operator.add: "add", operator.iadd: "add", torch.add: "add", torch.cat: "concat",
          torch.concat: "concat", operator.mul: "multiply", torch.mul: "multiply", torch.stack: "stack"}


# ---------------------------------------------------------------- the graph
def graph(model: nn.Module, input_size: tuple[int, int, int] = (3, 32, 32)) -> Graph:
    """Layers and joins of ``model`` with their output shapes (torch.fx + shape propagation)."""
    import torch.fx
    from torch.fx.passes.shape_prop import ShapeProp

    gm = torch.fx.symbolic_trace(model)
    was_training = model.training
    gm.eval()
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(torch.zeros(1, *input_size, device=_device(model)))
    finally:
        gm.train(was_training)
    modules = dict(gm.named_modules())
    nodes: dict[str, Node] = {}
    alias: dict[str, str] = {}  # a dropped node (getitem, a size) -> the node standing for it
    for n in gm.graph.nodes:
        sources = _dedupe([alias.get(a.name, a.name) for a in n.all_input_nodes if alias.get(a.name, a.name)])
        shape = _shape(n.meta.get("tensor_meta"))
        if n.op == "placeholder":
            nodes[n.name] = Node(n.name, "input", str(tuple(input_size)), "input")
        elif n.op == "output":
            nodes[n.name] = Node(n.name, "output", _shape_of(nodes, sources), "output", inputs=sources)
        elif shape is None or (n.op == "call_function" and n.target is operator.getitem):
            alias[n.name] = sources[0] if sources else ""  # not a tensor of its own: pass through
        elif n.op == "call_module":
            m = modules[n.target]
            params = sum(p.numel() for p in m.parameters())
            nodes[n.name] = Node(n.name, f"{n.target}: {type(m).__name__}", shape, "layer", _block(n.target),
                                 params, sources)
        elif n.op == "get_attr":
            alias[n.name] = ""
        else:
            join = _JOINS.get(n.target) if n.op == "call_function" else None
            name = join or (n.target if isinstance(n.target, str) else getattr(n.target, "__name__", str(n.target)))
            nodes[n.name] = Node(n.name, name, shape, "join" if join and len(sources) > 1 else "op",
                                 _block_of(nodes, sources), 0, sources)
    _drop_trivial(nodes)
    return Graph(nodes)


def chain_graph(model: nn.Module, input_size: tuple[int, int, int] = (3, 32, 32)) -> Graph:
    """The blocks of ``model`` one after another (for models torch.fx cannot trace)."""
    nodes = {"input": Node("input", "input", str(tuple(input_size)), "input")}
    last = "input"
    for i, r in enumerate(trace(model, input_size, stop=is_block_or_leaf)):
        shapes = " + ".join(str(tuple(s)) for s in r.output_shapes)
        nodes[f"n{i}"] = Node(f"n{i}", f"{r.name}: {r.kind}", shapes, "layer", "", r.params, [last])
        last = f"n{i}"
    nodes["output"] = Node("output", "output", nodes[last].shape, "output", inputs=[last])
    return Graph(nodes)


def model_graph(model: nn.Module, input_size: tuple[int, int, int] = (3, 32, 32)) -> Graph:
    """``graph``, or ``chain_graph`` where torch.fx cannot trace the model."""
    try:
        return graph(model, input_size)
    except Exception:  # fx refuses data-dependent control flow and some custom modules
        return chain_graph(model, input_size)


def _device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _shape(meta) -> str | None:
    if meta is None:
        return None
    if hasattr(meta, "shape"):  # a TensorMetadata (itself a tuple)
        return str(tuple(meta.shape[1:]))
    if isinstance(meta, (tuple, list)):
        shapes = [_shape(m) for m in meta]
        return " + ".join(s for s in shapes if s) or None
    shape = getattr(meta, "shape", None)
    return None if shape is None else str(tuple(shape[1:]))


def _shape_of(nodes: dict[str, Node], ids: list[str]) -> str:
    return " + ".join(nodes[i].shape for i in ids if i in nodes and nodes[i].shape)


def _block(target: str) -> str:
    """The top-level block of a module path: "layers.0.conv1" -> "layers.0", "stem.0" -> "stem"."""
    parts = target.split(".")
    if len(parts) >= 3 and parts[1].isdigit():
        return ".".join(parts[:2])
    return parts[0] if len(parts) > 1 else ""


def _block_of(nodes: dict[str, Node], ids: list[str]) -> str:
    blocks = {nodes[i].block for i in ids if i in nodes}
    return blocks.pop() if len(blocks) == 1 else ""


def _dedupe(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _drop_trivial(nodes: dict[str, Node]) -> None:
    """An identity module (a shortcut that does nothing) is drawn as the edge it is."""
    for nid in [n.id for n in nodes.values() if n.title.endswith(": Identity")]:
        node = nodes.pop(nid)
        for other in nodes.values():
            if nid in other.inputs:
                i = other.inputs.index(nid)
                other.inputs[i:i + 1] = [s for s in node.inputs if s not in other.inputs]


# ---------------------------------------------------------------- layout
def layout(g: Graph) -> tuple[int, int]:
    """Rows by longest path from the input, branches side by side; returns (width, height)."""
    for n in g.nodes.values():
        n.rank = 1 + max((g.nodes[s].rank for s in n.inputs if s in g.nodes), default=-1)
    rows: dict[int, list[Node]] = {}
    for n in g.nodes.values():
        rows.setdefault(n.rank, []).append(n)
    widest = max(len(r) for r in rows.values())
    width = widest * (_W + _HGAP) - _HGAP + 2 * _MARGIN + 4 * _LANE
    centre = _MARGIN + (width - 2 * _MARGIN - 4 * _LANE) / 2
    for rank in sorted(rows):
        row = rows[rank]
        # order by where the parents sit, so branches do not cross
        row.sort(key=lambda n: sum(g.nodes[s].x for s in n.inputs if s in g.nodes) / max(1, len(n.inputs)))
        span = len(row) * (_W + _HGAP) - _HGAP
        for i, n in enumerate(row):
            n.x = centre - span / 2 + i * (_W + _HGAP)
            n.y = _TITLE + _MARGIN + rank * (_H + _VGAP)
    height = _TITLE + 2 * _MARGIN + len(rows) * (_H + _VGAP) - _VGAP
    return int(width), int(height)


def _route(g: Graph, src: Node, dst: Node) -> list[tuple[float, float]]:
    """Points of the edge src -> dst: straight to the next row, else around the rows between."""
    start, end = (src.x + _W / 2, src.y + _H), (dst.x + _W / 2, dst.y)
    if dst.rank - src.rank <= 1:
        return [start, end]
    between = [n for n in g.nodes.values() if src.rank < n.rank < dst.rank]
    lane = max([n.x + _W for n in between] + [src.x + _W, dst.x + _W]) + _LANE
    side = (dst.x + _W, dst.y + _H / 2)  # into the join's side, apart from the arrow from above
    return [start, (start[0], start[1] + _VGAP / 3), (lane, start[1] + _VGAP / 3), (lane, side[1]), side]


def _frames(g: Graph) -> list[tuple[str, float, float, float, float]]:
    """(name, x, y, w, h) of a frame around each block of several nodes."""
    out = []
    blocks: dict[str, list[Node]] = {}
    for n in g.nodes.values():
        if n.block:
            blocks.setdefault(n.block, []).append(n)
    for name, members in blocks.items():
        if len(members) < 2:
            continue
        x0, y0 = min(n.x for n in members) - 8, min(n.y for n in members) - 16
        x1, y1 = max(n.x + _W for n in members) + 8, max(n.y + _H for n in members) + 6
        out.append((name, x0, y0, x1 - x0, y1 - y0))
    return out


def _label(n: Node) -> tuple[str, str]:
    detail = n.shape or ""
    if n.params:
        detail += f" | {n.params:,} params"
    return n.title, detail


# ---------------------------------------------------------------- drawing
_FILL = {"input": "#f3f3f3", "output": "#f3f3f3", "layer": "#eef3fb", "join": "#fff1d6", "op": "#f4f4f4"}
_EDGE = {"input": "#888", "output": "#888", "layer": "#4a6fa5", "join": "#c98a00", "op": "#999"}


def to_svg(title: str, g: Graph) -> str:
    width, height = layout(g)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" font-family="DejaVu Sans, Arial, sans-serif">',
             f'<rect width="{width}" height="{height}" fill="white"/>',
             '<defs><marker id="arrow" markerWidth="10" markerHeight="8" refX="9" refY="4" '
             'orient="auto"><path d="M0,0 L10,4 L0,8 z" fill="#444"/></marker></defs>',
             f'<text x="{width // 2}" y="{_MARGIN + 12}" text-anchor="middle" font-size="16" '
             f'font-weight="bold">{escape(title)}</text>']
    for name, x, y, w, h in _frames(g):
        parts.append(f'<g class="block"><rect x="{x:.0f}" y="{y:.0f}" width="{w:.0f}" height="{h:.0f}" rx="8" '
                     f'fill="none" stroke="#bbb" stroke-dasharray="4 3"/><text x="{x + 6:.0f}" y="{y + 11:.0f}" '
                     f'font-size="10" fill="#777">{escape(name)}</text></g>')
    for src, dst in g.edges:
        points = _route(g, g.nodes[src], g.nodes[dst])
        path = " ".join(f"{px:.0f},{py:.0f}" for px, py in points)
        parts.append(f'<polyline class="edge" data-from="{escape(src)}" data-to="{escape(dst)}" points="{path}" '
                     f'fill="none" stroke="#444" stroke-width="1.3" marker-end="url(#arrow)"/>')
    for n in g.nodes.values():
        head, detail = _label(n)
        cx = n.x + _W / 2
        parts.append(f'<g class="node {n.kind}" id="{escape(n.id)}"><rect x="{n.x:.0f}" y="{n.y:.0f}" width="{_W}" '
                     f'height="{_H}" rx="6" fill="{_FILL[n.kind]}" stroke="{_EDGE[n.kind]}"/>'
                     f'<text x="{cx:.0f}" y="{n.y + 16:.0f}" text-anchor="middle" font-size="12">{escape(head)}</text>'
                     f'<text x="{cx:.0f}" y="{n.y + 31:.0f}" text-anchor="middle" font-size="10" fill="#333">'
                     f'{escape(detail)}</text></g>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _draw_png(title: str, g: Graph, path: Path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
        from matplotlib.patches import FancyBboxPatch
    except ImportError:
        raise CifarlabError("PNG diagrams need matplotlib: pip install 'cifarlab[plots]' (or write .svg)") from None
    width, height = layout(g)
    dpi = 100
    fig = plt.figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.axis("off")
    ax.text(width / 2, _MARGIN + 8, title, ha="center", va="center", fontsize=12, weight="bold")
    for name, x, y, w, h in _frames(g):
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0,rounding_size=8", facecolor="none",
                                    edgecolor="#bbb", linestyle="--"))
        ax.text(x + 6, y + 8, name, fontsize=6.5, color="#777", va="center")
    for src, dst in g.edges:
        points = _route(g, g.nodes[src], g.nodes[dst])
        xs, ys = zip(*points)
        ax.plot(xs[:-1], ys[:-1], color="#444", linewidth=1)
        ax.annotate("", xy=points[-1], xytext=points[-2], arrowprops=dict(arrowstyle="->", color="#444"))
    for n in g.nodes.values():
        head, detail = _label(n)
        ax.add_patch(FancyBboxPatch((n.x, n.y), _W, _H, boxstyle="round,pad=0,rounding_size=6",
                                    facecolor=_FILL[n.kind], edgecolor=_EDGE[n.kind]))
        ax.text(n.x + _W / 2, n.y + 13, head, ha="center", va="center", fontsize=8)
        ax.text(n.x + _W / 2, n.y + 28, detail, ha="center", va="center", fontsize=6.5, color="#333")
    fig.savefig(path, dpi=dpi, format="png")
    plt.close(fig)


def write_diagram(model: nn.Module, path: str | os.PathLike, title: str,
                  input_size: tuple[int, int, int] = (3, 32, 32)) -> Path:
    """Write an .svg or .png diagram of ``model`` with its joins; returns the path."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".svg", ".png"):
        raise ConfigError(f"diagram file {path} must end in .svg or .png")
    if not path.parent.is_dir():
        raise ConfigError(f"folder {path.parent} does not exist: create it or choose another -o path")
    g = model_graph(model, input_size)
    with atomic_path(path, suffix) as tmp:
        if suffix == ".svg":
            tmp.write_text(to_svg(title, g), encoding="utf-8")
        else:
            _draw_png(title, g, tmp)
    return path
