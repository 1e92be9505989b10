"""Comparing models at an equal time budget each: ``cifarlab compare``.

A comparison is a study (``studies.study``) over one factor, ``model``, whose values bring
their own settings (``StudySpec.value_settings``): resuming after a kill, the run registry
and ``--storage`` sharing are the study's. Each run gets the same wall-clock budget
(``time_budget``; the engine plans its epochs on the machine it runs on, training/budget.py).

``settings="cpu"``: cifarlab's CPU settings for each model (below, as data); ``"reference"``:
the five-classic-cnns settings for every model (the ``reference`` recipe: Adam 1e-3, batch 32,
no augmentation, constant lr), with the same budget, so the two can be set side by side.

The report (``compare_report``) puts the write-up's accuracy beside ours; each run that
finishes appends a row to ``results/compare.csv`` (``record_run``), with its calibration and
robustness (``compare_trust``) where they were measured before the row was written;
``compare_run.run_compare`` trains it.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Iterable

from cifarlab.errors import ConfigError
from cifarlab.studies.study import PlannedRun, StudySpec

# the five models of five-classic-cnns.md §4, in its order
WRITEUP_MODELS = ("lenet5", "alexnet", "vgg16_faithful", "googlenet_small", "resnet18")
SETTINGS = ("cpu", "reference")
DEFAULT_BUDGET_S = 600.0
RESULTS_KIND = "compare"

# Every model of a CPU comparison starts from these (TrainConfig fields; the rest are the
# defaults): bf16 where the CPU computes it natively and channels-last (both TrainConfig
# defaults, named here so the report lists them), a one-cycle schedule that the time budget
# stretches to the epochs it plans, light augmentation (a few epochs: more would underfit),
# label smoothing, a 5,000-image validation split for the curves and the choice of checkpoint
# (the test set is evaluated once, at the end), the mirror as a test-time view.
CPU_COMMON = {
    "amp": True, "channels_last": True,
    "optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4,
    "schedule": "onecycle", "warmup": 0.2, "label_smoothing": 0.1,
    "batch_size": 128, "augment": "flip,translate:2", "val": 5000, "tta": "flip",
    "epochs": 15,  # only with --time-budget 0; a budget plans the epochs
    "budget_fallback": "",  # the model asked for is the model trained, however few epochs fit
}

# What each model trains with on top of CPU_COMMON, and why. ``resolutions`` (low-resolution
# first epochs) only where the model takes other sizes: lenet5, alexnet, vgg16_faithful and
# inception_colab flatten a fixed-size map into their dense layers. ``amp_eval``: the final
# test in bf16 too where the CPU has it, for the large models whose float32 test is a sizeable
# part of a short budget. Models without BatchNorm after their convolutions train with
# Adam-family optimizers, which do not need it to take large steps; the others with SGD.
CPU_MODEL_SETTINGS: dict[str, dict] = {
    # 62k parameters with sigmoid activations, no BatchNorm: Adam (as the write-up), a one-cycle
    # peak above its 1e-3, a batch large enough to feed two cores; it fits many epochs
    "lenet5": {"optimizer": "adam", "lr": 2e-3, "weight_decay": 0.0, "tta": "flip-translate", "epochs": 40},
    # BatchNorm on the first two convs only, 2048-wide dropout head: AdamW
    "alexnet": {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.05, "epochs": 15},
    # conv-BN-ReLU throughout: SGD-Nesterov 0.1; 15M parameters, a few epochs fit
    "vgg16_faithful": {"amp_eval": True, "epochs": 8},
    # 120k parameters, global average pool: two epochs each at 16 and 24 px buy more passes
    "googlenet_small": {"resolutions": "16:2,24:2", "tta": "flip-translate", "epochs": 20},
    # 11M parameters, global average pool: two 16-px epochs (a quarter of a 32-px one each);
    # more would leave no room for a second full-size epoch where bf16 is missing
    "resnet18": {"resolutions": "16:2", "amp_eval": True, "epochs": 8},
    # the colab notebook's Inception net: BatchNorm after each module only, dense head
    "inception_colab": {"optimizer": "adamw", "lr": 2e-3, "weight_decay": 0.05, "epochs": 15},
    # 15 plain convs without BatchNorm, global max-pool
    "deepcnn15": {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.05, "resolutions": "16:2", "epochs": 15},
    # 23M parameters, 4 GMACs an image: one 16-px epoch, no test-time views
    "inception_v3_slim": {"resolutions": "16:1", "amp_eval": True, "tta": "none", "epochs": 3},
}
# a model without an entry above: AdamW, which trains with or without BatchNorm
CPU_GENERIC = {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.05}


def model_settings(model: str, settings: str = "cpu") -> dict:
    """The TrainConfig fields ``model`` trains with in a comparison, on top of the common ones."""
    if settings == "reference":
        return {}
    return dict(CPU_MODEL_SETTINGS.get(model, CPU_GENERIC))


def common_settings(settings: str) -> dict:
    if settings == "cpu":
        return dict(CPU_COMMON)
    if settings == "reference":
        from cifarlab.training.recipes import recipe_values
        return {**recipe_values("reference"), "recipe": "reference", "budget_fallback": ""}
    raise ConfigError(f"--settings {settings!r} is not one of: {', '.join(SETTINGS)}")


# ---------------------------------------------------------------- the spec
def build_compare_spec(models: Iterable[str] = WRITEUP_MODELS, *, time_budget: float = DEFAULT_BUDGET_S,
                       seeds: int = 1, settings: str = "cpu", sets: dict | None = None,
                       train_subset: int | None = None, test_subset: int | None = None,
                       name: str | None = None) -> StudySpec:
    """A study over ``model`` with each model's own settings; ``sets`` (``--set``) apply to
    every model, over its own settings. ``time_budget`` seconds per run (0: the settings' epochs)."""
    from cifarlab.training import TrainConfig
    from cifarlab.models import model_info
    models = list(dict.fromkeys(m.strip() for m in models if m.strip()))
    if not models:
        raise ConfigError("--models names no model; e.g. --models lenet5,resnet18 (see `cifarlab models`)")
    for m in models:
        model_info(m)  # an unknown name: one line naming the close ones
    if seeds < 1:
        raise ConfigError(f"--seeds {seeds} must be at least 1")
    if time_budget < 0:
        raise ConfigError(f"--time-budget {time_budget:g} must be >= 0 (0: each model's planned epochs)")
    sets = dict(sets or {})
    if "model" in sets:
        raise ConfigError("--set model=... has no meaning in a comparison; use --models")
    budget = {"time_budget": float(time_budget)} if time_budget else {"time_budget": 0.0, "last_epoch_steps": 0}
    common = {**common_settings(settings), **budget, "model": models[0]}
    cfg = TrainConfig.from_dict(common).override(sets)
    reduced = {}
    for key, value in (("train_subset", train_subset), ("test_subset", test_subset)):
        if value:
            cfg.override({key: value})
            reduced[key] = value
    per_model = {}
    for m in models:
        own = {k: v for k, v in model_settings(m, settings).items() if k not in sets}
        TrainConfig.from_dict({**cfg.to_dict(), **own, "model": m})  # a bad entry fails here, not mid-way
        per_model[m] = own
    tag = settings if settings == "reference" else ""
    default_name = "compare-" + ("-".join(models) if len(models) <= 3 else f"{len(models)}models") + \
        (f"-{tag}" if tag else "") + (f"-{time_budget:g}s" if time_budget else "")
    return StudySpec(name=name or default_name, base=cfg.to_dict(), factors=[["model", models]],
                     seeds=[cfg.seed + i for i in range(seeds)], preset=f"compare:{settings}",
                     reduced=reduced, value_settings={"model": per_model}, kind="compare")


def compare_settings_name(spec: StudySpec) -> str:
    return (spec.preset or "compare:cpu").partition(":")[2] or "cpu"


def reproduce_command(spec: StudySpec, out: str | Path) -> str:
    """The command that builds this same comparison (and continues it in ``out``)."""
    models = spec.factors[0][1]
    settings = compare_settings_name(spec)
    args = ["cifarlab", "compare"]
    if list(models) != list(WRITEUP_MODELS):
        args += ["--models", ",".join(models)]
    if spec.base.get("time_budget") != DEFAULT_BUDGET_S:
        args += ["--time-budget", f"{spec.base.get('time_budget') or 0:g}"]
    if len(spec.seeds) > 1:
        args += ["--seeds", str(len(spec.seeds))]
    if settings != "cpu":
        args += ["--settings", settings]
    for key, value in spec.reduced.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    # a --set replaces that setting for every model: a model's own setting missing says it was given
    own = (spec.value_settings or {}).get("model", {})
    sets = {k: spec.base.get(k) for m in models for k in model_settings(m, settings) if k not in own.get(m, {})}
    named = True
    try:
        plain = build_compare_spec(models, time_budget=spec.base.get("time_budget") or 0, seeds=len(spec.seeds),
                                   settings=settings, sets=sets, **spec.reduced)
        named = plain.name != spec.name
        sets.update({k: v for k, v in spec.base.items() if k not in ("model", "name", "runs_dir", "progress")
                     and k not in spec.reduced and plain.base.get(k) != v})
    except ConfigError:
        pass
    args += [a for k, v in sets.items() for a in ("--set", f"{k}={_set_text(v)}")]
    args += (["--name", spec.name] if named else []) + ["--out", str(out)]
    return shlex.join(args)


def _set_text(value) -> str:
    import json
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float, str)):
        return str(value)
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return json.dumps(value)


