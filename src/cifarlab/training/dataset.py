"""The data a config names: the one place ``train``, ``evaluate``, studies and tune load it."""

from __future__ import annotations

from cifarlab.training.config import TrainConfig


def data_for(cfg: TrainConfig, *, progress: bool | None = None):
    """The whole CifarData of ``cfg.data`` (None: $CIFARLAB_DATA, the cache, a download)
    with the validation split ``cfg.val`` carved with ``cfg.seed``, as every run of that
    config sees it. Subsets are the caller's (a shared copy serves runs of several sizes)."""
    from cifarlab.data import load_cifar
    return load_cifar(cfg.data, val=cfg.val, seed=cfg.seed,
                      progress=cfg.progress if progress is None else progress)
