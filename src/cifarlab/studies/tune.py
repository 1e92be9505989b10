"""Hyperparameter search with Optuna (optional extra: ``pip install 'cifarlab[tune]'``).

The objective is the best validation accuracy of a run (never the test set). A callback
reports validation accuracy after every epoch and stops the run when the MedianPruner
says so. Trials live in an Optuna storage: a local SQLite file by default, so several
worker processes (``workers=K``) or several machines (a shared PostgreSQL URL) cooperate on
one study. Each trial is an ordinary run folder under ``<out>/trials/``. Workers send a
heartbeat: a trial whose worker died is failed by the others and run again as a new trial.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cifarlab.training.callbacks import Callback
from cifarlab.studies.claims import HEARTBEAT_S
from cifarlab.errors import CifarlabError, ConfigError

# what is searched when --space is not given: the knobs of the one-factor study and a few more
DEFAULT_SPACE = ("lr=log:1e-4:1e-1,optimizer=sgd|adam|adamw,weight_decay=log:1e-6:1e-3,"
                 "batch_size=32|64|128|256,label_smoothing=0:0.2,act=relu|gelu|silu")


def _optuna():
    try:
        import optuna
    except ImportError:
        raise CifarlabError("tune needs optuna: pip install 'cifarlab[tune]'") from None
    return optuna


# ---------------------------------------------------------------- search space
@dataclass
class Param:
    name: str  # a TrainConfig field or "act"
    kind: str  # "log" | "uniform" | "int" | "choice"
    low: float | None = None
    high: float | None = None
    choices: list | None = None

    def suggest(self, trial) -> Any:
        if self.kind == "choice":
            return trial.suggest_categorical(self.name, self.choices)
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high))
        return trial.suggest_float(self.name, self.low, self.high, log=self.kind == "log")


def parse_space(text: str, base: dict) -> list[Param]:
    """``"lr=log:1e-4:1e-1,optimizer=sgd|adam,label_smoothing=0:0.2"`` -> Params.

    ``a|b|c`` is a choice (typed like the config field), ``lo:hi`` a uniform range (int for
    int fields), ``log:lo:hi`` log-uniform.
    """
    from cifarlab.studies.study import typed_value, valid_factors
    params = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, sep, body = item.partition("=")
        if not sep or name not in valid_factors():
            raise ConfigError(f"--space item {item!r}: expected NAME=a|b, NAME=lo:hi or NAME=log:lo:hi with NAME "
                              f"one of: {', '.join(valid_factors())}")
        if "|" in body or ":" not in body:
            params.append(Param(name, "choice", choices=[typed_value(name, v, base) for v in body.split("|")]))
            continue
        parts = body.split(":")
        log = parts[0] == "log"
        lo, hi = (typed_value(name, p, base) for p in parts[1 if log else 0:])
        is_int = isinstance(lo, int) and not isinstance(lo, bool)
        if not lo < hi or (log and lo <= 0):
            raise ConfigError(f"--space {item!r}: need low < high (and low > 0 for log)")
        params.append(Param(name, "log" if log else "int" if is_int else "uniform", lo, hi))
    return params


def trial_config(base: dict, params: list[Param], trial) -> dict:
    """The base config with the trial's suggestions applied (act goes into model_kwargs)."""
    from cifarlab.training import TrainConfig
    d = {**base, "model_kwargs": dict(base.get("model_kwargs") or {})}
    for p in params:
        value = p.suggest(trial)
        if p.name == "act":
            d["model_kwargs"]["act"] = value
        else:
            d[p.name] = value
    return TrainConfig.from_dict(d).to_dict()


# ---------------------------------------------------------------- pruning callback
class OptunaPruning(Callback):
    """Reports val_acc each epoch; when the pruner says so, ends the fit after this epoch."""

    order = 35  # after the schedule and guards, before checkpointing records the epoch

    def __init__(self, trial):
        self.trial, self.best, self.pruned = trial, -math.inf, False

    def after_epoch(self, learn) -> None:
        value = learn.metrics.get("val_acc")
        if value is None:
            return
        self.best = max(self.best, value)
        self.trial.report(value, learn.epoch)
        if learn.epoch >= learn.epochs:  # nothing left to save: the trial is complete, not pruned
            return
        if self.trial.should_prune():
            self.pruned, learn.stop = True, True
            learn.stop_reason = f"pruned by optuna after epoch {learn.epoch} (val_acc {value:.4f})"


# ---------------------------------------------------------------- running
def storage_for(url: str, heartbeat: int | None = None):
    """An Optuna storage. SQLite gets a long lock timeout so concurrent workers wait, not fail.

    ``heartbeat`` (seconds, workers only): a trial whose worker died (SIGKILL, lost machine)
    is marked FAIL by the next worker that asks for a trial, and a copy of it is queued
    (same parameters) for whoever comes next.
    """
    optuna = _optuna()
    import sqlalchemy.exc
    kwargs = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    extra = _heartbeat_args(optuna, heartbeat)
    try:
        with _schema_lock(url):
            return optuna.storages.RDBStorage(_sqlalchemy_url(url), engine_kwargs=kwargs, **extra)
    except sqlalchemy.exc.OperationalError as exc:
        from cifarlab.sqldb import redact
        first = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
        raise CifarlabError(f"cannot open the Optuna storage {redact(url)} ({first}); check the URL "
                            f"and that the database server runs") from None


def _schema_lock(url: str):
    """Optuna creates its tables without a lock: PostgreSQL workers starting together collide."""
    from cifarlab import sqldb
    if not sqldb.is_postgres(url):
        return contextlib.nullcontext()
    return sqldb.Database(url).lock("cifarlab-optuna-schema")