# ---------------------------------------------------------------- results rows
def results_row(out: Path, spec: StudySpec, run: PlannedRun, command: str | None = None) -> dict | None:
    """The results/compare.csv row of a finished run (None while it is not finished), with
    the trust columns (``compare_trust.trust_columns``) empty where trust.json is missing."""
    from cifarlab.studies.compare_trust import read_trust, trust_columns
    from cifarlab.studies.reading import read_history, run_record
    rec = run_record(out / "runs" / run.name)
    if rec is None:
        return None
    s = rec["summary"]
    hw = s.get("hardware") or {}
    data = s.get("data") or {}
    params = s.get("params") or {}
    top1 = (s.get("test") or {}).get("top1")
    cfg = run.config
    return {
        "machine": hw.get("device_name"), "cores": hw.get("cores"), "bf16": hw.get("bf16_native"),
        "command": command or reproduce_command(spec, out), "seed": run.seed,
        "series": f"{spec.name}@{_spec_digest(spec)}",
        "model": cfg["model"], "recipe": f"compare:{compare_settings_name(spec)}",
        "budget_s": cfg.get("time_budget") or None,
        "epochs": round(epochs_done(s, read_history(out / "runs" / run.name)), 2),
        "test_top1_pct": None if top1 is None else round(100 * top1, 2),
        "tta": cfg.get("tta"), "wall_s": s.get("wall_time_s"), "fit_s": s.get("training_time_s"),
        "params": (params.get("trainable") or 0) + (params.get("non_trainable") or 0) or None,
        "train_images": data.get("train") if isinstance(data.get("train"), int) else None,
        "train_subset": cfg.get("train_subset"), "test_subset": cfg.get("test_subset"),
        "run": f"{out}/runs/{run.name}", **trust_columns(read_trust(out / "runs" / run.name)),
    }


