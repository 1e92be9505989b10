"""A checkpoint from a stranger runs no code: every way in refuses a hostile pickle.

The hostile file looks like a checkpoint of this version but its pickle calls os.system to
create a marker file (the first test shows a full unpickle does create it, so the others
can fail). Every loader (the CLI's predict, evaluate, export, train --resume and serve,
Predictor, the catalogue's runs, the web API) must leave the marker absent, give one line
naming the problem and the way out (``cifarlab convert``, for an older file), exit
non-zero, and the server must keep serving its other models. Checkpoints of the previous
format (numpy RNG state, pickled) get that line too, and convert into files that resume
bit-exactly.
"""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from cifarlab.catalog import Catalog
from cifarlab.cli import main
from cifarlab.data import random_cifar
from cifarlab.training import TrainingInterrupted, resume, train
from _callbacks import StopAfter
from cifarlab.inference import Predictor, load_checkpoint
from cifarlab.inference.checkpoint import FORMAT, save_checkpoint
from cifarlab.errors import CifarlabError

from _checkpoints import RunsCode, hostile_run, write_checkpoint, write_hostile_checkpoint
from conftest import need_module

REFUSAL = "asks to run code"


@pytest.fixture
def hostile(tmp_path):
    marker = tmp_path / "code-ran"
    return write_hostile_checkpoint(tmp_path / "evil.pt", marker), marker


@pytest.fixture
def picture(tmp_path):
    path = tmp_path / "pic.png"
    Image.new("RGB", (40, 30), (200, 30, 30)).save(path)
    return path


def test_the_hostile_file_runs_code_when_fully_unpickled(hostile):
    path, marker = hostile
    torch.load(path, weights_only=False)
    assert marker.exists()  # so every "marker absent" below means the loader refused it


@pytest.mark.parametrize("kind", ["torch-zip", "pickle-2", "pickle-4"])
def test_predictor_and_load_checkpoint_refuse_it(hostile, tmp_path, kind):
    path, marker = hostile
    if kind.startswith("pickle"):  # torch.load also reads plain pickles (the legacy format)
        path = tmp_path / "raw.pt"
        path.write_bytes(pickle.dumps({"format": FORMAT, "config": RunsCode(marker)}, protocol=int(kind[-1])))
    why = "Unsupported operand 149" if kind == "pickle-4" else rf"{REFUSAL} \((posix|nt)\.system\)"  # 149: FRAME
    for load in (Predictor, load_checkpoint):
        with pytest.raises(CifarlabError, match=why) as info:
            load(path)
        assert "\n" not in str(info.value) and f"cifarlab convert {path}" in str(info.value)
    assert not marker.exists()


def _one_line_refusal(proc: subprocess.CompletedProcess, marker) -> str:
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cifarlab: error: "), proc.stderr
    assert REFUSAL in lines[0] and "cifarlab convert" in lines[0]
    assert not marker.exists()
    return lines[0]


def _cli(*args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cifarlab", *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


@pytest.mark.parametrize("command", ["predict", "predict-run-name", "evaluate", "export", "train-resume", "serve"])
def test_every_command_refuses_it_in_one_line(hostile, picture, tmp_path, command):
    path, marker = hostile
    run = tmp_path / "runs" / "cut"
    args = {
        "predict": ["predict", path, picture],
        "predict-run-name": ["predict", "evil-run", picture],  # a finished run found through the registry
        "evaluate": ["evaluate", path],
        "export": ["export", path, "-o", tmp_path / "out.onnx"],
        "train-resume": ["train", "--resume", run],
        "serve": ["serve", "--no-runs", "--port", "0", "--checkpoint", f"evil={path}"],
    }[command]
    if command == "serve":
        need_module("uvicorn", "web extra not installed: pip install 'cifarlab[web]'")
    if command == "train-resume":
        run.mkdir(parents=True)
        write_hostile_checkpoint(run / "last.pt", marker)
    if command == "predict-run-name":
        hostile_run(tmp_path / "runs", marker)
    _one_line_refusal(_cli(*args, cwd=tmp_path), marker)
    assert not (tmp_path / "out.onnx").exists()


def test_the_server_refuses_a_hostile_run_and_keeps_serving(tmp_path):
    need_module("fastapi", "web extra not installed: pip install 'cifarlab[web]'")
    from fastapi.testclient import TestClient

    from cifarlab.web import ServeLimits, create_app
    marker = tmp_path / "code-ran"
    registry = hostile_run(tmp_path / "runs", marker)
    catalog = Catalog({"good": str(write_checkpoint(tmp_path / "good.pt"))}, runs=True, shipped=False,
                      registry=registry)
    assert catalog.names() == ["good", "evil-run"]  # listed, but never loaded until asked for
    png = _png()
    with TestClient(create_app(catalog, ServeLimits())) as client:
        for _ in range(2):  # asked again: refused again, not cached as half-loaded
            r = client.post("/api/predict", files={"file": ("a.png", png, "image/png")}, data={"model": "evil-run"})
            assert 400 <= r.status_code < 500 and REFUSAL in r.json()["detail"], r.text
            assert "\n" not in r.json()["detail"]
        r = client.post("/api/predict", files={"file": ("a.png", png, "image/png")}, data={"model": "good"})
        assert r.status_code == 200 and r.json()["results"][0]["label"], r.text
        assert [m["name"] for m in client.get("/api/models").json()["models"]] == ["good", "evil-run"]
    assert not marker.exists()


def _png() -> bytes:
    import io
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (20, 120, 200)).save(buf, "PNG")
    return buf.getvalue()