def _sqlalchemy_url(url: str) -> str:
    """postgresql:// means psycopg 3 here (SQLAlchemy alone would look for psycopg2)."""
    from cifarlab import sqldb
    if not sqldb.is_postgres(url):
        return url
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise CifarlabError("a postgresql:// storage needs psycopg: pip install 'cifarlab[postgres]'") from None
    return "postgresql+psycopg://" + url.split("://", 1)[1]


def _heartbeat_args(optuna, heartbeat: int | None) -> dict:
    if not heartbeat:
        return {}
    import warnings
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    storages = optuna.storages
    if hasattr(storages, "RetryHeartbeatStaleTrialCallback"):  # optuna >= 4.9
        retry = {"heartbeat_stale_trial_callback": storages.RetryHeartbeatStaleTrialCallback(max_retry=2)}
    else:
        retry = {"failed_trial_callback": storages.RetryFailedTrialCallback(max_retry=2)}
    return {"heartbeat_interval": int(heartbeat), "grace_period": 3 * int(heartbeat), **retry}


def _pruner(optuna):
    return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)


def create(storage: str, study_name: str):
    optuna = _optuna()
    return optuna.create_study(storage=storage_for(storage), study_name=study_name, direction="maximize",
                               pruner=_pruner(optuna), load_if_exists=True)


def run_worker(storage: str, study_name: str, n_trials: int, base: dict, space: str, out: str,
               data=None, seed: int = 0, heartbeat: int = HEARTBEAT_S) -> None:
    """One worker: ``n_trials`` trials of the shared study (safe to run in many processes)."""
    optuna = _optuna()
    from cifarlab.training import record
    from cifarlab.training import train
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    params = parse_space(space, base)
    if data is None:  # one copy per worker, not one load per trial
        from cifarlab.training import TrainConfig, data_for
        data = data_for(TrainConfig.from_dict(base), progress=False)
    study = optuna.load_study(study_name=study_name, storage=storage_for(storage, heartbeat),
                              sampler=optuna.samplers.TPESampler(seed=seed), pruner=_pruner(optuna))

    def objective(trial) -> float:
        config = {**trial_config(base, params, trial), "runs_dir": str(Path(out) / "trials"),
                  "name": f"trial-{trial.number:04d}"}
        pruning = OptunaPruning(trial)
        result = train(config, callbacks=[pruning, *record.recorder(f"tune:{study_name}")], data=data)
        trial.set_user_attr("run_dir", str(result.run_dir))
        if pruning.pruned:
            raise optuna.TrialPruned()
        if pruning.best == -math.inf:
            raise ConfigError("tune needs a validation split (val > 0): its objective is validation accuracy")
        return pruning.best

    study.optimize(objective, n_trials=n_trials)


def tune(base: dict, trials: int, *, out: str | Path, storage: str | None = None,
         study_name: str | None = None, workers: int = 1, space: str = DEFAULT_SPACE,
         data=None, seed: int = 0, heartbeat: int | None = None) -> dict:
    """``trials`` trials split across ``workers`` local processes; returns the study summary.

    Several machines share one search by each running this with the same PostgreSQL
    ``storage`` and ``study_name``: Optuna hands every trial number to exactly one worker.

    Each worker runs a fixed share (trials // workers, the remainder to the first ones), so
    the total is exact however fast each worker is.
    """
    heartbeat = HEARTBEAT_S if heartbeat is None else heartbeat
    if trials < 1 or workers < 1 or heartbeat < 1:
        raise ConfigError(f"--trials {trials}, --workers {workers} and --heartbeat {heartbeat} must be at least 1")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    storage = storage or f"sqlite:///{(out / 'optuna.db').resolve()}"
    study_name = study_name or f"{base['model']}-tune"
    parse_space(space, base)  # bad input fails here, not inside K workers
    create(storage, study_name)
    shares = [trials // workers + (i < trials % workers) for i in range(workers)]
    jobs = [(storage, study_name, n, base, space, str(out), data, seed + i, heartbeat)
            for i, n in enumerate(shares) if n]
    if len(jobs) == 1:
        run_worker(*jobs[0])
    else:
        _spawn(jobs)
    return summarize(storage, study_name, out, heartbeat)


def _spawn(jobs: list[tuple]) -> None:
    import multiprocessing as mp
    ctx = mp.get_context("spawn")  # a fresh interpreter per worker: no forked torch threads
    procs = [ctx.Process(target=run_worker, args=job) for job in jobs]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    failed = [i for i, p in enumerate(procs) if p.exitcode != 0]
    if failed:
        raise CifarlabError(f"tune workers {failed} exited with an error (see their output above); "
                            f"rerun the same command to add the missing trials")


def summarize(storage: str, study_name: str, out: str | Path | None = None, heartbeat: int = HEARTBEAT_S) -> dict:
    """Trial counts by state, the best trial, and (when ``out``) best.json written there.

    Trials of dead workers (no heartbeat) are marked FAIL first and their retries queued.
    """
    optuna = _optuna()
    study = optuna.load_study(study_name=study_name, storage=storage_for(storage, heartbeat))
    optuna.storages.fail_stale_trials(study)
    trials = study.get_trials(deepcopy=False)
    states: dict[str, int] = {}
    for t in trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    done = [t for t in trials if t.state.name == "COMPLETE"]
    best = max(done, key=lambda t: t.value) if done else None
    summary = {"study": study_name, "storage": storage, "trials": len(trials), "states": states,
               "best": None if best is None else {"number": best.number, "val_acc": best.value,
                                                  "params": best.params,
                                                  "run_dir": best.user_attrs.get("run_dir")}}
    if out is not None:
        from cifarlab.inference.runfolder import write_json
        write_json(Path(out) / "best.json", summary)
    return summary
