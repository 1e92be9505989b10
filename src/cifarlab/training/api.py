"""``train(config)`` and ``resume(run_dir)``: the one entry point the CLI, studies and benchmarks share.

A fit selects its best epoch on the validation split only; the test split is evaluated
once, at the end, on that checkpoint, and reported (never used to choose anything).

The callbacks a run gets are ``callbacks_for(config, run_dir, device)`` -- decided by the
config's fields, all in that one function -- plus the ``callbacks`` the caller passes
(the CLI, studies and tune pass the run registry's recorder).

Launched by torchrun (or ``distributed.launch``), the same calls train data-parallel:
every rank runs them, rank 0 alone creates and writes the run folder, tests and reports.
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from cifarlab.atomic import remove_leftovers
from cifarlab.training import callbacks as cbs
from cifarlab.training import distributed
from cifarlab.training.budget import MIN_FULL_EPOCHS, BudgetKeeper, BudgetPlan, check_budget, plan_run, short_run_muon_lr
from cifarlab.inference.checkpoint import load_checkpoint, load_resumable, restore_rng, unwrap, versions
from cifarlab.training.config import TrainConfig
from cifarlab.training.dataset import data_for
from cifarlab.training.evaluation import evaluate_model, saved_norm_loader, write_confusion
from cifarlab.training.fast import WeightAverage, WhiteningInit
from cifarlab.inference.hardware import bf16_in_use, describe, hardware_info, pick_device
from cifarlab.training.loop import Learner
from cifarlab.training.losses import build_loss
from cifarlab.training.optim import build_optimizer, build_schedule
from cifarlab.training.plan import Plan
from cifarlab.inference.runfolder import write_json
from cifarlab.training.runs import RunResult, new_run_dir
from cifarlab.errors import BudgetTooShort, CifarlabError, ConfigError, TrainingInterrupted


def train(config: TrainConfig | dict | None = None, callbacks: Iterable[cbs.Callback] = (),
          data=None, sync_bn: bool = False, allow_over_budget: bool = False) -> RunResult:
    """Train a model as ``config`` says, in a new run folder. ``data``: a CifarData to use
    instead of loading ``config.data`` (tests, studies that share one copy in memory).
    ``sync_bn``: under DDP, BatchNorm statistics computed over the global batch.
    A time budget is a promise: a run whose shortest plan cannot end inside it is refused
    (ConfigError naming the budget that would fit) before any run folder is made, unless
    ``allow_over_budget``."""
    started = time.perf_counter()
    cfg = _as_config(config)
    if cfg.model == "default":  # one meaning everywhere: the shipped default model's architecture
        from cifarlab.inference.checkpoint import default_architecture
        cfg.model = default_architecture()
    if cfg.data and Path(cfg.data).exists():  # so evaluate/resume work from any folder
        cfg.data = str(Path(cfg.data).resolve())
    from cifarlab.models import model_info
    model_info(cfg.model)  # an unknown name fails here, before data loading or a run folder
    return _train_in(cfg, callbacks, data, sync_bn, started=started, allow_over_budget=allow_over_budget)


def _train_in(cfg: TrainConfig, callbacks, data, sync_bn: bool, run_dir: Path | None = None,
              started: float | None = None, allow_over_budget: bool = True) -> RunResult:
    """A fit from epoch 0 in ``run_dir``, or in a new run folder when None. ``started``: when
    the caller's clock started (a time budget counts from there)."""
    started = time.perf_counter() if started is None else started
    with distributed.session(cfg.device) as (dist, rank_device):
        if cfg.time_budget:
            check_budget(cfg, dist.active)
        device, data = _prepare_rank(cfg, data, dist, rank_device)
        budget = _plan_budget(cfg, data, device, started) if cfg.time_budget else None
        if budget is not None and not budget.fits:
            if not allow_over_budget:
                raise BudgetTooShort(over_budget(budget), needs_s=budget_that_fits(budget))
            print(f"cifarlab: warning: {budget.describe()}", file=sys.stderr)
        plan = _plan_of(cfg, budget)
        run_cfg = plan.apply(cfg)
        if dist.is_main and cfg.progress:
            _say(_start_line(run_cfg, data, device, started, budget))
        callbacks = list(callbacks)
        run_dir = dist.broadcast_object(_new_run(cfg, run_cfg, run_dir, callbacks) if dist.is_main else None)
        learner = _build(cfg, plan, data, device, run_dir, callbacks, dist, sync_bn)
        if budget is not None:
            learner.add_callback(BudgetKeeper(budget, plan, started, say=cfg.progress))
        return _fit_and_report(learner, run_cfg, data, run_dir, started)


