"""One resolver for model names (cifarlab.resolve) and the faces that use it: the word
`default`, run names, ids and NAME-ID, run folders, .pt paths; ambiguity is an error that
lists the candidates; menus hide study and subset runs; `cifarlab runs rm/prune`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from _checkpoints import write_checkpoint
from cifarlab.catalog import Catalog, default_checkpoint
from cifarlab.cli import main
from cifarlab.errors import ModelError
from cifarlab.resolve import architecture, default_architecture, resolve, resolve_path
from cifarlab.runlog import Registry


def _run(tmp_path: Path, registry: Registry, name: str, *, model="lenet5_modern", status="finished",
         study=None, subset=None, top1=0.5, folder=None) -> dict:
    run = tmp_path / (folder or name)
    run.mkdir(parents=True)
    (run / "config.json").write_text("{}")
    if status == "finished":
        write_checkpoint(run / "best.pt", model=model, top1=top1)
    config = {"model": model, **({"train_subset": subset} if subset else {})}
    run_id = registry.start(run, config, study)
    registry.finish(run, status, {"test_top1": top1} if status == "finished" else None)
    # the registry names a row after its folder; rename it where the test wants another name
    if folder:
        registry._write("UPDATE runs SET name = ? WHERE id = ?", (name, run_id))
    return {"id": run_id, "path": run}


@pytest.fixture()
def reg(tmp_path):
    return Registry(tmp_path / "runs.sqlite")


def test_default_is_the_shipped_model_everywhere(tmp_path, capsys):
    found = resolve("default")
    assert found.source == "shipped" and found.path == default_checkpoint()
    # the architecture of `default` is the one stored in the shipped file, read independently here
    stored = torch.load(default_checkpoint(), map_location="cpu", weights_only=True)["model"]["name"]
    assert default_architecture() == stored
    assert architecture("default")[0] == stored
    from cifarlab.inference.checkpoint import load_checkpoint, load_model
    assert load_checkpoint("default")["path"] == str(default_checkpoint())
    model, meta = load_model("default")
    assert meta["model"]["name"] == stored
    from cifarlab.inference.predict import Predictor
    assert Predictor("default").meta["model"]["name"] == stored
    assert main(["summary", "default", "--no-memory"]) == 0
    assert stored in capsys.readouterr().out
    out = tmp_path / "d.svg"
    assert main(["diagram", "default", "-o", str(out)]) == 0 and out.stat().st_size > 0


def test_train_help_gives_default_one_meaning(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    model_help = text.split("--model MODEL ")[1].split(" --epochs")[0]
    assert "'default' = the architecture of the shipped default model" in model_help
    assert "= resnet20" not in model_help


def test_run_names_ids_and_folders(tmp_path, reg):
    a = _run(tmp_path, reg, "mine")
    assert resolve("mine", reg).path == a["path"] / "best.pt"
    assert resolve(str(a["id"]), reg).path == a["path"] / "best.pt"
    assert resolve(f"mine-{a['id']}", reg).path == a["path"] / "best.pt"
    assert resolve(str(a["path"]), reg).path == a["path"] / "best.pt"
    assert resolve_path(a["path"] / "best.pt") == a["path"] / "best.pt"


def test_an_ambiguous_name_lists_every_candidate(tmp_path, reg):
    a = _run(tmp_path, reg, "base-s0", folder="s1/base-s0", study="lr")
    b = _run(tmp_path, reg, "base-s0", folder="s2/base-s0")
    with pytest.raises(ModelError) as err:
        resolve("base-s0", reg)
    text = str(err.value)
    assert "ambiguous" in text and f"run {a['id']}" in text and f"run {b['id']}" in text
    assert str(a["path"]) in text and str(b["path"]) in text
    # each stays reachable by NAME-ID and by id
    assert resolve(f"base-s0-{a['id']}", reg).path == a["path"] / "best.pt"
    assert resolve(str(b["id"]), reg).path == b["path"] / "best.pt"


def test_unknown_names_and_untrained_architectures_are_one_line_errors(tmp_path, reg):
    with pytest.raises(ModelError, match="no model called 'nosuch'"):
        resolve("nosuch", reg)
    with pytest.raises(ModelError, match="untrained architecture"):
        resolve("vgg11", reg)  # an architecture no shipped model is named after (resnet20 is one)
    with pytest.raises(ModelError, match="does not exist"):
        resolve(str(tmp_path / "missing.pt"), reg)
    with pytest.raises(ModelError, match="no best.pt or last.pt"):
        resolve(str(tmp_path), reg)


def test_cli_faces_take_a_run_name(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CIFARLAB_HOME", str(tmp_path / "home"))
    run = _run(tmp_path, Registry(), "named-run", model="lenet5_modern")
    picture = tmp_path / "red.png"
    from PIL import Image
    Image.new("RGB", (40, 30), (200, 30, 30)).save(picture)
    assert main(["predict", "named-run", str(picture), "--json"]) == 0
    assert main(["summary", "named-run", "--no-memory"]) == 0
    assert "lenet5_modern" in capsys.readouterr().out
    assert main(["predict", "nosuch", str(picture)]) == 1
    assert "no model called 'nosuch'" in capsys.readouterr().err
    assert run["path"].is_dir()


def test_menus_hide_study_and_subset_runs_and_name_each_run_once(tmp_path, reg):
    own = _run(tmp_path, reg, "mine")
    _run(tmp_path, reg, "act=sigmoid-s0", study="reference")
    sub = _run(tmp_path, reg, "small", subset=1000, top1=0.3)
    d1 = _run(tmp_path, reg, "twin", folder="a/twin")
    d2 = _run(tmp_path, reg, "twin", folder="b/twin")
    _run(tmp_path, reg, "broken", status="failed")
    entries = Catalog(registry=reg).entries()
    assert entries[0].name == "default"
    assert {e.name for e in entries if e.source == "run"} == {"mine", f"twin-{d1['id']}", f"twin-{d2['id']}"}
    every = Catalog(registry=reg, all_runs=True)
    assert {"act=sigmoid-s0", "small"} <= set(every.names())
    small = every.resolve("small")
    assert small.train_images == 1000 and "1,000 images" in small.label()
    # every menu name is one the resolver takes to the same file
    for entry in every.entries()[1:]:
        assert resolve(entry.name, reg).path == Path(entry.path)
    assert own["id"] and sub["id"]


def test_runs_rm_and_prune(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CIFARLAB_HOME", str(tmp_path / "home"))
    reg = Registry()
    keep = _run(tmp_path, reg, "keep")
    gone = _run(tmp_path, reg, "gone")
    failed = _run(tmp_path, reg, "failed-one", status="failed")
    assert main(["runs", "rm", "gone"]) == 0
    assert gone["path"].is_dir()  # without --delete-folder the folder stays
    assert [r["name"] for r in reg.list()] == ["failed-one", "keep"]
    assert main(["runs", "rm", "nosuch"]) == 1
    assert main(["runs", "prune", "--dry-run"]) == 0
    assert "failed-one" in capsys.readouterr().out and len(reg.list()) == 2
    assert main(["runs", "prune", "--delete-folder"]) == 0
    assert not failed["path"].exists() and [r["name"] for r in reg.list()] == ["keep"]
    assert main(["runs", "rm", str(keep["id"]), "--delete-folder"]) == 0
    assert not keep["path"].exists() and reg.list() == []


def test_runs_lists_own_runs_and_one_line_per_study(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CIFARLAB_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COLUMNS", "200")
    reg = Registry()
    _run(tmp_path, reg, "mine")
    _run(tmp_path, reg, "small", subset=1000, top1=0.25)
    for i in range(3):
        _run(tmp_path, reg, f"lr={i}-s0", study="lr-study", status="finished" if i else "failed")
    assert main(["runs"]) == 0
    out = capsys.readouterr().out
    assert "mine" in out and "lr=1-s0" not in out
    assert "lr-study: 3 runs, 2 finished" in out
    assert "0.2500 (subset 1,000)" in out
    assert main(["runs", "--study", "lr-study"]) == 0
    listed = capsys.readouterr().out
    assert all(f"lr={i}-s0" in listed for i in range(3)) and "mine" not in listed


def test_export_refuses_a_missing_output_folder_and_never_writes_into_the_package(tmp_path, monkeypatch, capsys):
    missing = tmp_path / "no" / "such"
    assert main(["export", "default", "-o", str(missing / "x.onnx")]) == 1
    assert "does not exist" in capsys.readouterr().err and not missing.parent.exists()
    from cifarlab.cli.export_cmd import output_path
    monkeypatch.chdir(tmp_path)
    assert output_path(resolve("default"), None) == Path("default.onnx")  # here, not beside assets/default.pt
