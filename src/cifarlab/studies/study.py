"""Hyperparameter studies: a base config, factors to vary, seeds; one run folder per point.

One factor at a time (the default, as in five-classic-cnns §6): every value of a factor is
trained with all other settings at the base; a point that coincides with the base (or with
another factor's point) is trained once and shared. ``grid=True`` trains every combination.

A study folder holds ``study.json`` (the spec), ``runs/<point>-s<seed>/`` (ordinary run
folders) and, once done, ``tables/``, ``figures/`` and ``report.md``/``report.html``.
Running the same spec into the same folder again skips finished runs (those with
summary.json), resumes a half-finished one from its last.pt (engine ``resume``, exact), and
restarts one that stopped before its first epoch ended. A run whose loss diverges is a
result (written as diverged.json, counted in the tables), not a reason to stop the study.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from cifarlab.errors import ConfigError

# config fields that say how to run, not what is studied: they may change between resumes
_NOT_IDENTITY = ("runs_dir", "name", "progress", "plots", "tensorboard", "device")
# fields that are not meaningful factors (output, bookkeeping, or a dict set through `act`)
_NOT_FACTORS = ("model_kwargs", "runs_dir", "name", "progress", "recipe", "tensorboard", "plots")
# written in a run folder whose loss diverged: the run counts as done (rerunning repeats it)
DIVERGED = "diverged.json"
# a run whose time budget cannot hold its model's shortest run here: a result of the study,
# retried by the next call (a quieter or faster machine may fit it)
TOO_SLOW = "too_slow.json"
# factors that change the loaded data itself: the study cannot share one copy across runs
_DATA_FACTORS = ("data", "val")
# fields added after study folders existed, with their defaults: left out of study.json (and so
# of the identity and the --storage key) while at the default
_LATER_FIELDS = {"value_settings": {}, "kind": "study"}


@dataclass
class StudySpec:
    name: str
    base: dict  # a full TrainConfig dict (resolved) that every run starts from
    factors: list  # [[name, [typed values...]], ...]; name is a TrainConfig field or "act"
    seeds: list = field(default_factory=lambda: [0])
    grid: bool = False  # every combination instead of one factor at a time
    preset: str | None = None  # e.g. "reference": its published numbers go beside ours
    reduced: dict = field(default_factory=dict)  # explicit shrink options, shown in the report
    # settings that come with a factor's value: {factor: {value text: {config field: value}}},
    # e.g. a comparison's per-model batch size and lr (``studies.compare``); a run's name is
    # then its factor values alone ("resnet18-s0"), not every setting that differs
    value_settings: dict = field(default_factory=dict)
    kind: str = "study"  # "compare": a comparison of models, with its own report

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for key, default in _LATER_FIELDS.items():  # absent when unused: older study.json stay identical
            if d[key] == default:
                del d[key]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "StudySpec":
        return cls(**{k: d[k] for k in (f.name for f in dataclasses.fields(cls)) if k in d})

    def identity(self) -> dict:
        """What must match for a rerun to continue this study (not where/how it prints)."""
        d = json.loads(json.dumps(self.to_dict()))  # normalize tuples/floats as stored
        d["base"] = {k: v for k, v in d["base"].items() if k not in _NOT_IDENTITY}
        return d


@dataclass
class PlannedRun:
    name: str  # folder name under runs/
    seed: int
    overrides: dict  # factor -> value relative to the base (empty for the base itself)
    cells: list  # [(factor, value)] table cells this run serves; grid: [("grid", overrides)]
    config: dict  # the full TrainConfig dict for train()


# ---------------------------------------------------------------- building a spec
def valid_factors() -> list[str]:
    from cifarlab.training import TrainConfig
    return [f for f in TrainConfig.field_names() if f not in _NOT_FACTORS] + ["act"]


def parse_vary(text: str, base: dict) -> tuple[str, list]:
    """``"lr=1e-4,3e-4"`` -> ("lr", [0.0001, 0.0003]), each value typed by its config field."""
    name, sep, values = text.partition("=")
    name = name.strip().replace("-", "_")
    if not sep or not values.strip():
        raise ConfigError(f"--vary {text!r} should look like NAME=v1,v2,... (e.g. lr=1e-4,1e-3)")
    if name not in valid_factors():
        raise ConfigError(f"unknown factor {name!r}; valid factors: {', '.join(valid_factors())}")
    typed = [typed_value(name, v.strip(), base) for v in values.split(",") if v.strip()]
    if not typed:  # "lr=,," would plan a study of no runs
        raise ConfigError(f"--vary {text!r} gives no values; list them as NAME=v1,v2,... (e.g. lr=1e-4,1e-3)")
    return name, typed


def typed_value(name: str, raw: Any, base: dict) -> Any:
    """``raw`` converted and checked as the config would (act: against the activation list)."""
    from cifarlab.training import TrainConfig
    if name == "act":
        from cifarlab.models import ACTIVATIONS
        if raw not in ACTIVATIONS:
            raise ConfigError(f"act={raw!r} is not one of: {', '.join(ACTIVATIONS)}")
        return raw
    cfg = TrainConfig.from_dict({k: v for k, v in base.items()})
    return getattr(cfg.override({name: raw}), name)


def build_spec(*, model: str | None = None, vary: Iterable[str] = (), base_file: str | None = None,
               sets: dict | None = None, seeds: int = 1, grid: bool = False, preset: str | None = None,
               train_subset: int | None = None, test_subset: int | None = None,
               epoch_scale: float | None = None, name: str | None = None,
               only: Iterable[str] = ()) -> StudySpec:
    """Base = preset (or defaults) < --base file < --model < --set < explicit shrink options.

    ``vary`` adds factors or replaces a preset's values; ``only`` keeps just the named factors.
    """
    from cifarlab.training import TrainConfig
    from cifarlab.studies.presets import get_preset
    p = get_preset(preset) if preset else None
    cfg = TrainConfig.from_dict(p["base"]) if p else TrainConfig()
    if base_file:
        cfg = TrainConfig.from_json(base_file, base=cfg)
    cfg.override({"model": model} if model else {}).override(dict(sets or {}))
    reduced = _shrink(cfg, train_subset, test_subset, epoch_scale)
    base = cfg.to_dict()
    factors = [[f, list(v)] for f, v in (p["factors"] if p else [])]
    for text in vary:
        fname, values = parse_vary(text, base)
        factors = [f for f in factors if f[0] != fname] + [[fname, values]]
    if only:
        unknown = set(only) - {f for f, _ in factors}
        if unknown:
            raise ConfigError(f"--only {', '.join(sorted(unknown))}: not a factor of this study "
                              f"({', '.join(f for f, _ in factors)})")
        factors = [f for f in factors if f[0] in set(only)]
    if not factors:
        raise ConfigError("a study needs at least one factor: --vary NAME=v1,v2 (or --preset reference)")
    if epoch_scale:
        factors = [[f, _scaled_epochs(v, epoch_scale) if f == "epochs" else v] for f, v in factors]
    if any(f == "act" for f, _ in factors):
        _explicit_act(base)
    if seeds < 1:
        raise ConfigError(f"--seeds {seeds} must be at least 1")
    settings = {f: v for f, v in (p["value_settings"] if p else {}).items() if f in {n for n, _ in factors}}
    return StudySpec(name=name or _default_name(base, preset, factors), base=base, factors=factors,
                     seeds=[base["seed"] + i for i in range(seeds)], grid=grid, preset=preset, reduced=reduced,
                     value_settings=settings)


def _shrink(cfg, train_subset, test_subset, epoch_scale) -> dict:
    reduced = {}
    if train_subset:
        cfg.override({"train_subset": train_subset})
        reduced["train_subset"] = train_subset
    if test_subset:
        cfg.override({"test_subset": test_subset})
        reduced["test_subset"] = test_subset
    if epoch_scale:
        if epoch_scale <= 0:
            raise ConfigError(f"--epoch-scale {epoch_scale} must be > 0")
        reduced["epoch_scale"] = epoch_scale
        cfg.override({"epochs": max(1, round(cfg.epochs * epoch_scale))})
    return reduced


def _explicit_act(base: dict) -> None:
    """Write the model's default activation into the base, so act=<default> is seen as the base."""
    from cifarlab.models import model_info
    default = model_info(base["model"]).default_kwargs.get("act")
    if default is not None:
        base["model_kwargs"] = {"act": default, **base["model_kwargs"]}