def budget_that_fits(plan: BudgetPlan) -> int:
    """The budget (s, rounded up to 10) that would hold ``plan``'s shortest run here."""
    import math
    from cifarlab.training.budget import SAFETY
    return 10 * math.ceil(plan.planned_s / (1 - SAFETY) / 10)


def over_budget(plan: BudgetPlan) -> str:
    """One line: the budget cannot hold the shortest run, and what would fit."""
    fits = budget_that_fits(plan)
    return (f"a {plan.budget_s:.0f}-s time budget cannot hold even the shortest run of {plan.model} here "
            f"({_plural(plan.epochs, 'epoch')}, about {plan.planned_s:.0f} s): give --time-budget {fits} or more, a "
            f"smaller model or recipe, or --allow-over-budget to train past the budget")


def _start_line(cfg: TrainConfig, data, device: torch.device, started: float, plan) -> str:
    """How long the whole run will take, said before it starts: the budget's plan, else an
    estimate from a few timed steps (training.budget.estimate_seconds)."""
    from cifarlab.training.budget import duration, estimate_seconds
    what = f"{cfg.model}, {_plural(cfg.epochs, 'epoch')}"
    if plan is not None:
        return (f"training {what}: about {duration(plan.planned_s)} in all, planned inside the "
                f"{duration(plan.budget_s)} time budget")
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        model = _create_model(cfg, data, device)
        train_loader, val_loader, norm = _loaders(cfg, data, device, distributed.Dist())
        test_loader = _test_loader(cfg, data, device, norm) if len(data.test) else None
        total = estimate_seconds(cfg, model, build_loss(cfg.loss, data.num_classes, cfg.label_smoothing),
                                 train_loader, test_loader, val_loader, device,
                                 bf16_in_use(cfg.amp, device), started)
    return f"training {what}: about {duration(total)} in all (estimated from a few timed steps)"


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def _plan_of(cfg: TrainConfig, budget: BudgetPlan | None) -> Plan:
    """The run's plan: the config's values, or what the time budget planned."""
    if budget is None:
        return Plan.of(cfg)
    from cifarlab.data.loader import format_resolutions
    return Plan(model=budget.model, epochs=budget.epochs, last_epoch_steps=budget.last_epoch_steps,
                resolutions=format_resolutions(budget.stages[:-1]),  # a trade may have given some up
                muon_lr=budget.muon_lr or cfg.muon_lr, budget=budget.to_dict())