# ---------------------------------------------------------------- the previous format
def _as_format_1(path) -> None:
    """Rewrite a checkpoint as cifarlab wrote it before: numpy RNG state and TorchVersion, pickled."""
    ckpt = torch.load(path, weights_only=True)
    name, keys, pos, has_gauss, gauss = ckpt["rng"]["numpy"]
    version, internal, gauss_next = ckpt["rng"]["python"]
    ckpt["rng"]["numpy"] = (name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss)
    ckpt["rng"]["python"] = (version, tuple(internal), gauss_next)
    ckpt["versions"]["torch"] = torch.__version__  # a TorchVersion, as format /1 stored it
    ckpt["format"] = "cifarlab-checkpoint/1"
    torch.save(ckpt, path)


def test_an_old_checkpoint_is_refused_then_converted_and_resumes_bit_exactly(tmp_path, capsys):
    data = random_cifar(n_train=96, n_test=32, val=32, seed=4)
    base = dict(model="lenet5_modern", epochs=2, batch_size=32, runs_dir=str(tmp_path / "runs"), augment="crop:4,flip",
                tensorboard=False, plots=False, progress=False, schedule="onecycle", lr=0.05)
    full = train({**base, "name": "full"}, data=data)
    with pytest.raises(TrainingInterrupted):
        train({**base, "name": "cut"}, callbacks=[StopAfter(1)], data=data)
    cut = tmp_path / "runs" / "cut"
    _as_format_1(cut / "last.pt")
    with pytest.raises(CifarlabError, match=f"{REFUSAL}.*cifarlab convert {cut / 'last.pt'}"):
        resume(cut, data=data)

    assert main(["convert", str(cut / "last.pt"), "-o", str(tmp_path / "copy.pt")]) == 0
    out, err = capsys.readouterr()
    assert not err and f"converted {cut / 'last.pt'} -> {tmp_path / 'copy.pt'}" in out  # no code ran: no warning
    assert torch.load(tmp_path / "copy.pt", weights_only=True)["format"] == FORMAT
    assert main(["convert", str(cut)]) == 0  # a run folder: its best.pt and last.pt, in place
    out, err = capsys.readouterr()
    assert f"converted {cut / 'last.pt'}" in out and f"already in the current format: {cut / 'best.pt'}" in out
    assert main(["convert", str(cut / "last.pt")]) == 0 and "already" in capsys.readouterr().out

    resumed = resume(cut, data=data)
    a, b = (torch.load(r.run_dir / "last.pt", weights_only=True) for r in (full, resumed))
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert resumed.summary["test"]["top1"] == full.summary["test"]["top1"]


def test_convert_of_a_file_that_is_no_checkpoint_says_so(tmp_path, capsys):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    assert main(["convert", str(tmp_path / "junk.pt")]) == 1
    assert "not a readable checkpoint" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "none.pt")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_a_checkpoint_holds_only_plain_values(tmp_path):
    path = write_checkpoint(tmp_path / "a.pt")
    save_checkpoint({**torch.load(path, weights_only=True), "extra": {"n": np.int64(3), "x": np.float32(0.5),
                                                                      "a": np.arange(3)}}, path)
    extra = load_checkpoint(path)["extra"]
    assert type(extra["n"]) is int and type(extra["x"]) is float and torch.equal(extra["a"], torch.arange(3))
    with pytest.raises(TypeError, match=r"checkpoint\['extra'\] is a .*Path"):
        save_checkpoint({"format": FORMAT, "extra": tmp_path}, tmp_path / "b.pt")