def _scaled_epochs(values: list, scale: float) -> list:
    out = []
    for v in values:
        e = max(1, round(v * scale))
        if e not in out:
            out.append(e)
    return out


def _default_name(base: dict, preset: str | None, factors: list) -> str:
    return f"{preset or base['model']}-" + "-".join(f for f, _ in factors)


# ---------------------------------------------------------------- planning
def plan(spec: StudySpec) -> list[PlannedRun]:
    """Every distinct (config, seed) the study needs, in a stable order, with the cells it serves."""
    points = _grid_points(spec) if spec.grid else _one_factor_points(spec)
    runs: dict[str, PlannedRun] = {}
    for seed in spec.seeds:
        for overrides, cell in points:
            config = _config_for(spec.base, overrides, seed, spec.value_settings)
            key = json.dumps({k: v for k, v in config.items() if k not in _NOT_IDENTITY}, sort_keys=True)
            if key not in runs:
                diff = _diff(spec.base, config)
                name = _value_name(overrides, seed) if spec.kind == "compare" else _run_name(overrides, diff, seed)
                runs[key] = PlannedRun(name, seed, diff, [], config)
            runs[key].cells.append(cell)
    return list(runs.values())


def _one_factor_points(spec: StudySpec) -> list[tuple[dict, tuple]]:
    return [({f: v}, (f, v)) for f, values in spec.factors for v in values]