def _plan_budget(cfg: TrainConfig, data, device: torch.device, started: float) -> BudgetPlan:
    """Time this run's steps on a throwaway copy of its model and plan the epochs that fit
    ``cfg.time_budget`` (training.budget); the random streams are left as they were. Where the
    model would train fewer than MIN_FULL_EPOCHS full-resolution epochs, the next model of
    ``cfg.budget_fallback`` is timed instead, and the plan trains the one planned for.
    ``cfg`` is not changed."""
    from cifarlab.data.loader import format_resolutions
    from cifarlab.models import model_info
    names = [cfg.model] + [n.strip() for n in cfg.budget_fallback.split(",") if n.strip()]
    for name in names[1:]:
        model_info(name)  # an unknown name: one ModelError naming the close ones, before any timing
    passed_over = []
    for name in names:
        trial = TrainConfig.from_dict({"model": name}, base=cfg)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            model = _create_model(trial, data, device)
            train_loader, val_loader, norm = _loaders(trial, data, device, distributed.Dist())
            test_loader = _test_loader(trial, data, device, norm) if len(data.test) else None
            plan = plan_run(trial, model, build_loss(trial.loss, data.num_classes, trial.label_smoothing),
                            train_loader, test_loader, val_loader, device, bf16_in_use(trial.amp, device), started)
        if plan.untraded_full_epochs >= MIN_FULL_EPOCHS or name == names[-1]:
            break
        passed_over.append({"model": name, "full_epochs": plan.untraded_full_epochs, "step_s": plan.step_s})
    plan.model, plan.passed_over = name, passed_over
    plan.muon_lr = short_run_muon_lr(cfg, plan)
    return plan


def _new_run(cfg: TrainConfig, run_cfg: TrainConfig, run_dir: Path | None = None, callbacks=()) -> Path:
    """The run folder with the request in its config.json (``run_cfg``: the planned config)."""
    run_dir = run_dir or new_run_dir(run_cfg)
    for cb in callbacks:  # recorders list the run before its config.json exists: a kill from here on is seen
        cb.run_folder_made(run_dir, run_cfg.to_dict())
    write_json(run_dir / "config.json", cfg.to_dict())
    return run_dir


def resume(run_dir: str | Path, epochs: int | None = None, callbacks: Iterable[cbs.Callback] = (),
           data=None, progress: bool | None = None, sync_bn: bool | None = None) -> RunResult:
    """Continue a run from its last.pt exactly; ``epochs`` may raise the planned total.

    Under DDP every rank reads the same last.pt; ``sync_bn`` None keeps the run's setting.
    A run may resume with another number of processes (same global batch): the batches stay
    the same, only the per-rank augmentation draws and BN statistics change.
    """
    started = time.perf_counter()
    run_dir = Path(run_dir)
    ckpt = load_resumable(run_dir)  # a folder that cannot be resumed is refused here, untouched
    if ckpt is None:
        return _restart(run_dir, epochs, callbacks, data, progress, bool(sync_bn))
    cfg = TrainConfig.from_dict(ckpt["config"])
    plan = Plan.saved(ckpt, cfg)
    remove_leftovers(run_dir)  # temporaries of a writer killed mid-checkpoint
    if epochs is not None:  # the epochs asked for: a new request, and a plan of them without a budget
        cfg.override(_fixed_epochs(epochs))
        plan.epochs, plan.last_epoch_steps, plan.budget = epochs, 0, None
    if progress is not None:
        cfg.progress = progress
    if sync_bn is None:
        sync_bn = bool((ckpt.get("distributed") or {}).get("sync_bn", False))
    with distributed.session(cfg.device) as (dist, rank_device):
        device, data = _prepare_rank(cfg, data, dist, rank_device)
        learner = _build(cfg, plan, data, device, run_dir, callbacks, dist, sync_bn)
        try:
            _restore(learner, ckpt)
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as exc:  # before any file is written
            why = " ".join(str(exc).split())[:160] or type(exc).__name__
            raise CifarlabError(f"{ckpt['path']} cannot be resumed: its saved state does not fit the run it "
                                f"describes ({why}); train a new run to go on") from None
        if dist.is_main:
            write_json(run_dir / "config.json", cfg.to_dict())
        return _fit_and_report(learner, plan.apply(cfg), data, run_dir, started)


def _fixed_epochs(epochs: int) -> dict:
    """The config of a resume told its ``epochs``: whole epochs, no time budget's plan."""
    return {"epochs": epochs, "time_budget": 0.0, "last_epoch_steps": 0}


