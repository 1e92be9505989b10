"""A run sized to a wall-clock budget (``time_budget``): time the real steps, then choose the epochs.

A fixed epoch count holds a time promise on one machine only: the 2-core machines this
project runs on differ by 1.5-2x between kinds (float32-only, AVX512-BF16, AMX), and by
10-15% between runs of one kind. With ``time_budget`` > 0 a new run first times a few real
training steps (its own model, optimizer, loader, augmentation and bf16 setting) at every
resolution it will train at, and a final-test batch with its TTA views, then takes the
largest number of full-resolution epochs whose estimate ends inside the budget; the
lower-resolution stages (``resolutions``) stay as the config gives them. The clock starts
when ``train`` is called: data loading and this calibration (1-5 s) count against it.

The time left after the whole epochs goes to one more, cut short (``last_epoch_steps``):
a 32-px epoch of a 2-minute budget is a quarter of it on a slow machine, and a plan in whole
epochs left up to that much of the budget unused.

Single steps timed before training are an estimate: over a long run the machine's speed
drifts by more than the margin. So ``BudgetKeeper``
re-plans after every full-resolution epoch from the real epoch times, to the step, and the
lr schedule and the weight average stretch or shrink what is left of them
(``Schedule.retarget``). The last epoch has no epoch after it to re-plan at (a short budget's
whole plan may be that one epoch), so there the keeper watches the clock at every step: from
the real step time so far it sets the step the epoch ends at, so that its validation and the
final test end inside the budget, and the epoch ends at once if the clock has run out. An
earlier full-resolution epoch that cannot end in time becomes the last one, ended so too.

The plan is the run's ``Plan`` (training/plan.py: ``budget``), which the checkpoints record and
summary.json shows (``plan``, and ``time_budget``: the timings, the estimate, each re-plan and
the measured wall time); config.json keeps the request. A resumed run keeps the epochs
planned when it stopped.
"""

from __future__ import annotations

import copy
import math
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field

import torch

from cifarlab.training.callbacks import ORDER_DECIDE, Callback
from cifarlab.errors import ConfigError

SAFETY = 0.05  # plan to end this fraction of the budget early: run-to-run speed varies ~5-15%
# per resolution: the first steps at a new shape build oneDNN kernels; of the timed ones the
# lower quartile: single steps run 10-40% slow now and then (the disk writing back the venv or
# the data cache just written), while an epoch's mean stays near the quartile
# (twice as many at full resolution, where most of the time goes)
WARM_STEPS, TIMED_STEPS = 2, 8
EVAL_TIMED = 2  # test batches timed with their TTA views (each 2-6 forward passes): 1-6 s
# a model that would train fewer full-resolution epochs than this in its budget gives way to
# the config's ``budget_fallback``, a smaller model that fits more of them (the runs behind it:
# results/cpu_probes.csv)
MIN_FULL_EPOCHS = 3
# a cut last epoch shorter than this share of a whole one is left out: its validation,
# checkpoint and log cost what a whole epoch's do
MIN_PART = 0.1
# the last epoch's steps are re-timed from this many of its own (its first one not counted):
# fewer are noise; the in-epoch plan moves only when its end moves by IN_EPOCH_SLACK of an
# epoch's steps or more (or the clock has run out)
IN_EPOCH_TIMED, IN_EPOCH_SLACK = 4, 0.02
# the validation and test after the last step are assumed this much slower than timed at most
# (the cpu-2min runs of results/budget_keep.csv stepped 1.3x slower than their timing)
TAIL_SLOWDOWN = 1.5
# a plan of this many steps or fewer gives the Muon filters ``muon_lr_short`` (where the config
# sets one): the larger filter lr paid in short plans and not in longer ones (results/cpu_probes.csv)
SHORT_RUN_STEPS = 1000


