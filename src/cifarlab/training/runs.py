"""Run folders: ``runs/<name>/`` holding config, metrics, checkpoints, figures and summary."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cifarlab.atomic import remove_leftovers
from cifarlab.inference.runfolder import write_json
from cifarlab.training.config import TrainConfig
from cifarlab.errors import ConfigError


@dataclass
class RunResult:
    """What ``train``/``resume`` return: the run folder, its summary.json, the trained model."""
    run_dir: Path
    summary: dict
    model: Any  # nn.Module (typed loosely so this module needs no torch)


def new_run_dir(cfg: TrainConfig) -> Path:
    """``runs_dir/name``; the default name is ``<model>-<YYYYmmdd-HHMMSS>`` (made unique)."""
    parent = Path(cfg.runs_dir)
    if cfg.name:
        run = parent / cfg.name
        if (run / "last.pt").exists() or (run / "config.json").exists():
            raise ConfigError(f"run folder {run} already exists; resume it with "
                              f"`cifarlab train --resume {run}` or pick another --name")
        run.mkdir(parents=True, exist_ok=True)
        remove_leftovers(run)  # of a start killed while writing config.json
        return run
    stem = f"{cfg.model}-{time.strftime('%Y%m%d-%H%M%S')}"
    for i in range(1, 1000):
        run = parent / (stem if i == 1 else f"{stem}-{i}")
        try:
            run.mkdir(parents=True)
            return run
        except FileExistsError:
            continue
    raise ConfigError(f"could not create a fresh run folder under {parent}")