def _restart(run_dir: Path, epochs, callbacks, data, progress, sync_bn: bool) -> RunResult:
    """A run killed before its first epoch ended: train it from its config.json, in place."""
    cfg = TrainConfig.from_json(run_dir / "config.json")
    cfg.override(_fixed_epochs(epochs) if epochs is not None else {})
    cfg.progress = cfg.progress if progress is None else progress
    remove_leftovers(run_dir)
    return _train_in(cfg, callbacks, data, sync_bn, run_dir)


def _prepare_rank(cfg: TrainConfig, data, dist, rank_device):
    """What a new and a resumed run do alike on each process: device, data, seeds."""
    distributed.check_batch(cfg.batch_size, dist)
    device = rank_device or pick_device(cfg.device)
    cfg.progress = cfg.progress and dist.is_main
    data = _load_data_once_per_machine(cfg, data, dist)
    _seed_everything(cfg.seed)
    return device, data


def _as_config(config) -> TrainConfig:
    if config is None:
        return TrainConfig()
    if isinstance(config, TrainConfig):
        return TrainConfig.from_dict({}, base=config)
    if isinstance(config, dict):
        return TrainConfig.from_dict(config)
    raise ConfigError(f"config must be a TrainConfig or a dict, got {type(config).__name__}")


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def _load_data_once_per_machine(cfg: TrainConfig, data, dist: distributed.Dist):
    """Local rank 0 loads first (it may download and cache); the others then read its cache."""
    if not dist.active:
        return _load_data(cfg, data)
    if dist.local_rank == 0:
        data = _load_data(cfg, data)
    dist.barrier()
    return data if dist.local_rank == 0 else _load_data(cfg, data)


def _load_data(cfg: TrainConfig, data):
    from cifarlab.data import CifarData
    if data is not None and not isinstance(data, CifarData):
        raise TypeError(f"data must be a CifarData or None, not {type(data).__name__}; "
                        "a path belongs in config.data")
    if data is None:
        data = data_for(cfg)
        if cfg.data is None and Path(data.info.source).exists():  # found via $CIFARLAB_DATA or the
            cfg.data = str(Path(data.info.source).resolve())  # cache: record it for evaluate/resume
    if cfg.train_subset or cfg.test_subset:
        data = data.subset(train=cfg.train_subset, test=cfg.test_subset, seed=cfg.seed)
    if len(data.train) == 0:
        raise ConfigError("the training split is empty; check --data and --train-subset")
    if data.num_classes < 2 or len(set(np.unique(data.train.labels).tolist())) < 2:
        raise ConfigError(f"the training split of {data.info.source} holds one class only: a classifier needs "
                          f"at least two (every prediction would be that class, 100% on its own test)")
    return data


# ---------------------------------------------------------------- building a learner
def _build(request: TrainConfig, plan: Plan, data, device: torch.device, run_dir: Path, extra,
           dist: distributed.Dist | None = None, sync_bn: bool = False) -> Learner:
    """The learner of ``plan.apply(request)``; its meta records the request and the plan apart."""
    dist = dist or distributed.Dist()
    cfg = plan.apply(request)
    if device.type == "cuda":  # fixed input shapes: let cuDNN time its conv algorithms once
        torch.backends.cudnn.benchmark = True
    train_loader, val_loader, norm = _loaders(cfg, data, device, dist)
    model = _create_model(cfg, data, device)
    optimizer = build_optimizer(model, cfg)
    schedule = build_schedule(cfg, len(train_loader))
    meta = {"model": {"name": cfg.model, "kwargs": _model_kwargs(cfg), "num_classes": data.num_classes},
            "config": request.to_dict(), "plan": plan.to_dict(), "classes": list(data.classes),
            "normalize": norm,
            "distributed": {**dist.to_dict(), "sync_bn": bool(sync_bn and dist.active)},
            "data": {"source": data.info.source, "format": data.info.format, "checksum": data.info.checksum,
                     "train": len(data.train),
                     "val": len(data.val), "test": len(data.test)}}
    fit_model = distributed.wrap_model(model, dist, device, sync_bn)
    fit_model = torch.compile(fit_model) if cfg.compile else fit_model
    learner = Learner(fit_model, build_loss(cfg.loss, data.num_classes, cfg.label_smoothing), optimizer,
                      schedule, train_loader, val_loader, cfg.epochs, device,
                      amp=bf16_in_use(cfg.amp, device), binary=cfg.loss == "bce", meta=meta, dist=dist,
                      amp_eval=cfg.amp_eval, last_epoch_steps=cfg.last_epoch_steps)
    learner.run_dir = run_dir
    learner.plan = plan
    if dist.rank:  # dropout masks differ per rank (rank 0 keeps the single-process stream)
        torch.manual_seed(cfg.seed + 7919 * dist.rank)
    for cb in [*callbacks_for(cfg, run_dir, device), *extra]:
        learner.add_callback(cb)
    return learner