@dataclass
class BudgetPlan:
    budget_s: float  # the wall-clock budget of the whole run
    epochs: int  # epochs planned: the resolution stages + the full-resolution ones
    stages: list  # [[side, epochs], ...] at low resolution, then [native side, epochs]
    step_s: dict  # side (px, as a string) -> seconds per training step, lower quartile of the timed steps
    steps_per_epoch: int
    test_s: float  # estimated final test (with its TTA views)
    val_s: float  # estimated validation pass per epoch (0 without a val split)
    spent_s: float  # seconds from train() to the end of calibration (data loading included)
    planned_s: float  # the estimate of the whole run's wall time
    fits: bool  # False: even the shortest run (one epoch cut to MIN_PART of its steps) overruns the budget
    replans: list = field(default_factory=list)  # BudgetKeeper's changes: after which epoch, to what
    model: str = ""  # the model planned for
    passed_over: list = field(default_factory=list)  # larger models that fit too few epochs here
    traded: list = field(default_factory=list)  # [[side, epochs], ...] given up for one more full one
    last_epoch_steps: int = 0  # the last epoch is cut to this many steps (0: a whole one)
    muon_lr: float = 0.0  # the filters' lr where the plan is short enough for ``muon_lr_short``; else 0

    @property
    def full_epochs(self) -> int:
        """Full-resolution epochs, a cut last one included."""
        return self.stages[-1][1]

    @property
    def untraded_full_epochs(self) -> int:
        """Whole full-resolution epochs before any trade: what decides a fallback to a smaller model."""
        return max(0, self.full_epochs - (1 if self.traded else 0) - (1 if self.last_epoch_steps else 0))

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        parts = ", ".join(f"{e} at {s} px" for s, e in self.stages)
        if self.last_epoch_steps:
            parts += f", the last cut to {self.last_epoch_steps} of {self.steps_per_epoch} steps"
        steps = " / ".join(f"{1000 * t:.0f}" for t in self.step_s.values())
        epochs = f"{self.epochs} epoch{'' if self.epochs == 1 else 's'}"
        text = (f"time budget {self.budget_s:.0f} s: {epochs} ({parts}), planned to end at "
                f"{self.planned_s:.0f} s ({self.spent_s:.1f} s spent before training; ms per step "
                f"{steps}; test {self.test_s:.1f} s)")
        if self.muon_lr:
            text += f"; Muon lr {self.muon_lr:g} for a run this short"
        if self.traded:
            given = " and ".join(f"{e} at {s} px" for s, e in self.traded)
            text += f"; {given} given up for one more at {self.stages[-1][0]} px"
        if not self.fits:
            text += (f"; the budget is too short for this model here: its shortest run needs about "
                     f"{self.planned_s:.0f} s")
        for other in self.passed_over:
            text += (f"; {other['model']} would train only {other['full_epochs']} at full resolution here, "
                     f"so {self.model} instead")
        return text


def plan_epochs(budget_s: float, spent_s: float, stages: list[tuple[int, int]], native: int,
                steps_per_epoch: int, step_s: dict[int, float], test_s: float, val_s: float = 0.0,
                safety: float = SAFETY) -> tuple[list[tuple[int, int]], int, float, bool]:
    """(stages, full-resolution epochs, estimated total seconds, fits): the most full-resolution
    epochs (at least one) whose estimate ends by ``budget_s * (1 - safety)`` after the
    low-resolution ``stages``. Where that is fewer than MIN_FULL_EPOCHS, the last low-resolution
    epochs give way to one more full-resolution epoch, once, if it then fits: a second 32-px
    epoch was worth more than the 24-px one it replaces (results/cpu_probes.csv, the trade)."""
    def epoch_s(side: int) -> float:
        return steps_per_epoch * step_s[side] + val_s

    staged = sum(e * epoch_s(side) for side, e in stages)
    fixed = spent_s + staged + test_s
    target = budget_s * (1 - safety)
    room = target - fixed
    full = max(1, math.floor(room / epoch_s(native))) if room > 0 else 1
    total = fixed + full * epoch_s(native)
    stages = [(side, e) for side, e in stages]
    if full < MIN_FULL_EPOCHS and total <= target:
        traded, freed = list(stages), 0.0
        while traded and total - freed + epoch_s(native) > target:
            side, e = traded.pop()
            freed += epoch_s(side)
            if e > 1:
                traded.append((side, e - 1))
        if total - freed + epoch_s(native) <= target:
            stages, full, total = traded, full + 1, total - freed + epoch_s(native)
    return stages, full, total, total <= budget_s


