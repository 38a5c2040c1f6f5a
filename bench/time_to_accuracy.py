"""Benchmark 2: wall time from the command's start to a test accuracy, and what MLflow tracking costs.

Runs ``python -m pipeline.train experiment=<recipe>`` exactly as a user would (default callbacks,
MLflow tracking, test of the best checkpoint at the end). The recipe tests only after its last
epoch, so the time reported is from the process's start to the end of that last epoch: an
upper bound on "the first epoch whose test accuracy is reached". The whole command (test,
figures and the model logged to MLflow included) is reported beside it.

The same runs measure tracking's cost (``bench.probes.MlflowClock``: the time spent importing
MLflow and inside its client and the pipeline's tracking calls), as a share of the run's wall
time without it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from bench import setup
from bench.harness import Measured, interleave, median, pipeline_train, run, spread
from bench.report import Result, Target, range_target

TIME_LIMIT_S = 60.0
MLFLOW_SHARE_LIMIT = 0.03


@dataclass
class Recipe:
    label: str
    experiment: str
    accuracy: float  # the test accuracy to reach
    time_limit_s: float | None  # the target, when the issue sets one
    overrides: tuple[str, ...] = ()  # this recipe's own overrides, after the benchmark's
    target: bool = True  # False: a row for comparison, with no target


RECIPES = [Recipe("MNIST", "mnist_fast", 0.990, TIME_LIMIT_S), Recipe("Fashion-MNIST", "fashion_fast", 0.91, None)]


def measure(
    repeats: int,
    log: Callable[[str], None] = print,
    overrides: tuple[str, ...] = (),
    recipes: list[Recipe] = RECIPES,
    device_label: str = "2-core CPU",
    mlflow_target: bool = True,
    time_mlflow: bool = True,
) -> Result:
    """``time_mlflow=False`` where MLflow is not installed (and the runs use ``logger=csv``)."""
    work = setup.WORK / "time_to_accuracy"
    work.mkdir(parents=True, exist_ok=True)
    probe, metrics_file = work / "probe.json", work / "metrics.json"
    result = Result(
        "time_to_accuracy",
        f"Time to accuracy ({device_label}, command start included)",
        [
            "recipe",
            "test accuracy",
            "epochs",
            "start → first step s",
            "training s",
            "start → last epoch end s",
            "whole command s",
            "MLflow share",
            "target",
        ],
    )

    def runner(recipe: Recipe) -> Callable[[], tuple[Measured, float]]:
        def one() -> tuple[Measured, float]:
            measured = run(
                pipeline_train(
                    f"experiment={recipe.experiment}",
                    *overrides,
                    *recipe.overrides,
                    f"metrics_file={metrics_file}",
                    probe=probe,
                    probe_options={"time_mlflow": time_mlflow},
                    work=work,
                ),
                env=setup.env(),
                probe=probe,
            )
            return measured, json.loads(metrics_file.read_text())["test/acc"]

        return one

    runs = interleave({r.label: runner(r) for r in recipes}, repeats, log)
    for recipe in recipes:
        measured = [m for m, _ in runs[recipe.label]]
        accuracies = [a for _, a in runs[recipe.label]]
        to_epoch = [m.probe["epochs"][-1]["end"] - m.start for m in measured]
        first_step = [m.since_start("first_step") for m in measured]
        walls = [m.wall_s for m in measured]
        mlflow = [m.probe["mlflow"]["import_s"] + m.probe["mlflow"]["calls_s"] for m in measured if "mlflow" in m.probe]
        shares = [s / (w - s) for s, w in zip(mlflow, walls, strict=False)]
        limit = f"≥ {recipe.accuracy:.1%}" + (f" in ≤ {recipe.time_limit_s:.0f} s" if recipe.time_limit_s else "")
        command = (f"experiment={recipe.experiment}", *overrides, *recipe.overrides)
        result.rows.append(
            {
                "recipe": f"{recipe.label} (`{' '.join(command)}`)",
                "test accuracy": f"{median(accuracies):.2%} (min {min(accuracies):.2%})",
                "epochs": len(measured[0].probe["epochs"]),
                "start → first step s": f"{median(first_step):.1f}",
                "training s": f"{median([t - f for t, f in zip(to_epoch, first_step, strict=False)]):.1f}",
                "start → last epoch end s": f"{median(to_epoch):.1f} ({spread(to_epoch)})",
                "whole command s": f"{median(walls):.1f}",
                "MLflow share": f"{median(shares):.1%} ({median(mlflow):.1f} s)" if shares else "not tracked",
                "target": limit,
            }
        )
        if recipe.target:
            result.targets.append(
                _accuracy_target(recipe, accuracies, to_epoch, f"{recipe.label} {limit} ({device_label})", limit)
            )
        result.raw[recipe.label] = {
            "accuracy": accuracies,
            "to_last_epoch_s": to_epoch,
            "wall_s": walls,
            "mlflow_s": mlflow,
        }
        if mlflow_target and shares and recipe is recipes[0]:
            calls = {
                "import mlflow": [m.probe["mlflow"]["import_s"] for m in measured],
                **_by_call(measured, "by_call_s"),
            }
            biggest = sorted(calls.items(), key=lambda item: -median(item[1]))[:4]
            background = _by_call(measured, "by_background_call_s")
            result.notes.append(
                f"Where MLflow's time goes ({recipe.experiment}, medians): "
                + ", ".join(f"{name} {median(values):.2f} s" for name, values in biggest)
                + "; in other threads, beside the training (not in the share): "
                + (", ".join(f"{name} {median(values):.2f} s" for name, values in background.items()) or "none")
                + "."
            )
            result.targets.append(
                range_target(  # in percent, as the table's column reads
                    f"MLflow tracking's share of a run's wall time ({recipe.experiment})",
                    [100 * share for share in shares],
                    100 * MLFLOW_SHARE_LIMIT,
                    unit="%",
                    digits=1,
                )
            )
    result.notes += [
        f"{repeats} runs per recipe, interleaved. Each recipe tests once, after its last epoch: the time to the "
        "end of that epoch bounds the time to the first epoch at the accuracy from above.",
        "MLflow share: seconds the main thread spends importing MLflow and inside MLflow's client and the "
        "pipeline's tracking calls (run creation, params, tags, metrics, figures, checkpoint and model "
        "logging), divided by the rest of the run's wall time.",
    ]
    return result


def _by_call(measured: list[Measured], key: str) -> dict[str, list[float]]:
    """The MLflow clock's seconds by call name (its ``key`` totals), one value per run that made the call."""
    calls: dict[str, list[float]] = {}
    for m in measured:
        for name, seconds in m.probe["mlflow"].get(key, {}).items():
            calls.setdefault(name, []).append(seconds)
    return calls


def _accuracy_target(recipe: Recipe, accuracies: list[float], to_epoch: list[float], name: str, limit: str) -> Target:
    """Every repeat at the accuracy within the time: PASS; none of them: MISS; some: UNSURE (with the range)."""
    holds = [
        accuracy >= recipe.accuracy and (recipe.time_limit_s is None or seconds <= recipe.time_limit_s)
        for accuracy, seconds in zip(accuracies, to_epoch, strict=True)
    ]
    measured = f"{median(accuracies):.2%} at {median(to_epoch):.1f} s ({spread(to_epoch)} s; min {min(accuracies):.2%})"
    return Target(name, measured, limit, all(holds), unsure=any(holds) and not all(holds))
