"""Writing a report: blocks to markdown, markdown to a standalone HTML page (markdown-it-py),
table cells, figures saved atomically."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any


def _pm(mean: float | None, std: float | None, digits: int = 4) -> str:
    if mean is None:
        return "—"
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def _pyplot():
    from cifarlab.training import plots
    return plots.pyplot()  # raises the one-line "pip install 'cifarlab[plots]'" error


def _save(fig, path: Path) -> None:
    from cifarlab.training.plots import save_png
    save_png(fig, path, dpi=100)


def _finish(fig, axes, path: Path) -> None:
    """Grid and (where anything is labelled) a legend on each of ``axes``; save and close."""
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)
    _pyplot().close(fig)


def _setting_text(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "{}"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return "—" if value is None else str(value)


def _cell_md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_table(head: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(map(_cell_md, head)) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(map(_cell_md, row)) + " |" for row in body]) + "\n"


def render_md(blocks: list) -> str:
    """Blocks -> markdown: ("h1".."h3", text), ("p", markdown), ("table", head, body),
    ("img", path, alt), ("code", text)."""
    parts = []
    for kind, *rest in blocks:
        if kind in ("h1", "h2", "h3"):
            parts.append("#" * int(kind[1]) + " " + rest[0])
        elif kind == "p":
            parts.append(rest[0])
        elif kind == "table":
            parts.append(_md_table(*rest).rstrip())
        elif kind == "img":
            parts.append(f"![{rest[1]}]({rest[0]})")
        elif kind == "code":
            parts.append("```\n" + rest[0] + "\n```")
    return "\n\n".join(parts) + "\n"


_STYLE = ("body{font-family:sans-serif;max-width:1100px;margin:auto;padding:0 1em;line-height:1.4}"
          "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
          "text-align:right}th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}"
          "img{max-width:100%}pre{background:#f6f6f6;padding:.6em;overflow-x:auto;white-space:pre-wrap}")


def render_html(md: str, title: str) -> str:
    """A standalone page of ``md`` rendered by markdown-it-py (installed with rich): tables,
    links and images as the markdown means them; raw HTML in the text is shown, not run."""
    from markdown_it import MarkdownIt
    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(md)
    return (f"<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>\n<body>\n{body}</body></html>\n")


def _write_text(path: Path, text: str) -> None:
    from cifarlab.atomic import atomic_write_text
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)
