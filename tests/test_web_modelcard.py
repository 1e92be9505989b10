"""The model card in the web API: /api/models gives each model its card and the card's
sentences, the same figures as their sources, no server path, and a sentence (never a 500)
when a card cannot be built."""

from __future__ import annotations

import hashlib
import json

import pytest

from conftest import need_module  # noqa: E402

need_module("fastapi", "web extra not installed: pip install 'cifarlab[web]'")
import torch  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from cifarlab import modelcard, results  # noqa: E402
from cifarlab.calibration import write_sidecar  # noqa: E402
from cifarlab.catalog import Catalog  # noqa: E402
from cifarlab.errors import CifarlabError  # noqa: E402
from cifarlab.web import create_app  # noqa: E402

from _checkpoints import write_checkpoint  # noqa: E402


def _listing(catalog) -> dict:
    with TestClient(create_app(catalog, preload=False)) as client:
        r = client.get("/api/models")
    assert r.status_code == 200, r.text
    return r.json()


def test_each_model_comes_with_its_card(tmp_path, monkeypatch):
    path = write_checkpoint(tmp_path / "mine.pt", model="lenet5_modern", top1=0.5)
    ckpt = torch.load(path, weights_only=True)
    ckpt["provenance"] = {"data": {"source": str(tmp_path / "data" / "cifar10.tar.gz"), "train": 100, "test": 20}}
    torch.save(ckpt, path)
    write_sidecar(path, {"temperature": 1.25, "fitted_on": "val"})
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    folder = tmp_path / "results"
    monkeypatch.setenv("CIFARLAB_RESULTS", str(folder))
    results.append_row("calibration", {"checkpoint_sha256": sha[:16], "temperature": 1.25, "ece_raw_pct": 7.5,
                                       "ece_after_pct": 1.25, "mce_raw_pct": 20.0, "mce_after_pct": 5.0})
    listing = _listing(Catalog({"mine": str(path)}, runs=False, shipped=False))
    (m,) = listing["models"]
    card = m["card"]
    assert card["name"] == "mine" and card["accuracy"]["top1"] == 0.5 == m["accuracy"]
    cal = card["calibration"]
    assert (cal["temperature"], cal["ece_before"], cal["ece_after"], cal["mce_before"], cal["mce_after"]) == (
        1.25, 0.075, 0.0125, 0.2, 0.05)
    assert card["robustness"] is None
    words = {s["key"]: " ".join(s["text"]) for s in m["card_sections"]}
    assert "7.50% raw, 1.25% after temperature scaling (T = 1.250" in words["calibration"]
    assert words["robustness"].startswith("not measured yet")
    assert words["training"].startswith("Data: cifar10.tar.gz (train 100, test 20).")
    assert str(tmp_path) not in json.dumps(listing)  # no server path, the data file's folder included


def test_a_runs_card_and_the_shipped_ones(tmp_path, monkeypatch):
    from test_modelcard import _run_folder  # a run folder with summary, confusion and calibration
    run = _run_folder(tmp_path)
    write_checkpoint(run / "best.pt", model="lenet5_modern")
    modelcard.write_run_card(run)
    listing = _listing(Catalog({"run": str(run / "best.pt")}, runs=False, shipped=True))
    by_name = {m["name"]: m for m in listing["models"]}
    card = by_name["run"]["card"]
    assert card["kind"] == "run" and card["per_class"] == {"cat": 0.6, "dog": 0.7, "ship": 0.9}
    pairs = next(s for s in by_name["run"]["card_sections"] if s["key"] == "pairs")
    assert pairs["rows"][0] == ["cat / dog", "11", "6", "5"]
    for name, m in by_name.items():  # the shipped ones: a card each, or a sentence
        if m["source"] == "shipped":
            assert m["card"].get("error") or m["card"]["accuracy"]["top1"] == m["accuracy"]


def test_a_card_that_cannot_be_built_is_a_sentence_not_a_500(tmp_path, monkeypatch):
    path = write_checkpoint(tmp_path / "mine.pt", model="lenet5_modern")
    monkeypatch.setattr(modelcard, "checkpoint_card", lambda *a, **k: {}["missing"])
    listing = _listing(Catalog({"mine": str(path)}, runs=False, shipped=False))
    (m,) = listing["models"]
    assert m["card"] == {"name": "mine", "kind": "unavailable", "error": "No model card for mine: 'missing'."}
    assert m["card_sections"] == [{"key": "error", "title": None, "text": [m["card"]["error"]]}]
    # a reason naming the file names it without the server's folder

    def broken(meta, **kw):
        raise CifarlabError(f"{meta['path']} is damaged; train it again")
    monkeypatch.setattr(modelcard, "checkpoint_card", broken)
    (m,) = _listing(Catalog({"mine": str(path)}, runs=False, shipped=False))["models"]
    assert m["card"]["error"] == "No model card for mine: mine.pt is damaged; train it again."


def test_the_card_follows_its_files(tmp_path):
    """A run's card rewritten (evaluate --corruptions) is served afresh, without a restart."""
    from test_modelcard import _run_folder
    run = _run_folder(tmp_path)
    write_checkpoint(run / "best.pt", model="lenet5_modern")
    modelcard.write_run_card(run)
    with TestClient(create_app(Catalog({"run": str(run / "best.pt")}, runs=False, shipped=False),
                               preload=False)) as client:
        assert client.get("/api/models").json()["models"][0]["card"]["robustness"] is None
        (run / "corruptions.json").write_text(json.dumps({
            "clean_accuracy": 0.75, "mean_corruption_accuracy": 0.5, "relative_drop": 1 / 3,
            "kinds": ["fog"], "severities": [1]}))
        modelcard.write_run_card(run)
        rob = client.get("/api/models").json()["models"][0]["card"]["robustness"]
    assert rob["mean_corruption_accuracy"] == pytest.approx(0.5)
