"""``cifarlab predict CHECKPOINT FOLDER --out predictions.csv``: a tree of a few hundred
tiny pictures with bad files among them, interrupted and resumed."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from cifarlab.cli import main
from cifarlab.data import random_cifar
from cifarlab.training import train
from cifarlab.inference import Predictor
from cifarlab.inference.batch_predict import COLUMNS, find_images, predict_folder

N_GOOD, BAD = 300, ["a/broken.png", "b/deep/empty.jpg", "c/text.gif"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tiny = random_cifar(n_train=100, n_test=20, val=0, seed=0)
    runs = tmp_path_factory.mktemp("runs")
    return train(dict(model="lenet5", epochs=1, batch_size=50, runs_dir=str(runs), tensorboard=False,
                      plots=False, progress=False, augment="none"), data=tiny).run_dir


@pytest.fixture()
def tree(tmp_path):
    """300 pictures of mixed sizes and formats in nested folders, 3 unreadable, 1 non-picture."""
    root = tmp_path / "pics"
    rng = np.random.default_rng(0)
    for i in range(N_GOOD):
        sub = root / "abc"[i % 3] / ("deep" if i % 5 == 0 else "")
        sub.mkdir(parents=True, exist_ok=True)
        size = (8 + i % 40, 8 + (i * 7) % 40)
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(sub / f"img{i:04d}{['.png', '.jpg'][i % 2]}")
    (root / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (root / "b" / "deep" / "empty.jpg").write_bytes(b"")
    (root / "c" / "text.gif").write_text("not a gif")
    (root / "c" / "notes.txt").write_text("ignored: not a picture suffix")
    return root


def rows(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_walk_is_sorted_relative_and_by_suffix(tree):
    paths = find_images(tree)
    assert len(paths) == N_GOOD + len(BAD) and paths == sorted(paths)
    assert "c/notes.txt" not in paths and all(not p.startswith("/") for p in paths)


def test_cli_streams_rows_lists_bad_files_and_exits_1(tree, run_dir, tmp_path, capsys):
    out = tmp_path / "predictions.csv"
    code = main(["predict", str(run_dir), str(tree), "--out", str(out), "--top-k", "2", "--batch-size", "64"])
    err = capsys.readouterr().err
    assert code == 1
    assert all(err.count(bad) == 1 for bad in BAD), err
    table = rows(out)
    assert list(table[0]) == COLUMNS and len(table) == N_GOOD
    assert [r["path"] for r in table] == sorted(p for p in find_images(tree) if p not in BAD)
    predictor = Predictor(run_dir)
    expect = predictor.predict([tree / table[7]["path"]], top_k=2)[0]
    assert table[7]["class"] == expect.label
    assert float(table[7]["probability"]) == pytest.approx(expect.top[0][1], abs=1e-6)
    assert table[7]["top_k"].count(";") == 1 and table[7]["top_k"].startswith(expect.label + ":")


def test_interrupted_run_resumes_and_each_file_appears_once(tree, run_dir, tmp_path):
    out = tmp_path / "p.csv"
    predictor = Predictor(run_dir)

    def stop_after_two_batches(report, preds):
        if report.written >= 80:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        predict_folder(predictor, tree, out, batch_size=40, on_batch=stop_after_two_batches)
    first = rows(out)
    assert 0 < len(first) < N_GOOD  # every finished batch is already in the file
    with out.open("a") as f:  # a kill in the middle of a write
        f.write("c/img0299.jpg,cat,0.5")
    report = predict_folder(predictor, tree, out, batch_size=40, resume=True)
    final = rows(out)
    assert report.already == len(first) and report.written == N_GOOD - len(first)
    assert len(final) == N_GOOD and len({r["path"] for r in final}) == N_GOOD
    assert final[:len(first)] == first
    assert sorted(p for p, _ in report.failed) == sorted(BAD)  # retried on resume, still unreadable


def test_cli_refuses_to_clobber_and_resume_of_a_complete_csv_adds_nothing(tree, run_dir, tmp_path, capsys):
    out = tmp_path / "p.csv"
    base = ["predict", str(run_dir), str(tree), "--out", str(out)]
    assert main(base) == 1
    before = out.read_text()
    assert main(base) == 1 and "--resume" in capsys.readouterr().err
    assert main([*base, "--resume"]) == 1  # the bad files are still bad
    assert out.read_text() == before
    assert main([*base, "--overwrite"]) == 1 and out.read_text() == before
    assert main(["predict", str(run_dir), str(tree / "a" / "img0000.png"), "--out", str(out)]) == 1
    assert "one folder" in capsys.readouterr().err
