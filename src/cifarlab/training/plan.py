"""What a run does, beside what was asked for.

A ``TrainConfig`` is the request: what the user (flags, recipe, file) asked for. It does not
change once the run starts, and it is what ``config.json`` holds. A ``Plan`` is computed from
the config and the machine before the first step: the model actually trained (a time budget
may fall back to a smaller one), the epochs and the steps of a cut last one, the
low-resolution stages kept, the Muon filters' lr of a short run, and the time budget's
timings and re-plans (``budget``). The run is built from ``plan.apply(config)``; the budget
keeper changes the plan and nothing else. Checkpoints hold both (``config``, ``plan``),
``summary.json`` the plan beside the request, and a resume continues the saved plan.

Without a time budget the plan is the config's own values (``Plan.of``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from cifarlab.training.config import TrainConfig


@dataclass
class Plan:
    model: str  # the model trained
    epochs: int  # epochs in all, low-resolution stages included
    last_epoch_steps: int = 0  # the last epoch stops after this many steps (0: a whole one)
    resolutions: str = ""  # the low-resolution stages trained before the native size ("16:2,24:2")
    muon_lr: float = 0.0  # the Muon filters' lr trained
    budget: dict | None = field(default=None)  # the time budget's plan (training.budget.BudgetPlan), or None

    @classmethod
    def of(cls, cfg: TrainConfig) -> "Plan":
        """The plan of a run without a time budget: the config's own values."""
        return cls(model=cfg.model, epochs=cfg.epochs, last_epoch_steps=cfg.last_epoch_steps,
                   resolutions=cfg.resolutions, muon_lr=cfg.muon_lr)

    @classmethod
    def from_dict(cls, d: dict) -> "Plan":
        return cls(**{k: d[k] for k in ("model", "epochs", "last_epoch_steps", "resolutions", "muon_lr", "budget")
                      if k in d})

    @classmethod
    def saved(cls, meta: dict, cfg: TrainConfig) -> "Plan":
        """The plan a checkpoint (or a summary) records; one written before plans were recorded
        apart had its planned values in its config, which is then that plan."""
        return cls.from_dict(meta["plan"]) if meta.get("plan") else cls.of(cfg)

    def values(self) -> dict:
        """The config fields the plan decides."""
        return {"model": self.model, "epochs": self.epochs, "last_epoch_steps": self.last_epoch_steps,
                "resolutions": self.resolutions, "muon_lr": self.muon_lr}

    def apply(self, cfg: TrainConfig) -> TrainConfig:
        """A new config to build the run from: the request with the planned values; ``cfg`` is untouched."""
        return TrainConfig.from_dict(self.values(), base=cfg)

    def to_dict(self) -> dict:
        return asdict(self)


def planned_config(meta: dict) -> dict:
    """A learner's or checkpoint's config with its plan's values: what the run trains."""
    config = dict(meta["config"])
    if meta.get("plan"):
        config.update(Plan.from_dict(meta["plan"]).values())
    return config
