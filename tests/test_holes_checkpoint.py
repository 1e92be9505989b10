"""Issue 32, holes 3-5: checkpoints in the current format whose contents are broken or hostile.

Each case is a file a stranger (or a swapped disk) could hand over. Every way in must answer
with one CifarlabError line (the CLI's ``cifarlab: error: ...``, the server's 4xx), never a
traceback, an HTTP 500 or a huge allocation; ``cifarlab convert`` must never run a file's code.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cifarlab.cli import main
from cifarlab.inference import Predictor, load_checkpoint, load_model
from cifarlab.inference.checkpoint import FORMAT, save_checkpoint
from cifarlab.errors import CifarlabError, ModelError

from _checkpoints import RunsCode, write_checkpoint
from conftest import need_module


def _ckpt(tmp_path, **change):
    """A good checkpoint's dict with ``change`` applied (a value of ... deletes the key)."""
    base = torch.load(write_checkpoint(tmp_path / "good.pt", model="lenet5_modern"), weights_only=True)
    for key, value in change.items():
        if value is ...:
            base.pop(key, None)
        else:
            base[key] = value
    return base


def _broken(tmp_path, name, **change):
    path = tmp_path / f"{name}.pt"
    torch.save(_ckpt(tmp_path, **change), path)  # torch.save, not save_checkpoint: as a stranger writes it
    return path


def _state(tmp_path, model="lenet5_modern"):
    return torch.load(write_checkpoint(tmp_path / "other.pt", model=model), weights_only=True)["state_dict"]


BROKEN = {
    "no-model": dict(model=...),
    "model-not-dict": dict(model="lenet5_modern"),
    "model-no-name": dict(model={"kwargs": {}, "num_classes": 10}),
    "unknown-model": dict(model={"name": "nonet", "kwargs": {}, "num_classes": 10}),
    "bad-kwargs": dict(model={"name": "lenet5_modern", "kwargs": {"act": 3}, "num_classes": 10}),
    "kwargs-not-dict": dict(model={"name": "lenet5_modern", "kwargs": [1], "num_classes": 10}),
    "num-classes-str": dict(model={"name": "lenet5_modern", "kwargs": {}, "num_classes": "10"}),
    "no-state": dict(state_dict=...),
    "state-not-dict": dict(state_dict=[1, 2]),
    "size-mismatch": dict(state_dict="resnet20"),  # replaced below by another model's weights
    "missing-keys": dict(state_dict={}),
    "few-classes": dict(classes=["cat", "dog"]),  # the head has 10 outputs: IndexError in predict
    "classes-not-list": dict(classes="airplane"),
    "no-normalize": dict(normalize=...),
    "normalize-list": dict(normalize=[0.5, 0.5]),  # AttributeError: .get on a list
    "short-mean": dict(normalize={"mean": [0.5], "std": [0.25, 0.25, 0.25], "grayscale": None}),
    "zero-std": dict(normalize={"mean": [0.5] * 3, "std": [0.0] * 3, "grayscale": None}),
    "config-not-dict": dict(config=[1, 2]),
}


def _make(tmp_path, case):
    change = dict(BROKEN[case])
    if case == "size-mismatch":
        change["state_dict"] = _state(tmp_path, "resnet20")
    return _broken(tmp_path, case, **change)


def _one_line(code: int, err: str) -> str:
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cifarlab: error: "), err
    return lines[0]


@pytest.fixture
def picture(tmp_path):
    path = tmp_path / "pic.png"
    Image.new("RGB", (40, 30), (200, 30, 30)).save(path)
    return path


# ---------------------------------------------------------------- hole 3: malformed contents
@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_malformed_checkpoint_is_one_line_everywhere(tmp_path, case, picture, capsys):
    path = _make(tmp_path, case)
    for load in (load_model, Predictor):
        with pytest.raises(CifarlabError) as info:
            load(path)
        assert "\n" not in str(info.value) and str(path) in str(info.value)
    for argv in (["predict", str(path), str(picture)], ["export", str(path), "-o", str(tmp_path / "x.onnx")]):
        line = _one_line(main(argv), capsys.readouterr().err)
        assert str(path) in line
    assert not (tmp_path / "x.onnx").exists()