def check_budget(cfg, dist_active: bool) -> None:
    """The settings a time budget cannot plan for, as one ConfigError."""
    if cfg.compile:
        raise ConfigError("time_budget plans from eager step times and cannot include torch.compile's "
                          "warm-up; drop --compile or --time-budget")
    if dist_active:
        raise ConfigError("time_budget plans a single-process run; drop --nproc/torchrun or --time-budget")
    if cfg.early_stop:
        raise ConfigError("time_budget sets the number of epochs; early stopping would cut the schedule "
                          "short: drop --early-stop or --time-budget")


def plan_run(cfg, model: torch.nn.Module, loss_fn, train_loader, test_loader, val_loader,
             device: torch.device, amp: bool, started: float) -> BudgetPlan:
    """Time ``model``'s training steps (on a copy: the run's weights, optimizer state and random
    streams are untouched) and its test pass, and plan ``cfg.time_budget``."""
    from cifarlab.data.loader import parse_resolutions
    from cifarlab.training.evaluation import view_maker
    from cifarlab.training.optim import build_optimizer

    native = int(train_loader.images.shape[-1])
    stages = parse_resolutions(cfg.resolutions)
    sides = [s for s, _ in stages] + [native]
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        probe = copy.deepcopy(model)
        optimizer = build_optimizer(probe, cfg)
        for group in optimizer.param_groups:  # a tiny lr: the copy must not blow up in a few steps
            group["lr"] = 1e-6 * group.get("lr_scale", 1.0)
        step_s = {side: _step_seconds(probe, loss_fn, optimizer, train_loader, side, device, amp,
                                      TIMED_STEPS * (2 if side == native else 1))
                  for side in dict.fromkeys(sides)}
        views = view_maker(cfg.tta)
        n_views = len(views(torch.zeros(1, 3, 4, 4))) if views else 1
        eval_loader = test_loader or val_loader
        batch_s = _eval_seconds(probe, eval_loader, device, amp, cfg.amp_eval, views) if eval_loader else 0.0
    test_s = batch_s * (len(test_loader) if test_loader else 0)
    val_s = batch_s / n_views * (len(val_loader) if val_loader else 0)  # validation: one view
    spent = time.perf_counter() - started
    asked = stages
    stages, full, total, fits = plan_epochs(cfg.time_budget, spent, stages, native, len(train_loader), step_s,
                                            test_s, val_s)
    if not fits and stages:  # the low-resolution stages and one full epoch overrun: full resolution only,
        # where whole epochs fit so (the fallback below, one epoch cut short, left a third of a 5-min
        # budget unused on a float32 CPU)
        plain = plan_epochs(cfg.time_budget, spent, [], native, len(train_loader), step_s, test_s, val_s)
        if plain[3]:
            stages, full, total, fits = plain
    part = 0
    if fits:  # the time left after the whole epochs: one more, cut short
        part = part_steps(cfg.time_budget * (1 - SAFETY) - total - val_s, step_s[native], len(train_loader))
        if part:
            full, total = full + 1, total + part * step_s[native] + val_s
    else:  # not one whole epoch fits: no low-resolution stages, and the one epoch cut to the time left
        part = part_steps(cfg.time_budget * (1 - SAFETY) - spent - test_s - val_s, step_s[native],
                          len(train_loader))
        if part:
            stages, full, fits = [], 1, True
            total = spent + test_s + part * step_s[native] + val_s
    epochs = sum(e for _, e in stages) + full
    kept = [e for _, e in stages] + [0] * (len(asked) - len(stages))  # a trade only shortens the tail
    traded = [[side, e - k] for (side, e), k in zip(asked, kept) if e > k]
    return BudgetPlan(traded=traded, budget_s=cfg.time_budget, epochs=epochs,
                      stages=[[s, e] for s, e in stages] + [[native, full]],
                      step_s={str(s): round(t, 5) for s, t in step_s.items()}, steps_per_epoch=len(train_loader),
                      test_s=round(test_s, 2), val_s=round(val_s, 2), spent_s=round(spent, 2),
                      planned_s=round(total, 1), fits=fits, last_epoch_steps=part)


