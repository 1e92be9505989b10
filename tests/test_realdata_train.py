"""Train on the real CIFAR-10 copy (CIFARLAB_DATA) on CPU for about a minute; check the accuracy.

Budget: <= 150 s on 2 shared cores including the test-set evaluation (the decoded arrays
are cached once per session by the ``real_data`` fixture).
"""

from __future__ import annotations

import time

import pytest

from cifarlab.training import evaluate, train

# Measured on 2 shared AMD EPYC cores (torch 2.13 CPU, seed 0): test top-1 0.6645 after 8
# epochs of lenet5_modern on the 45k training images, 46 s including evaluation. The floor
# leaves ~6 points for seeds, torch versions and BLAS differences, yet is far above chance
# (10%) and above what a broken pipeline (wrong normalization, labels, schedule) reaches.
FLOOR = 0.60


@pytest.mark.realdata
@pytest.mark.slow
def test_lenet_reaches_floor_on_real_data(real_data, tmp_path):
    start = time.perf_counter()
    cfg = dict(model="lenet5_modern", epochs=8, batch_size=128, optimizer="sgd", lr=0.05, weight_decay=5e-4,
               schedule="onecycle", augment="crop:4,flip", label_smoothing=0.1, runs_dir=str(tmp_path),
               name="real", tensorboard=False, progress=False, device="cpu")
    result = train(cfg, data=real_data)
    seconds = time.perf_counter() - start
    top1 = result.summary["test"]["top1"]
    print(f"real-data lenet5_modern: test top-1 {top1:.4f} (val best {result.summary['val_best']}) in {seconds:.0f}s")
    assert result.summary["test"]["n"] == 10000
    assert top1 >= FLOOR, f"test top-1 {top1:.4f} below the floor {FLOOR}"
    assert result.summary["selection"]["metric"] == "val_acc"
    again = evaluate(result.run_dir, data=real_data, tta="flip")
    assert again["top1"] >= top1 - 0.02  # flip TTA should not hurt by more than noise