def test_evaluate_with_a_malformed_checkpoint_is_one_line(tmp_path, capsys):
    path = _make(tmp_path, "few-classes")
    assert str(path) in _one_line(main(["evaluate", str(path)]), capsys.readouterr().err)


def test_resume_of_a_checkpoint_without_its_training_state_is_one_line_and_touches_nothing(tmp_path, capsys):
    run = tmp_path / "runs" / "cut"
    run.mkdir(parents=True)
    torch.save(_ckpt(tmp_path), run / "last.pt")  # inference fields only: no config, optimizer, rng
    (run / "best.pt").write_bytes((run / "last.pt").read_bytes())
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    line = _one_line(main(["train", "--resume", str(run)]), capsys.readouterr().err)
    assert "resume" in line
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


@pytest.mark.slow
def test_serve_with_a_malformed_checkpoint_says_so_in_one_line(tmp_path):
    import subprocess
    import sys
    need_module("uvicorn", "web extra not installed: pip install 'cifarlab[web]'")
    path = _make(tmp_path, "no-model")
    proc = subprocess.run([sys.executable, "-m", "cifarlab", "serve", "--no-runs", "--port", "0",
                           "--checkpoint", f"x={path}"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    _one_line(proc.returncode, proc.stderr)


def test_the_server_answers_a_swapped_best_pt_with_a_4xx_and_loads_it_once(tmp_path, monkeypatch):
    need_module("fastapi", "web extra not installed: pip install 'cifarlab[web]'")
    from fastapi.testclient import TestClient

    from cifarlab.catalog import Catalog
    from cifarlab.inference import predict as predict_mod
    from cifarlab.runlog import Registry
    from cifarlab.web import ServeLimits, create_app
    run = tmp_path / "runs" / "swapped"
    run.mkdir(parents=True)
    write_checkpoint(run / "best.pt", model="lenet5_modern")
    registry = Registry()
    registry.start(run, {"model": "lenet5_modern"})
    registry.finish(run, "finished", {"test_top1": 0.5})
    catalog = Catalog({"good": str(write_checkpoint(tmp_path / "good.pt"))}, runs=True, shipped=False,
                      registry=registry)
    assert catalog.names() == ["good", "swapped"]
    # after listing, the file is swapped for a checkpoint whose weights belong to another model
    torch.save(_ckpt(tmp_path, state_dict=_state(tmp_path, "resnet20")), run / "best.pt")
    loads = []
    real = predict_mod.load_model
    monkeypatch.setattr(predict_mod, "load_model", lambda *a, **k: loads.append(1) or real(*a, **k))
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (20, 120, 200)).save(buf, "PNG")
    with TestClient(create_app(catalog, ServeLimits())) as client:
        for _ in range(3):
            r = client.post("/api/predict", files={"file": ("a.png", buf.getvalue(), "image/png")},
                            data={"model": "swapped"})
            assert 400 <= r.status_code < 500, r.text
            assert "\n" not in r.json()["detail"], r.text
        r = client.post("/api/predict", files={"file": ("a.png", buf.getvalue(), "image/png")},
                        data={"model": "good"})
        assert r.status_code == 200, r.text
    assert len(loads) == 2  # the broken one once (its failure remembered), the good one once


# ---------------------------------------------------------------- hole 3: ONNX metadata
def _onnx_with(tmp_path, props: dict | None, drop=()):
    onnx = need_module("onnx", "onnx extra not installed: pip install 'cifarlab[onnx]'")
    need_module("onnxruntime", "onnx extra not installed: pip install 'cifarlab[onnx]'")
    from cifarlab.inference.export import export_checkpoint
    path = export_checkpoint(write_checkpoint(tmp_path / "m.pt", model="lenet5_modern"), tmp_path / "m.onnx")
    proto = onnx.load(str(path))
    meta = {p.key: p.value for p in proto.metadata_props}
    meta.update(props or {})
    for key in drop:
        meta.pop(key, None)
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))
    return path


@pytest.mark.parametrize("case", ["no-classes", "bad-json", "bad-num-classes", "few-classes", "mean-not-list"])
def test_an_onnx_file_with_missing_or_bad_metadata_is_one_line(tmp_path, case, picture, capsys):
    props, drop = {
        "no-classes": ({}, ("classes",)),
        "bad-json": ({"mean": "[0.5, "}, ()),
        "bad-num-classes": ({"num_classes": "ten"}, ()),
        "few-classes": ({"classes": json.dumps(["a", "b"])}, ()),
        "mean-not-list": ({"mean": json.dumps({"r": 1})}, ()),
    }[case]
    path = _onnx_with(tmp_path, props, drop)
    with pytest.raises(CifarlabError) as info:
        Predictor(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)
    _one_line(main(["predict", str(path), str(picture)]), capsys.readouterr().err)