def estimate_seconds(cfg, model: torch.nn.Module, loss_fn, train_loader, test_loader, val_loader,
                     device: torch.device, amp: bool, started: float) -> float:
    """Wall seconds a run of ``cfg.epochs`` whole epochs will take from ``started``: its steps and
    test timed as ``plan_run`` times them (on a copy; the run is untouched), times its epochs."""
    from cifarlab.data.loader import parse_resolutions
    probe = copy.copy(cfg)
    probe.time_budget = 1e9  # plan_run only needs the timings
    plan = plan_run(probe, model, loss_fn, train_loader, test_loader, val_loader, device, amp, started)
    native = plan.stages[-1][0]
    stages = parse_resolutions(cfg.resolutions)
    full = max(0, cfg.epochs - sum(e for _, e in stages))
    epochs = [(side, e) for side, e in stages] + [(native, full)]
    total = plan.spent_s + plan.test_s + sum(
        e * (plan.steps_per_epoch * plan.step_s[str(side)] + plan.val_s) for side, e in epochs)
    return total  # spent_s: from ``started`` to the end of the timing, which the run pays too


def duration(seconds: float) -> str:
    """``45 s``, ``4 min 50 s``, ``1 h 12 min``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        m, s = divmod(seconds, 60)
        return f"{m} min {s} s" if s and m < 10 else f"{round(seconds / 60)} min"
    h, m = divmod(round(seconds / 60), 60)
    return f"{h} h {m} min" if m else f"{h} h"


def short_run_muon_lr(cfg, plan: BudgetPlan) -> float:
    """``cfg.muon_lr_short`` for a plan of SHORT_RUN_STEPS steps or fewer (the Muon filters'
    lr that run trains with, recorded in its plan); else 0."""
    from cifarlab.training.optim import planned_steps
    steps = planned_steps(plan.epochs, plan.steps_per_epoch, plan.last_epoch_steps)
    if cfg.optimizer == "muon" and cfg.muon_lr_short > 0 and steps <= SHORT_RUN_STEPS:
        return cfg.muon_lr_short
    return 0.0


def part_steps(room_s: float, step_s: float, steps_per_epoch: int) -> int:
    """Steps of a cut epoch that fit in ``room_s`` at ``step_s`` a step: fewer than a whole epoch,
    and 0 where they would be under MIN_PART of one."""
    steps = min(steps_per_epoch - 1, math.floor(room_s / step_s)) if room_s > 0 else 0
    return steps if steps >= max(1, math.ceil(MIN_PART * steps_per_epoch)) else 0


def _step_seconds(model, loss_fn, optimizer, loader, side: int, device: torch.device, amp: bool,
                  timed: int = TIMED_STEPS) -> float:
    """Seconds of one training step at ``side`` px (lower quartile of ``timed``), batch making and
    optimizer included: the loop's own step (``Learner.train_step``), without callbacks."""
    from cifarlab.training.loop import Learner
    step = Learner(model, loss_fn, optimizer, None, loader, None, 1, device, amp=amp).train_step
    saved, loader.size = loader.size, side
    model.train()
    times = []
    try:
        batches = _cycle(loader)
        for _ in range(WARM_STEPS + timed):
            t0 = time.perf_counter()
            float(step(*next(batches)))  # waits for the device; the loop's divergence guard reads it too
            times.append(time.perf_counter() - t0)
    finally:
        loader.size = saved
    return _lower_quartile(times[WARM_STEPS:])


def _lower_quartile(values: list[float]) -> float:
    return statistics.quantiles(values, n=4)[0] if len(values) > 1 else values[0]


@torch.no_grad()
def _eval_seconds(model, loader, device: torch.device, amp: bool, amp_eval: bool = False, views=None) -> float:
    """Seconds of the final test's work on one batch: its TTA ``views`` built and each passed
    forward, the logits averaged (``run_eval``, the test's own code), on a CPU float32 unless
    ``amp_eval``. The mean of EVAL_TIMED batches after one untimed forward pass.

    It timed single forward passes and multiplied by the views: with flip-translate's 6 each
    error counted 6 times, and building the shifted views costs more than a forward pass's
    share, so long runs ended past their aim. A batch with its views is 2-6 forward passes
    timed together."""
    from cifarlab.training.loop import run_eval
    batches = _cycle(loader)
    run_eval(model, [next(batches)], None, device, amp, amp_eval=amp_eval)  # one view: the kernels built
    times = []
    for _ in range(EVAL_TIMED):
        t0 = time.perf_counter()  # the batch's making counts: the test's loader makes each one too
        run_eval(model, [next(batches)], None, device, amp, views=views, amp_eval=amp_eval)
        times.append(time.perf_counter() - t0)
    return statistics.fmean(times)