def _loaders(cfg: TrainConfig, data, device: torch.device, dist: distributed.Dist):
    """(train loader, val loader or None, normalization) on ``device``; the normalization
    ({"mean", "std", "grayscale"}) is the training split's statistics."""
    from cifarlab.data import DeviceLoader, build_augment, channel_stats
    mean, std = channel_stats(data.train.images, cfg.grayscale)
    loader_args = dict(device=device, mean=mean, std=std, grayscale=cfg.grayscale,
                       channels_last=cfg.channels_last, rank=dist.rank, world_size=dist.world_size)
    n, b = len(data.train), cfg.batch_size
    # BN cannot train on one image: drop a last batch that leaves any rank fewer than 2
    short_last = 0 < n % b < 2 * dist.world_size and n > b
    train_loader = DeviceLoader(data.train, b, shuffle=True, augment=build_augment(cfg.augment),
                                seed=cfg.seed, drop_last=short_last, **loader_args)
    val_loader = (DeviceLoader(data.val, max(cfg.batch_size, 500), shuffle=False, **loader_args)
                  if len(data.val) else None)
    return train_loader, val_loader, {"mean": mean, "std": std, "grayscale": cfg.grayscale}


def _test_loader(cfg: TrainConfig, data, device: torch.device, norm: dict):
    """The final test's loader: batches of 500, normalized as ``norm`` says."""
    return saved_norm_loader(data.test, norm, device, 500, cfg.channels_last)


def _model_kwargs(cfg: TrainConfig) -> dict:
    kwargs = dict(cfg.model_kwargs)
    if cfg.grayscale == 1:
        kwargs.setdefault("in_chans", 1)
    return kwargs


def _create_model(cfg: TrainConfig, data, device: torch.device) -> torch.nn.Module:
    from cifarlab.models import create_model
    model = create_model(cfg.model, num_classes=data.num_classes, **_model_kwargs(cfg)).to(device)
    return model.to(memory_format=torch.channels_last) if cfg.channels_last else model


def callbacks_for(cfg: TrainConfig, run_dir: Path, device: torch.device) -> list[cbs.Callback]:
    """Every callback the config asks for: the one place a run's behaviours are switched on."""
    out: list[cbs.Callback] = [
        cbs.DivergenceGuard(cfg.diverge_factor, optimizer=cfg.optimizer,  # each check reads the GPU
                            check_every=1 if device.type == "cpu" else 50),
        cbs.Checkpointer(run_dir, cfg.select_metric),
        cbs.MetricsLogger(run_dir),
    ]
    if cfg.early_stop:
        out.append(cbs.EarlyStopping(cfg.early_monitor, cfg.early_patience, cfg.early_min_delta, cfg.early_mode))
    if cfg.tensorboard:
        out.append(cbs.TensorBoardLogger(run_dir))
    if cfg.plots:
        out.append(cbs.Plotter(run_dir))
    if cfg.progress:
        out.append(cbs.ProgressBar())
    if cfg.resolutions:
        out.append(cbs.ProgressiveResize(cfg.resolutions))
    if cfg.whiten:
        out.append(WhiteningInit(cfg.whiten_images, cfg.whiten_eps, cfg.whiten_bias_epochs))
    if cfg.average != "none":
        out.append(WeightAverage(cfg.average_decay, cfg.average_every, cfg.average_power))
    return out