# ---------------------------------------------------------------- hole 4: huge models
@pytest.mark.parametrize("kwargs", [{"widths": [16, 32, 6000]}, {"widths": [16, 32, 100000]},
                                    {"widths": [16, 32, 10**12]}])
def test_architecture_arguments_asking_for_a_huge_model_are_refused_before_allocating(tmp_path, kwargs, request):
    from torch.nn.modules.module import register_module_parameter_registration_hook
    from cifarlab.models import create_model
    allocated = []  # any real (non-meta) weight of more than 64 MiB is the bug

    def spy(module, name, param):
        if param is not None and param.device.type != "meta" and param.numel() * param.element_size() > 2**26:
            allocated.append(param.shape)
    handle = register_module_parameter_registration_hook(spy)
    request.addfinalizer(handle.remove)
    with pytest.raises(ModelError, match="parameters|activation|cannot be built"):
        create_model("airnet_small", **kwargs)
    assert not allocated
    path = _broken(tmp_path, "huge", model={"name": "airnet_small", "kwargs": kwargs, "num_classes": 10})
    with pytest.raises(CifarlabError, match="parameters|activation|cannot be built"):
        load_model(path)


@pytest.mark.parametrize("name", ["airnet_small", "resnet20", "inception_colab"])
def test_the_estimate_counts_what_a_real_build_holds(name):
    from cifarlab.models import create_model
    from cifarlab.models.registry import model_cost
    kwargs = {"act": "gelu"}  # not the defaults, so create_model measures it first
    params, acts = model_cost(name, 10, **kwargs)
    model = create_model(name, **kwargs).eval()
    assert params == sum(t.numel() for t in (*model.parameters(), *model.buffers()))
    sizes = []
    for m in model.modules():
        if not list(m.children()):
            m.register_forward_hook(lambda _m, _i, out: sizes.append(out.numel()))
    with torch.no_grad():
        model(torch.zeros(1, 3, 32, 32))
    assert acts == sum(sizes)


@pytest.mark.slow
def test_the_bounds_leave_every_registered_model_buildable():
    from cifarlab.models import list_models
    from cifarlab.models.registry import MAX_ACTIVATIONS, MAX_PARAMS, model_cost
    for name in list_models():
        params, acts = model_cost(name, 10)
        assert params <= MAX_PARAMS / 2 and acts <= MAX_ACTIVATIONS / 2, name  # room for wider variants


def test_non_integer_widths_are_a_model_error():
    from cifarlab.models import create_model
    for widths in ([16, 32, "x"], [16, -4, 32], 7):
        with pytest.raises(ModelError):
            create_model("airnet_small", widths=widths)


def test_a_zip_compressed_checkpoint_that_unpacks_huge_is_refused_before_loading(tmp_path, monkeypatch):
    good = write_checkpoint(tmp_path / "good.pt", model="lenet5_modern")
    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
        prefix = src.namelist()[0].split("/")[0]
        dst.writestr(f"{prefix}/data/9999", b"\0" * (64 * 2**20))  # 64 MiB of zeros: ~64 KB deflated
    assert bomb.stat().st_size < 2**20
    loaded = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: loaded.append(1))
    with pytest.raises(CifarlabError, match="unpack"):
        load_checkpoint(bomb)
    assert not loaded


# ---------------------------------------------------------------- hole 5: convert runs no code
def _format_1(tmp_path, extra=None):
    """A format /1 file: numpy RNG state pickled as numpy objects (what old cifarlab wrote)."""
    ckpt = _ckpt(tmp_path, format="cifarlab-checkpoint/1")
    ckpt["rng"] = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                   "python": (3, tuple(range(625)), None)}
    ckpt["np_scalar"] = np.float64(0.5)
    ckpt.update(extra or {})
    path = tmp_path / "old.pt"
    torch.save(ckpt, path)
    return path


