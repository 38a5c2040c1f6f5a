"""Benchmark: an MNIST Optuna search with and without pruning (what pruning saves, and what it costs).

``hparams_search=mnist_optuna`` (LeNet; learning rate, weight decay and batch size searched),
``TRIALS`` trials of up to ``EPOCHS`` epochs, run as ``WORKERS`` worker processes on one study
(one torch thread each, so the 2 cores are used and not oversubscribed), once with
``hydra/sweeper/pruner=none`` and once with ``PRUNER``. Each case starts from an empty study
and the same sampler seeds. Reported per case: the training epochs spent (the study's
intermediate values: one per validated epoch of every trial), the wall time from the first
worker's start to the last one's end, the best ``val/acc`` and the trials by state.

Target (issue 14): pruning spends at most half the epochs of the unpruned search and finds a
best ``val/acc`` within 0.3 points of it.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable

import optuna

from bench import setup
from bench.harness import ROOT, BenchError, bench_env, python
from bench.report import Result, Target

TRIALS = 12
WORKERS = 2
EPOCHS = 6
PRUNER = "median"  # the presets' pruner
EPOCH_SHARE_LIMIT = 0.5
ACCURACY_TOLERANCE = 0.003


def measure(repeats: int, log: Callable[[str], None] = print) -> Result:
    """One search per case (``repeats`` is not used: a search is already many trainings)."""
    result = Result(
        "search",
        f"An MNIST search of {TRIALS} trials (≤ {EPOCHS} epochs each, {WORKERS} workers): pruning against none",
        ["case", "epochs trained", "wall s", "best val/acc", "trials"],
    )
    cases = {}
    for label, pruner in (("no pruning", "none"), (f"{PRUNER} pruner", PRUNER)):
        log(f"search: {label}")
        cases[label] = _search(label.replace(" ", "_"), pruner)
        epochs, wall, best, states = cases[label]
        result.rows.append(
            {
                "case": f"{label} (`hydra/sweeper/pruner={pruner}`)",
                "epochs trained": epochs,
                "wall s": f"{wall:.0f}",
                "best val/acc": f"{best:.2%}",
                "trials": states,
            }
        )
    (plain_epochs, _, plain_best, _), (pruned_epochs, _, pruned_best, _) = cases.values()
    share = pruned_epochs / plain_epochs
    result.targets.append(
        Target(
            "search: epochs with pruning / without",
            f"{share:.2f}",
            f"≤ {EPOCH_SHARE_LIMIT}",
            share <= EPOCH_SHARE_LIMIT,
        )
    )
    result.targets.append(
        Target(
            "search: best val/acc with pruning vs without",
            f"{(pruned_best - plain_best) * 100:+.2f} points",
            f"≥ −{ACCURACY_TOLERANCE * 100:.1f} points",
            pruned_best >= plain_best - ACCURACY_TOLERANCE,
        )
    )
    result.notes.append(
        f"Command per worker: `python -m pipeline.train hparams_search=mnist_optuna "
        f"hydra.sweeper.n_trials={TRIALS // WORKERS} trainer.max_epochs={EPOCHS} threads=1 "
        "hydra/sweeper/pruner=<none|" + PRUNER + "> hydra.sweeper.sampler.seed=<worker> ...`, "
        f"{WORKERS} workers started together on one SQLite storage."
    )
    return result


def _search(name: str, pruner: str) -> tuple[int, float, float, str]:
    """(epochs trained, wall seconds, best val/acc, trials by state) of one search from an empty study."""
    work = setup.WORK / "search" / name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    storage = f"sqlite:///{work / 'optuna.db'}"
    command = [
        python(),
        "-m",
        "pipeline.train",
        "hparams_search=mnist_optuna",
        f"hydra.sweeper.storage={storage}",
        "hydra.sweeper.study_name=bench",
        f"hydra.sweeper.n_trials={TRIALS // WORKERS}",
        f"trainer.max_epochs={EPOCHS}",
        "threads=1",
        f"hydra/sweeper/pruner={pruner}",
        "logger=csv",
        "callbacks=no_figures",
        "callbacks.progress_bar.refresh_rate=0",
        f"paths.log_dir={work / 'logs'}",
    ]
    env = bench_env({"OMP_NUM_THREADS": "1"})
    start = time.time()
    workers = [
        subprocess.Popen(
            [*command, f"hydra.sweeper.sampler.seed={seed}"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in range(WORKERS)
    ]
    errors = [worker.communicate()[1] for worker in workers]
    wall = time.time() - start
    for worker, error in zip(workers, errors, strict=True):
        if worker.returncode != 0:
            raise BenchError(f"a search worker failed ({worker.returncode}):\n{error[-3000:]}")
    trials = optuna.load_study(study_name="bench", storage=storage).trials
    epochs = sum(len(trial.intermediate_values) for trial in trials)
    # complete trials only: Optuna gives a pruned trial its last intermediate value, of a model left unfinished
    best = max(trial.value for trial in trials if trial.state.name == "COMPLETE" and trial.value is not None)
    states = ", ".join(f"{sum(t.state.name == s for t in trials)} {s.lower()}" for s in ("COMPLETE", "PRUNED", "FAIL"))
    return epochs, wall, best, states