def _restore(learner: Learner, ckpt: dict) -> None:
    unwrap(learner.model).load_state_dict(ckpt["state_dict"])
    learner.optimizer.load_state_dict(_optimizer_state(ckpt["optimizer"]))
    learner.schedule.load_state_dict(ckpt["scheduler"])
    learner.epoch, learner.step = ckpt["epoch"], ckpt["step"]
    learner.history = list(ckpt["metrics"])
    learner.load_callback_states(ckpt.get("callbacks", {}))
    learner.resumed = True
    restore_rng(ckpt["rng"])  # last: nothing between here and the first batch draws numbers


def _optimizer_state(state: dict) -> dict:
    """A checkpoint's optimizer state; one saved before param groups carried ``lr_scale``
    (before the first release) is refused in one line."""
    if not all("lr_scale" in g for g in state["param_groups"]):
        raise ConfigError("this checkpoint predates the BatchNorm-bias parameter group (bias_lr_scale) and "
                          "cannot be resumed; evaluate it as it is, or train the run again")
    return state


# ---------------------------------------------------------------- fit, test once, report
def _fit_and_report(learner: Learner, cfg: TrainConfig, data, run_dir: Path, started: float) -> RunResult:
    hw = {**hardware_info(learner.device), "amp": learner.amp, "amp_eval": bool(learner.amp and learner.amp_eval)}
    if learner.dist.active:
        hw["processes"] = learner.dist.world_size
    if cfg.progress:
        procs = f" | {learner.dist.world_size} processes" if learner.dist.active else ""
        _say(f"{describe(hw)}{procs}\nrun folder {run_dir} | {cfg.model} | train {len(data.train)} "
             f"val {len(data.val)} test {len(data.test)} | {_plural(cfg.epochs, 'epoch')}")
        budget = learner.plan.budget
        if budget and not learner.resumed:
            _say(BudgetPlan(**budget).describe())
    start = time.perf_counter()
    try:
        learner.fit()
    except KeyboardInterrupt:
        raise _interrupted(learner, run_dir) from None
    fit_seconds = time.perf_counter() - start
    if not learner.is_main:  # rank 0 tests and reports; the others are done
        return RunResult(run_dir, {}, unwrap(learner.model))
    summary = _test_and_summarize(learner, cfg, data, run_dir, hw, fit_seconds)
    budget = learner.plan.budget
    if budget:  # the budget counted the test, not a second pass over the splits
        summary["calibration"] = {"skipped": f"a time-budgeted run; measure it with: cifarlab evaluate "
                                             f"{run_dir} --calibrate"}
    else:
        _calibrate(learner, cfg, data, run_dir, summary)
    summary["wall_time_s"] = round(time.perf_counter() - started, 2)  # from the train/resume call
    if budget:  # the plan beside what it came to
        summary["time_budget"] = {**budget, "wall_s": summary["wall_time_s"]}
    write_json(run_dir / "summary.json", summary)
    from cifarlab.modelcard import write_run_card
    write_run_card(run_dir, summary)
    learner.summary = summary
    learner.event("after_report")
    if cfg.progress:
        _say(_summary_line(summary))
    return RunResult(run_dir, summary, unwrap(learner.model))


def _calibrate(learner: Learner, cfg, data, run_dir: Path, summary: dict) -> None:
    """ECE/MCE of the test split; temperature fitted on val and stored in the checkpoints."""
    if not len(data.test):
        return
    from cifarlab.training.calibrate import calibrate_run
    try:
        summary["calibration"] = calibrate_run(unwrap(learner.model), cfg, data, run_dir, learner.device,
                                               learner.meta["normalize"])
    except CifarlabError as exc:  # the run is trained and saved: say why, lose nothing
        summary["calibration"] = {"error": str(exc)}