# the columns a trust row repeats from its run's row: which run it measured, nothing it did not measure
_TRUST_ROW_KEYS = ("seed", "series", "model", "recipe", "budget_s", "train_images", "train_subset", "test_subset",
                   "run")


def trust_row(out: Path, spec: StudySpec, run: PlannedRun, command: str | None = None) -> dict | None:
    """The results/compare.csv row of a trust measurement made after the run's own row was
    written (``cifarlab compare --report-only``): the run's identity and the trust columns,
    no ``test_top1_pct`` (so no reader counts the run's accuracy twice), ``machine`` the
    machine that measured it. None when the run is not finished or trust.json is missing."""
    from cifarlab.studies.compare_trust import read_trust, trust_columns
    trust = read_trust(out / "runs" / run.name)
    row = results_row(out, spec, run, command) if trust else None
    if row is None:
        return None
    return {"command": command, **{k: row[k] for k in _TRUST_ROW_KEYS}, **trust_columns(trust)}


def _spec_digest(spec: StudySpec) -> str:
    from cifarlab.studies.claims import study_key
    return study_key(spec).rpartition(":")[2]


def record_run(out: Path, spec: StudySpec, run: PlannedRun, command: str | None = None) -> Path | None:
    """Append ``run``'s row to results/compare.csv where a results folder exists (a checkout's
    ``results/``, or ``$CIFARLAB_RESULTS``): an installed package gets no folder made for it."""
    from cifarlab import results
    row = results_row(out, spec, run, command)
    return None if row is None else results.record(RESULTS_KIND, row)


def record_too_slow(out: Path, spec: StudySpec, run: PlannedRun, command: str | None = None) -> Path | None:
    """A row of results/compare.csv for a run its budget cannot hold on this machine: no
    accuracy, and ``needs_s``, the budget that would hold it here (from too_slow.json). The
    machine columns are this one's: the refusal was measured here."""
    import json

    from cifarlab import results
    from cifarlab.studies.study import TOO_SLOW
    try:
        refused = json.loads((out / "runs" / run.name / TOO_SLOW).read_text())
    except (OSError, ValueError):
        return None
    cfg = run.config
    return results.record(RESULTS_KIND, {
        "command": command or reproduce_command(spec, out), "seed": run.seed,
        "series": f"{spec.name}@{_spec_digest(spec)}", "model": cfg["model"],
        "recipe": f"compare:{compare_settings_name(spec)}", "budget_s": cfg.get("time_budget") or None,
        "epochs": 0, "test_top1_pct": None, "train_subset": cfg.get("train_subset"),
        "test_subset": cfg.get("test_subset"), "run": f"{out}/runs/{run.name}", "needs_s": refused.get("needs_s")})



def record_trust(out: Path, spec: StudySpec, run: PlannedRun, command: str | None = None) -> Path | None:
    """Append ``run``'s trust row (``trust_row``) to results/compare.csv, where ``record_run``
    would write (a checkout's ``results/`` or ``$CIFARLAB_RESULTS``)."""
    from cifarlab import results
    row = trust_row(out, spec, run, command)
    return None if row is None else results.record(RESULTS_KIND, row)


def epochs_done(summary: dict, history: list[dict]) -> float:
    """Epochs trained, a cut last epoch counted as its share of a whole one."""
    n = len(history) or summary.get("epochs_run") or 0
    plan = summary.get("time_budget") or {}
    last, per_epoch = summary.get("last_epoch_steps") or 0, plan.get("steps_per_epoch") or 0
    if n and last and per_epoch and n == summary.get("epochs_planned"):
        return n - 1 + last / per_epoch
    return float(n)
