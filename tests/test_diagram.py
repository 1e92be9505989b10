"""Diagrams with their joins: residual additions and Inception concatenations are nodes with
every input drawn, checked against the models' own structure."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
import torch.nn as nn

from cifarlab.cli import main
from cifarlab.models import create_model
from cifarlab.models.diagram import chain_graph, graph, model_graph, to_svg


def _ancestors(g, nid):
    seen, todo = set(), [nid]
    while todo:
        for s in g.nodes[todo.pop()].inputs:
            if s not in seen:
                seen.add(s)
                todo.append(s)
    return seen


def test_resnet18_adds_join_the_block_and_its_shortcut():
    model = create_model("resnet18")
    blocks = [m for m in model.modules() if type(m).__name__ == "BasicBlock"]
    g = graph(model)
    adds = [n for n in g.nodes.values() if n.title == "add"]
    assert len(adds) == len(blocks) == 8
    for i, (add, block) in enumerate(zip(adds, blocks)):
        assert len(add.inputs) == 2 and add.kind == "join"
        titles = {g.nodes[s].title for s in add.inputs}
        assert f"blocks.{i}.bn2: BatchNorm2d" in titles  # the residual branch
        projected = not isinstance(block.shortcut, nn.Identity) and list(block.shortcut.children())
        other = (titles - {f"blocks.{i}.bn2: BatchNorm2d"}).pop()
        if projected:
            assert other.startswith(f"blocks.{i}.shortcut.")  # the 1x1 conv-BN projection
        else:  # the identity: the block's input itself, which also feeds its first conv
            first = g.nodes[next(n.id for n in g.nodes.values() if n.title == f"blocks.{i}.conv1: Conv2d")]
            assert first.inputs == [next(s for s in add.inputs if g.nodes[s].title == other)]
    # shapes propagate: the last addition works on 512 channels at 4x4
    assert adds[-1].shape == "(512, 4, 4)"


def test_googlenet_small_concats_take_four_branches():
    model = create_model("googlenet_small")
    modules = [m for m in model.modules() if hasattr(m, "branch_pool")]
    g = graph(model)
    cats = [n for n in g.nodes.values() if n.title == "concat"]
    assert len(cats) == len(modules) == 4
    for i, cat in enumerate(cats):
        assert len(cat.inputs) == 4
        branches = {g.nodes[s].title.split(".")[2] for s in cat.inputs}
        assert branches == {"branch1", "branch3", "branch5", "branch_pool"}
        # the four branches start from one node: the block's input
        starts = [_ancestors(g, s) for s in cat.inputs]
        assert set.intersection(*starts)
        width = sum(int(g.nodes[s].shape.strip("()").split(",")[0]) for s in cat.inputs)
        assert int(cat.shape.strip("()").split(",")[0]) == width


def test_svg_draws_every_edge_and_routes_skips_around(tmp_path):
    g = graph(create_model("resnet18"))
    root = ET.fromstring(to_svg("resnet18", g))
    edges = [(e.get("data-from"), e.get("data-to")) for e in root.iter() if e.tag.endswith("polyline")]
    assert sorted(edges) == sorted(g.edges)
    skips = [e for e in root.iter() if e.tag.endswith("polyline")
             and g.nodes[e.get("data-to")].rank - g.nodes[e.get("data-from")].rank > 1]
    assert len(skips) == 8 and all(len(e.get("points").split()) > 2 for e in skips)


def test_a_model_fx_cannot_trace_is_drawn_as_a_chain(tmp_path):
    model = create_model("airnet_tiny")
    g = model_graph(model)
    assert [n.title for n in g.nodes.values()] == [n.title for n in chain_graph(model).nodes.values()]
    assert main(["diagram", "airnet_tiny", "-o", str(tmp_path / "a.svg")]) == 0


@pytest.mark.parametrize("out", ["/nonexistent/dir/x.svg", "/nonexistent/dir/x"])
def test_diagram_does_not_create_folders(out, capsys):
    assert main(["diagram", "lenet5", "-o", out]) == 1
    assert "cifarlab: error:" in capsys.readouterr().err