def _interrupted(learner: Learner, run_dir: Path) -> TrainingInterrupted:
    done = learner.epoch
    if done == 0 and not (run_dir / "last.pt").exists():
        return TrainingInterrupted(f"interrupted during epoch 1; no epoch finished; start it again with: "
                                   f"cifarlab train --resume {run_dir}", run_dir, 0)
    return TrainingInterrupted(f"interrupted after epoch {done}; resume with: cifarlab train --resume "
                               f"{run_dir}", run_dir, done)


def _test_and_summarize(learner: Learner, cfg, data, run_dir: Path, hw: dict, seconds: float) -> dict:
    model = unwrap(learner.model)
    ckpt = load_checkpoint(run_dir)  # best.pt, else last.pt
    model.load_state_dict(ckpt["state_dict"])
    ckpt_name = Path(ckpt["path"]).name
    test = {}
    if len(data.test):
        loader = _test_loader(cfg, data, learner.device, learner.meta["normalize"])
        test = evaluate_model(model, loader, data.classes, learner.device, cfg.loss, tta=cfg.tta, amp=learner.amp,
                              amp_eval=cfg.amp_eval)
        write_confusion({**test, "split": "test"}, run_dir, png=cfg.plots)
    return _summary(learner, cfg, run_dir, hw, seconds, test, ckpt_name)


def _summary(learner: Learner, cfg, run_dir: Path, hw: dict, seconds: float, test: dict, ckpt: str) -> dict:
    saver = learner.callback(cbs.Checkpointer)
    history = learner.history
    best = next((h for h in history if saver and h["epoch"] == saver.best_epoch), history[-1] if history else {})
    rates = [h["images_per_s"] for h in history]
    has_val = any("val_acc" in h for h in history)
    from cifarlab.models import count_params
    params = count_params(unwrap(learner.model))
    out = {
        "run_dir": str(run_dir), "model": cfg.model, "recipe": cfg.recipe,
        "epochs_run": learner.epoch, "epochs_planned": learner.epochs, "stopped": learner.stop_reason or None,
        "steps_run": learner.step, "last_epoch_steps": learner.last_epoch_steps,
        "plan": {k: v for k, v in learner.plan.to_dict().items() if k != "budget"},
        "selection": {"checkpoint": ckpt, "metric": saver.used if saver else None,
                      "epoch": best.get("epoch"),
                      "note": None if has_val else "val=0: no validation split, the last epoch is used"},
        "val_best": {k: best[k] for k in ("epoch", "val_acc", "val_loss", "val_binary_acc") if k in best},
        "test": {k: test[k] for k in ("n", "top1", "top5", "loss", "binary_accuracy", "tta", "per_class") if k in test},
        "training_time_s": round(seconds, 2),
        "images_per_s": round(statistics.median(rates), 1) if rates else None,
        # the highest 1-minute load average at an epoch's end: over the cores, other work shared them
        "load_1m_max": max((h["load_1m"] for h in history if "load_1m" in h), default=None),
        "params": {"trainable": params.trainable, "non_trainable": params.non_trainable},
        "hardware": hw, "data": learner.meta["data"], "versions": versions(),
    }
    return out


def _summary_line(s: dict) -> str:
    t = s["test"]
    head = f"test top-1 {t['top1']:.4f}  top-5 {t['top5']:.4f}" if t else "no test split"
    if "binary_accuracy" in t:
        head += f"  (binary_accuracy {t['binary_accuracy']:.4f}, not an accuracy over classes)"
    sel = s["selection"]
    where = sel["note"] or f"best {sel['metric']} at epoch {sel['epoch']}"
    return (f"{head} | checkpoint {sel['checkpoint']} ({where}) | {_plural(s['epochs_run'], 'epoch')} in "
            f"{s['training_time_s']:.0f}s, {s['images_per_s']} img/s | {s['run_dir']}")


def _say(text: str) -> None:
    from rich.console import Console
    Console(stderr=True, soft_wrap=True).print(text, highlight=False)