def test_convert_converts_an_old_file_without_a_full_unpickle(tmp_path, capsys, monkeypatch):
    path = _format_1(tmp_path)
    keys = torch.load(path, weights_only=False)["rng"]["numpy"][1].copy()  # the test's own file: trusted
    real = torch.load

    def only_safe(*args, **kw):
        assert kw.get("weights_only") is True, "convert unpickled in full"
        return real(*args, **kw)
    monkeypatch.setattr(torch, "load", only_safe)
    assert main(["convert", str(path)]) == 0, capsys.readouterr().err
    ckpt = load_checkpoint(path)
    assert ckpt["format"] == FORMAT and ckpt["rng"]["numpy"][0] == "MT19937"
    np.random.seed(0)
    want = np.random.get_state()
    from cifarlab.inference.checkpoint import restore_rng
    restore_rng(ckpt["rng"])
    assert np.array_equal(np.random.get_state()[1], keys)
    np.random.set_state(want)


@pytest.mark.parametrize("format_", [FORMAT, "cifarlab-checkpoint/1"])
def test_convert_refuses_a_file_that_needs_anything_else_and_runs_nothing(tmp_path, format_, capsys):
    marker = tmp_path / "code-ran"
    path = _format_1(tmp_path, {"format": format_, "config": RunsCode(marker)})
    line = _one_line(main(["convert", str(path)]), capsys.readouterr().err)
    assert "system" in line and str(path) in line
    assert not marker.exists()


# ---------------------------------------------------------------- hole 9: --resume of a broken run folder
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny finished run, trained once; each test damages its own copy."""
    from cifarlab.data import random_cifar
    from cifarlab.training import train
    data = random_cifar(n_train=64, n_test=16, val=16, seed=1)
    result = train(dict(model="lenet5_modern", epochs=1, batch_size=32,
                        runs_dir=str(tmp_path_factory.mktemp("runs")), name="r", tensorboard=False, plots=False,
                        progress=False), data=data)
    return result.run_dir, data


def _finished_run(tmp_path, trained):
    import shutil
    source, data = trained
    return Path(shutil.copytree(source, tmp_path / "runs" / "r")), data


def _snapshot(run):
    return {p.relative_to(run): (p.read_bytes() if p.is_file() else None) for p in sorted(run.rglob("*"))}


@pytest.mark.parametrize("damage", ["last-is-dir", "last-missing-with-best", "no-config", "optimizer-junk"])
def test_resume_refuses_a_broken_run_folder_without_touching_it(tmp_path, damage, capsys, trained):
    from cifarlab.training import resume
    run, data = _finished_run(tmp_path, trained)
    if damage == "last-is-dir":
        (run / "last.pt").unlink()
        (run / "last.pt").mkdir()
    elif damage == "last-missing-with-best":
        (run / "last.pt").unlink()
    elif damage == "no-config":
        ckpt = torch.load(run / "last.pt", weights_only=True)
        del ckpt["config"]
        save_checkpoint(ckpt, run / "last.pt")
    else:
        ckpt = torch.load(run / "last.pt", weights_only=True)
        ckpt["optimizer"] = {"state": {}, "param_groups": [{"params": [0], "lr": 0.1, "lr_scale": 1.0}]}
        save_checkpoint(ckpt, run / "last.pt")
    before = _snapshot(run)
    with pytest.raises(CifarlabError) as info:
        resume(run, epochs=2, data=data)
    assert "\n" not in str(info.value)
    assert _snapshot(run) == before
    if damage != "optimizer-junk":  # the CLI too, before any data is loaded
        _one_line(main(["train", "--resume", str(run)]), capsys.readouterr().err)
        assert _snapshot(run) == before


def test_a_run_whose_first_last_pt_never_got_written_restarts(tmp_path):
    """A full disk between best.pt and the first last.pt: no epoch is on record, so it restarts."""
    from cifarlab.inference.checkpoint import load_resumable
    run = tmp_path / "r"
    run.mkdir()
    (run / "config.json").write_text("{}")
    write_checkpoint(run / "best.pt")
    (run / "metrics.jsonl").write_text("")
    assert load_resumable(run) is None
    (run / "metrics.jsonl").write_text('{"epoch": 1}\n')
    with pytest.raises(CifarlabError, match="finished epochs but has no last.pt"):
        load_resumable(run)
