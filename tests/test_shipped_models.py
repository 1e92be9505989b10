"""The models shipped inside the package and the script that packages them.

Every ``src/cifarlab/assets/*.pt`` is checked as the apps see it (a file under 2 MiB that
the safe loader reads, its temperature beside it, a plain description, a menu label that
says "shipped", a results row stating what it measures); the real-data re-measurement
through the Predictor is ``test_reference_predict.py::test_shipped_model_states_what_the_predictor_measures``.
``scripts/package_model.py`` is run on tiny synthetic runs: what it writes is compared with
the Predictor's own answers on the run's test pictures, and its refusals leave nothing behind.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cifarlab import results
from cifarlab.calibration import file_sha256, read_sidecar
from cifarlab.catalog import MAX_SHIPPED_BYTES, Catalog
from cifarlab.inference import Predictor
from cifarlab.inference.checkpoint import FORMAT
from cifarlab.models import create_model
from cifarlab.shipped import shipped_models
from cifarlab.words import WRITE_UPS

from _checkpoints import write_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = shipped_models()


def _script():
    spec = importlib.util.spec_from_file_location("package_model", ROOT / "scripts" / "package_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- the shipped files
@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_a_shipped_file_is_small_safe_calibrated_and_recorded(name):
    path = SHIPPED[name]
    assert path.stat().st_size <= MAX_SHIPPED_BYTES == 2 * 2**20
    raw = torch.load(path, map_location="cpu", weights_only=True)  # no pickled code
    assert raw["format"] == FORMAT and raw["test"]["n"] == 10_000
    assert raw["test"]["top1"] * 10_000 == pytest.approx(round(raw["test"]["top1"] * 10_000), abs=1e-6)
    side = read_sidecar(path)  # None when missing or written for other bytes
    assert side is not None and 0.05 <= side["temperature"] <= 20, f"{name}: no calibration sidecar for these bytes"
    assert not any(slug in raw.get("description", "") for slug in WRITE_UPS), raw["description"]
    # the results row of this very file (the last one naming it) states what the file states
    rel = f"src/cifarlab/assets/{path.name}"
    rows = [r for r in results.read_rows("shipped_models", ROOT / "results") if r.get("file") == rel]
    assert rows, f"no results/shipped_models.csv row names {rel}"
    assert rows[-1]["test_top1_pct"] == pytest.approx(100 * raw["test"]["top1"], abs=0.005)
    assert rows[-1]["model"] == raw["model"]["name"]
    if name != "default":  # packaged by scripts/package_model.py: its plan and its temperature's row too
        # the run's plan (None for a run trained before plans were kept apart: its config holds them)
        assert "plan" in raw and (raw["plan"] is None or raw["plan"]["model"] == raw["model"]["name"])
        assert rows[-1]["temperature"] == pytest.approx(side["temperature"], abs=1e-4)
        digest = file_sha256(path)
        cal = [r for r in results.read_rows("calibration", ROOT / "results") if digest.startswith(r["checkpoint_sha256"])]
        assert cal and cal[-1]["temperature"] == pytest.approx(side["temperature"], abs=1e-4)


def test_menus_list_every_shipped_model_with_a_unique_label_that_says_shipped():
    entries = [e for e in Catalog(runs=False).entries() if e.source == "shipped"]
    assert [e.name for e in entries] == list(SHIPPED)
    labels = [e.label() for e in entries]
    assert len(set(labels)) == len(labels)
    for e, label in zip(entries, labels):
        assert "shipped" in label and f"{e.accuracy:.2%} test accuracy" in label, label
        assert e.public()["label"] == label  # what the web page shows


# the write-up's trained models that fit 2 MiB as int8 (issue 30): the apps offer each of them
WRITE_UP_SMALL = ("lenet5", "googlenet_small", "resnet20", "deepcnn15", "inception_colab")


@pytest.mark.parametrize("model", WRITE_UP_SMALL)
def test_each_small_write_up_model_ships_trained_under_its_own_name(model):
    assert model in SHIPPED, f"{model} is not shipped: scripts/package_model.py RUN --name {model}"
    raw = torch.load(SHIPPED[model], map_location="cpu", weights_only=True)
    assert raw["model"]["name"] == model and raw["test"]["n"] == 10_000
    assert raw["test"]["top1"] > 0.2, "chance is 10%: a model barely trained is not one to offer"


# ---------------------------------------------------------------- package_model on tiny runs
def _fake_run(folder: Path, model: str, summary: bool = True) -> Path:
    """A run folder around a randomly initialised checkpoint (no training)."""
    folder.mkdir(parents=True)
    write_checkpoint(folder / "best.pt", model=model)
    (folder / "config.json").write_text(json.dumps({"model": model, "data": str(folder / "no-data")}))
    if summary:
        (folder / "summary.json").write_text(json.dumps({
            "selection": {"checkpoint": "best.pt"}, "epochs_run": 1,
            "test": {"n": 100, "top1": 0.1, "top5": 0.5, "tta": "none"}}))
    return folder


def test_a_file_over_2_mib_is_refused_in_one_line_and_the_old_one_stays(tmp_path, capsys):
    run = _fake_run(tmp_path / "big", "airnet95")  # 4.6M parameters: 4.6 MB even as int8
    out = tmp_path / "assets" / "big.pt"
    out.parent.mkdir()
    out.write_bytes(b"the model shipped before")
    assert _script().main([str(run), "--name", "big", "--out", str(out), "--no-results"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("package_model: error: ")
    assert "over the 2 MiB limit" in err and str(out) in err
    assert out.read_bytes() == b"the model shipped before"
    assert sorted(p.name for p in out.parent.iterdir()) == ["big.pt"]  # no temporary file left


def test_a_run_without_summary_is_refused_before_anything_is_written(tmp_path, capsys):
    run = _fake_run(tmp_path / "unfinished", "lenet5", summary=False)
    out = tmp_path / "assets" / "x.pt"
    assert _script().main([str(run), "--name", "x", "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no readable summary.json" in err and "let it finish" in err
    assert not out.parent.exists() or not any(out.parent.iterdir())
    assert _script().main([str(tmp_path / "missing"), "--name", "x", "--out", str(out)]) == 1
    assert "is not a run folder" in capsys.readouterr().err
    assert _script().main([str(run), "--name", "../evil"]) == 1
    assert "must be a plain name" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_packaged(tmp_path_factory):
    """A 1-epoch lenet5_modern run on a small picture folder (half right, with a validation split,
    tested with the mirror view), packaged by the script into a scratch assets and results folder.
    On 60 test pictures one picture is 1.7 points: int8 rounding may move one, hence --tolerance."""
    from cifarlab.data.synthetic import write_imagefolder
    from cifarlab.training import train
    root = tmp_path_factory.mktemp("pkg")
    pictures = write_imagefolder(root, per_class=16, test_per_class=6, seed=3)
    run = train(dict(model="lenet5_modern", epochs=1, batch_size=32, optimizer="adam", lr=2e-3,
                     data=str(pictures.path), val=40, augment="none", tta="flip", runs_dir=str(root / "runs"),
                     name="tiny", tensorboard=False, plots=False, progress=False)).run_dir
    out = root / "assets" / "tiny.pt"
    mp = pytest.MonkeyPatch()
    mp.setenv("CIFARLAB_RESULTS", str(root / "results"))
    try:
        code = _script().main([str(run), "--name", "tiny", "--out", str(out), "--tolerance", "0.05"])
    finally:
        mp.undo()
    assert code == 0
    return run, out, pictures, root / "results"


@pytest.mark.slow
def test_the_packaged_file_states_what_the_predictor_measures_on_the_test_pictures(tiny_packaged):
    run, out, pictures, _ = tiny_packaged
    raw = torch.load(out, map_location="cpu", weights_only=True)
    assert raw["weights_dtype"] == "int8" and raw["weight_scales"]
    files = sorted((pictures.path / "test").rglob("*.png"))
    truth = [p.parent.name for p in files]
    pred = Predictor(out, device="cpu")
    probs = pred.probabilities([np.asarray(Image.open(p).convert("RGB")) for p in files])
    measured = float(np.mean([pred.classes[i] == t for i, t in zip(probs.argmax(1), truth)]))
    assert raw["test"]["n"] == len(files) and raw["test"]["top1"] == pytest.approx(measured, abs=1e-9)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["test"]["tta"] == "flip"  # the run's own figure had the mirror view; the file's has not
    saved_plan = torch.load(run / "best.pt", map_location="cpu", weights_only=True)["plan"]
    assert raw["plan"] == saved_plan and raw["config"]["model"] == "lenet5_modern"
    assert "calibration" not in raw  # the temperature lives beside the file
    assert "five-classic-cnns" not in raw["description"] and "A modern form of LeNet-5" in raw["description"]
    # the mirror view's figure is the run's, not the file's: here they differ, so stating it would show
    assert summary["test"]["top1"] != pytest.approx(measured)


@pytest.mark.slow
def test_the_temperature_beside_it_is_fitted_on_the_validation_split(tiny_packaged):
    from cifarlab.calibration import fit_temperature
    from cifarlab.data import load_cifar
    run, out, pictures, _ = tiny_packaged
    side = read_sidecar(out)
    assert side is not None and side["fitted_on"] == "val" and side["n"] == 40
    assert 0.05 < side["temperature"] < 20  # fitted, not stuck at a bound
    # refit it another way: the run's validation pictures through the bare module, by hand
    config = json.loads((run / "config.json").read_text())
    data = load_cifar(config["data"], val=config["val"], seed=config["seed"], progress=False)
    raw = torch.load(out, map_location="cpu", weights_only=True)
    net = create_model("lenet5_modern")
    from cifarlab.inference.checkpoint import dequantize_state
    net.load_state_dict(dequantize_state(raw["state_dict"], raw["weight_scales"]))
    net.eval()
    x = torch.from_numpy(data.val.images).permute(0, 3, 1, 2).float() / 255
    mean, std = (torch.tensor(raw["normalize"][k]).view(1, 3, 1, 1) for k in ("mean", "std"))
    with torch.no_grad():
        z = net((x - mean) / std).double().numpy()
    assert side["temperature"] == pytest.approx(fit_temperature(z, np.asarray(data.val.labels)), rel=1e-3)


@pytest.mark.slow
def test_its_results_rows_carry_the_command_and_the_numbers(tiny_packaged):
    run, out, _, folder = tiny_packaged
    row = results.read_rows("shipped_models", folder)[-1]
    raw = torch.load(out, map_location="cpu", weights_only=True)
    assert row["command"].startswith(f"python scripts/package_model.py {run} --name tiny")
    assert row["test_top1_pct"] == pytest.approx(round(100 * raw["test"]["top1"], 2))
    assert row["bytes"] == out.stat().st_size and row["weights"].startswith("int8")
    assert row["temperature"] == pytest.approx(read_sidecar(out)["temperature"], abs=1e-4)
    assert row["ece_raw_pct"] is not None and row["ece_after_pct"] is not None
    cal = results.read_rows("calibration", folder)[-1]
    assert file_sha256(out).startswith(cal["checkpoint_sha256"]) and cal["command"] == row["command"]



# ---------------------------------------------------------------- the larger models, trained at home
# The command the README gives for each write-up model too large to ship (over 2 MiB even as
# int8): a plain `cifarlab train` into the user's own runs (so the menus list it), with the
# settings `cifarlab compare` trains that model with on a CPU, in the same 10-minute budget.
# the README's commands that train the models too large to ship (read from it, so the two cannot drift)
LARGER = {line.split()[3]: line for line in
          (Path(__file__).resolve().parents[1] / "README.md").read_text().splitlines()
          if line.startswith("cifarlab train --model ") and "--time-budget 10min" in line}


def test_the_readme_names_a_command_for_each_larger_model():
    assert sorted(LARGER) == ["alexnet", "resnet18", "vgg16_faithful"]


@pytest.mark.parametrize("model", sorted(LARGER))
def test_the_command_for_a_larger_model_trains_it_as_the_comparison_does(model):
    import shlex

    from cifarlab.cli import build_parser
    from cifarlab.cli.train_cmd import config_from_args
    from cifarlab.studies.compare import build_compare_spec
    from cifarlab.studies.study import plan
    args = build_parser().parse_args(shlex.split(LARGER[model])[1:])
    mine = config_from_args(args).to_dict()
    (theirs,) = [r.config for r in plan(build_compare_spec([model])) if r.config["model"] == model]
    # the run's name and folder differ (a run of yours, not of a comparison); the epochs are the
    # time budget's to plan in both
    skip = {"name", "runs_dir", "epochs", "progress"}
    differ = {k: (mine.get(k), v) for k, v in theirs.items() if k not in skip and mine.get(k) != v}
    assert not differ, f"{LARGER[model]!r} trains otherwise than `cifarlab compare`: {differ}"
    size = sum(p.numel() for p in create_model(model).parameters())
    assert size > MAX_SHIPPED_BYTES  # one byte a weight as int8: too large to ship, hence this command