def _cycle(loader):
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ConfigError("time_budget: a split the run uses gives no batch to time; check --train-subset")


class BudgetKeeper(Callback):
    """Re-plans a time budget's full-resolution epochs from their real wall times, to the step.

    After each full-resolution epoch (the last planned one excepted) it projects the end of the
    run from the mean wall time of the last two such epochs (checkpoint and logs included), the
    time spent so far and the planned final test. Where the steps that end by ``1 - SAFETY`` of
    the budget differ from the steps left by MIN_PART of an epoch or more, the steps left
    become those: fewer when the machine runs slower than planned, more when it runs faster.
    They fill whole epochs and one cut last epoch (``last_epoch_steps``; none under MIN_PART of
    an epoch, and never fewer steps than that in all), so the lr still comes down to zero
    (``Schedule.retarget`` keeps it continuous). Only a new run has one: its clock started at
    ``started`` (a resumed run keeps the epochs it was planned to).

    With whole epochs it cut only past ``1 - SAFETY/2``: cutting a whole epoch for a second or
    two cost more than it saved. To the step there is no such cost, and a run that drifted past
    its aim inside that band now ends at it (the wall times in results/cpu_frontier.csv).
    """

    order = ORDER_DECIDE  # after_epoch: before the checkpoint saves the epochs and the schedule

    def __init__(self, plan: BudgetPlan, run_plan, started: float, say: bool = True):
        self.plan, self.run_plan, self.started, self.say = plan, run_plan, started, say
        self.staged = sum(e for _, e in plan.stages[:-1])
        self.ends: list[float] = []  # perf_counter at the start of the fit and at each epoch's end

    def before_fit(self, learn) -> None:
        self.ends = [time.perf_counter()]
        self.first_end = 0.0  # perf_counter at the end of the current epoch's first step

    def after_batch(self, learn) -> None:
        """In a full-resolution epoch: where the clock says the run must end (the module's docstring).

        In the last epoch, the step it ends at follows the real step time. An earlier epoch
        that cannot end in time becomes the last one, ended by the clock too: the re-plan
        after it would come too late."""
        if learn.epoch < self.staged:
            return
        now, done = time.perf_counter(), learn.batch_idx + 1
        if done == 1:  # the first step of an epoch starts its loader: not a typical step
            self.first_end = now
            return
        plan, per_epoch = self.plan, len(learn.train_loader)
        planned_step = plan.step_s.get(str(plan.stages[-1][0])) or 0.0
        step_s = (now - self.first_end) / (done - 1)
        # what follows the last step (its validation and the test) runs as much slower than timed
        # as the last validation did, or where there was none, as the steps do; by TAIL_SLOWDOWN
        # at most: a step timing wrong for another reason says little of the test's time
        history = getattr(learn, "history", None)
        if history and plan.val_s > 0 and "epoch_time" in history[-1]:
            ratio = (history[-1]["epoch_time"] - history[-1]["train_time"]) / plan.val_s
        else:
            ratio = step_s / planned_step if planned_step else 1.0
        after = (plan.val_s + plan.test_s) * min(TAIL_SLOWDOWN, max(1.0, ratio))
        room = plan.budget_s * (1 - SAFETY) - (now - self.started) - after
        if room > 0 and done - 1 < IN_EPOCH_TIMED:
            return
        end = done if room <= 0 else min(per_epoch, done + math.floor(room / step_s))
        last = learn.epoch == learn.epochs - 1
        current = learn.steps_in_epoch(learn.epoch)
        if not last and end == per_epoch:  # this epoch ends in time: the re-plan after it sees to the rest
            return
        if last and (end == current or (end > done and abs(end - current) < max(2, IN_EPOCH_SLACK * per_epoch))):
            return
        was = _length(learn.epochs, learn.last_epoch_steps, per_epoch)
        self._set_length(learn, learn.epoch + 1, end)
        plan.planned_s = round(now - self.started + (end - done) * step_s + after, 1)
        entry = {"in_epoch": learn.epoch + 1, "at_step": done, "epochs": learn.epochs, "last_epoch_steps": end,
                 "was": current, "step_s": round(step_s, 4), "spent_s": round(now - self.started, 1)}
        first = not (plan.replans and plan.replans[-1].get("in_epoch") == learn.epoch + 1)
        if first:
            plan.replans.append(entry)
        else:  # one entry per epoch: the latest end, and how many times it moved
            entry["moves"] = plan.replans[-1].get("moves", 1) + 1
            plan.replans[-1] = entry
        self._publish(learn)
        if self.say and first:
            why = "the time is up" if end == done else f"a step takes {1000 * step_s:.0f} ms, planned {1000 * planned_step:.0f}"
            print(f"time budget: {was} -> {_length(learn.epochs, learn.last_epoch_steps, per_epoch)}, ended by "
                  f"the clock ({why}; now planned to end at {plan.planned_s:.0f} s of {plan.budget_s:.0f})",
                  file=sys.stderr)

    def after_epoch(self, learn) -> None:
        self.ends.append(time.perf_counter())
        if learn.epoch <= self.staged or learn.epoch >= learn.epochs or learn.stop:
            return
        walls = [b - a for a, b in zip(self.ends[:-1], self.ends[1:])][self.staged:]
        epoch_s = statistics.fmean(walls[-2:])
        per_epoch = len(learn.train_loader)
        step_s = epoch_s / per_epoch
        spent = self.ends[-1] - self.started
        left = learn.total_steps - learn.step
        fit = math.floor((self.plan.budget_s * (1 - SAFETY) - spent - self.plan.test_s) / step_s)
        least = max(1, math.ceil(MIN_PART * per_epoch))
        if abs(fit - left) < least:  # within a tenth of an epoch of the aim: keep the plan
            return
        new_left = max(least, fit)
        tail = new_left % per_epoch
        if tail and tail < least and new_left > tail:  # a cut epoch too short to pay: left out
            new_left -= tail
        if new_left != left:
            self._replan(learn, new_left, epoch_s, spent)

    def _set_length(self, learn, epochs: int, last_steps: int) -> None:
        """The run now ends after ``epochs`` epochs, the last of ``last_steps`` steps: in the
        learner's loop, its lr schedule (continuous from the next step) and the budget's plan."""
        per_epoch = len(learn.train_loader)
        learn.epochs, learn.last_epoch_steps = epochs, 0 if last_steps == per_epoch else last_steps
        learn.schedule.retarget(learn.total_steps, learn.step)
        plan = self.plan
        plan.epochs, plan.last_epoch_steps = learn.epochs, learn.last_epoch_steps
        plan.stages[-1][1] = learn.epochs - self.staged

    def _publish(self, learn) -> None:
        """The run's plan (what checkpoints and summary.json record) takes the budget's changes."""
        run_plan = self.run_plan
        run_plan.epochs, run_plan.last_epoch_steps = learn.epochs, learn.last_epoch_steps
        run_plan.budget = self.plan.to_dict()
        learn.meta["plan"] = run_plan.to_dict()

    def _replan(self, learn, new_left: int, epoch_s: float, spent: float) -> None:
        """The steps left become ``new_left``: in the learner's loop, its schedule and the run's plan."""
        before, per_epoch = learn.epochs, len(learn.train_loader)
        was = _length(learn.epochs, learn.last_epoch_steps, per_epoch)
        epochs_left = math.ceil(new_left / per_epoch)
        last = new_left - (epochs_left - 1) * per_epoch
        self._set_length(learn, learn.epoch + epochs_left, last)
        plan = self.plan
        plan.planned_s = round(spent + new_left * epoch_s / per_epoch + plan.test_s, 1)
        plan.replans.append({"after_epoch": learn.epoch, "epochs": learn.epochs, "was": before,
                             "last_epoch_steps": learn.last_epoch_steps,
                             "epoch_s": round(epoch_s, 2), "spent_s": round(spent, 1)})
        self._publish(learn)
        if self.say:
            print(f"time budget: {was} -> {_length(learn.epochs, learn.last_epoch_steps, per_epoch)} (a "
                  f"{learn.train_loader.images.shape[-1]}-px epoch takes {epoch_s:.1f} s here; {spent:.0f} s "
                  f"spent, now planned to end at {plan.planned_s:.0f} s of {plan.budget_s:.0f})", file=sys.stderr)


def _length(epochs: int, last_epoch_steps: int, steps_per_epoch: int) -> str:
    cut = f" (the last {last_epoch_steps} of {steps_per_epoch} steps)" if last_epoch_steps else ""
    return f"{epochs} epoch{'' if epochs == 1 else 's'}{cut}"