def _grid_points(spec: StudySpec) -> list[tuple[dict, tuple]]:
    names = [f for f, _ in spec.factors]
    combos = itertools.product(*(values for _, values in spec.factors))
    return [(dict(zip(names, combo)), ("grid", tuple(combo))) for combo in combos]


def _config_for(base: dict, overrides: dict, seed: int, value_settings: dict | None = None) -> dict:
    """A run's config: the base with a cell's factor values, as if typed (a varied model or
    filter lr is the one trained: ``implied_by``), after the settings that come with those
    values (``StudySpec.value_settings``: data, so a planned epoch count there keeps the budget)."""
    from cifarlab.training import TrainConfig
    from cifarlab.training.recipes import implied_by
    extra: dict = {}
    for key, value in overrides.items():
        extra.update((value_settings or {}).get(key, {}).get(_fmt(value), {}))
    d = {**base, **implied_by(overrides), **extra, "model_kwargs": dict(base.get("model_kwargs") or {}),
         "seed": seed}
    for key, value in overrides.items():
        if key == "act":
            d["model_kwargs"]["act"] = value
        else:
            d[key] = value
    return TrainConfig.from_dict(d).to_dict()


def _diff(base: dict, config: dict) -> dict:
    """The factor settings in which ``config`` differs from the base (seed aside)."""
    out = {}
    for key, value in config.items():
        if key in ("seed", *_NOT_IDENTITY):
            continue
        if key == "model_kwargs":
            act = value.get("act")
            if act != (base.get("model_kwargs") or {}).get("act"):
                out["act"] = act
        elif base.get(key) != value:
            out[key] = value
    return out


def _run_name(overrides: dict, diff: dict, seed: int) -> str:
    """A run named by the user's factors alone ("lr=0.01-s0"): those whose value differs from
    the base's, or all of the point's where only settings they imply differ ("base-s0": none)."""
    named = {k: v for k, v in overrides.items() if k in diff} or (overrides if diff else {})
    body = ",".join(f"{k}={_fmt(v)}" for k, v in named.items()) or "base"
    return re.sub(r"[^A-Za-z0-9_.,=+-]", "_", body) + f"-s{seed}"


def _value_name(overrides: dict, seed: int) -> str:
    """A run named by its factor values alone: "resnet18-s0" (a comparison over models)."""
    body = ",".join(_fmt(v) for v in overrides.values()) or "base"
    return re.sub(r"[^A-Za-z0-9_.,=+-]", "_", body) + f"-s{seed}"


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


# ---------------------------------------------------------------- running
@dataclass
class StudyResult:
    out: Path
    spec: StudySpec
    runs: list  # PlannedRun, in plan order
    trained: list = field(default_factory=list)  # names trained (or resumed) by this call
    skipped: list = field(default_factory=list)  # names already finished before this call
    elsewhere: list = field(default_factory=list)  # names another worker holds or has done
    too_slow: list = field(default_factory=list)  # names whose time budget cannot hold their model here
    waiting: list = field(default_factory=list)  # names not done when this call ended (no report yet)


def open_study(out: str | Path, spec: StudySpec) -> Path:
    """Create ``out`` with study.json, or check that the one there is this same study."""
    from cifarlab.inference.runfolder import write_json
    out = Path(out)
    saved = out / "study.json"
    if saved.exists():
        old = load_spec(out)
        if old.identity() != spec.identity():
            changed = _changed_keys(old.identity(), spec.identity())
            raise ConfigError(f"{out} holds a different study ({', '.join(changed)} differ); "
                              f"use another --out, or rerun with the original command to continue it")
        return out
    out.mkdir(parents=True, exist_ok=True)
    write_json(saved, spec.to_dict())
    return out


def load_spec(out: str | Path) -> StudySpec:
    path = Path(out) / "study.json"
    try:
        return _retype(StudySpec.from_dict(json.loads(path.read_text())))
    except FileNotFoundError:
        raise ConfigError(f"{out} is not a study folder (no study.json)") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc}); fix or remove it") from None


def _retype(spec: StudySpec) -> StudySpec:
    """JSON keeps 1e-3 and 0.001 alike, but a tuple comes back a list: make cells comparable."""
    spec.factors = [[f, list(v)] for f, v in spec.factors]
    return spec


def _changed_keys(a: dict, b: dict) -> list[str]:
    keys = [k for k in sorted(set(a) | set(b)) if k != "base" and a.get(k) != b.get(k)]
    base_a, base_b = a.get("base", {}), b.get("base", {})
    keys += [f"base.{k}" for k in sorted(set(base_a) | set(base_b)) if base_a.get(k) != base_b.get(k)]
    return keys or ["the spec"]


def cell_value_key(value: Any) -> str:
    """A stable text key for a factor value (tables, reference look-up)."""
    return _fmt(value)

