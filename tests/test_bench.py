"""The benchmark suite's own machinery (bench/): what ``make bench`` relies on to be right."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import torch

from bench import harness, report
from bench.report import Result, Target


def test_interleave_rotates_the_order_of_cases_each_repeat():
    calls: list[str] = []
    cases = {name: (lambda name=name: calls.append(name) or len(calls)) for name in ("a", "b", "c")}
    results = harness.interleave(cases, repeats=3, log=lambda _: None)
    assert calls == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert results == {"a": [1, 6, 8], "b": [2, 4, 9], "c": [3, 5, 7]}


def test_run_measures_a_process_and_reports_a_failure_with_its_output(tmp_path):
    probe = tmp_path / "probe.json"
    measured = harness.run([sys.executable, "-c", f"open({str(probe)!r}, 'w').write('{{\"x\": 1}}')"], probe=probe)
    assert measured.probe == {"x": 1} and measured.wall_s > 0 and measured.peak_rss_mib > 1
    with pytest.raises(harness.BenchError, match=r"(?s)exit 3 after .*boom"):
        harness.run([sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"])


def test_describe_a_pair_of_results():
    measured = harness.Measured(start=0.0, wall_s=1.5, peak_rss_mib=100.0)
    assert harness.describe((measured, 0.991)) == "1.50 s wall, 100 MiB, 0.991"


def test_results_go_to_json_markdown_and_between_the_readme_markers(tmp_path):
    result = Result(
        "x",
        "X",
        ["case", "ratio"],
        rows=[{"case": "tiny", "ratio": "1.01"}],
        targets=[Target("ratio", "1.01", "≤ 1.05", True), Target("gpu", "not run", "≥ 99%", None)],
    )
    markdown = report.write([result], tmp_path, "make bench", "2026-11-26 00:00 UTC", 60.0)
    assert "| ratio | 1.01 | ≤ 1.05 | PASS |" in markdown and "| gpu | not run | ≥ 99% | SKIP |" in markdown
    assert json.loads((tmp_path / "results.json").read_text())["results"][0]["rows"] == [
        {"case": "tiny", "ratio": "1.01"}
    ]
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n{report.README_BEGIN}\nold figures\n{report.README_END}\nafter\n")
    assert report.update_readme(readme, markdown)
    text = readme.read_text()
    assert "old figures" not in text and "| tiny | 1.01 |" in text and text.endswith(f"{report.README_END}\nafter\n")
    readme.write_text("# no markers\n")
    assert not report.update_readme(readme, markdown) and readme.read_text() == "# no markers\n"


def test_plain_loop_trains_the_same_network_and_records_each_epoch(processed, tmp_path):
    from bench import plain_loop

    out = tmp_path / "plain.json"
    plain_loop.main(
        [
            "--processed-dir",
            str(processed / "mnist"),
            "--net",
            "tiny_cnn",
            "--batch-size",
            "16",
            "--epochs",
            "2",
            "--lr",
            "0.01",
            "--out",
            str(out),
        ]
    )
    epochs = json.loads(out.read_text())["epochs"]
    assert len(epochs) == 2 and all(e["end"] > e["start"] and e["cpu_end"] > e["cpu_start"] for e in epochs)
    assert 0.0 <= epochs[-1]["val_acc"] <= 1.0
    measured = harness.Measured(start=0.0, wall_s=1.0, peak_rss_mib=1.0, probe={"epochs": epochs})
    assert measured.epoch_cpu_seconds() == [e["cpu_end"] - e["cpu_start"] for e in epochs]


def test_bare_lightning_trains_the_plain_loops_setup_and_times_epochs_like_the_pipeline(processed, tmp_path):
    from bench import bare_lightning, plain_loop

    args = ["--processed-dir", str(processed / "mnist"), "--net", "tiny_cnn", "--batch-size", "16", "--lr", "0.01"]
    bare_out, plain_out = tmp_path / "bare.json", tmp_path / "plain.json"
    bare_lightning.main([*args, "--epochs", "2", "--steps-per-epoch", "3", "--out", str(bare_out)])
    record = json.loads(bare_out.read_text())
    epochs = record["epochs"]
    assert len(epochs) == 2 and all(e["start"] < e["train_end"] < e["end"] for e in epochs)
    assert all(e["cpu_end"] > e["cpu_start"] for e in epochs)
    # The same seed, builder and optimizer as the plain loop: the same starting weights.
    setup = plain_loop.prepare(plain_loop.arguments("").parse_args([*args, "--out", str(plain_out)]))
    again = plain_loop.prepare(plain_loop.arguments("").parse_args([*args, "--out", str(plain_out)]))
    first = next(iter(setup.net.state_dict().values()))
    assert torch.equal(first, next(iter(again.net.state_dict().values())))
    sampler = bare_lightning.IndexBatches(10, 4, shuffle=True)
    batches = list(sampler)
    assert len(sampler) == 3 and [len(b) for b in batches] == [4, 4, 2]
    assert sorted(torch.cat(batches).tolist()) == list(range(10))


def test_bare_lightning_can_train_the_pipelines_own_module_on_the_same_setup(processed, tmp_path):
    """``--module pipeline`` (bench.ablate --floors): the pipeline's classifier around the baseline's net."""
    from bench import bare_lightning, plain_loop

    args = ["--processed-dir", str(processed / "mnist"), "--net", "tiny_cnn", "--batch-size", "16", "--lr", "0.01"]
    out = tmp_path / "module.json"
    bare_lightning.main([*args, "--epochs", "2", "--steps-per-epoch", "3", "--module", "pipeline", "--out", str(out)])
    assert len(json.loads(out.read_text())["epochs"]) == 2
    setup = plain_loop.prepare(plain_loop.arguments("").parse_args([*args, "--out", str(out)]))
    module = bare_lightning.pipeline_module(setup, processed / "mnist")
    assert module.net is setup.net and module.num_classes == 10
    binary = ["--processed-dir", str(processed / "spirals"), "--net", "mlp", "--module", "pipeline"]
    with pytest.raises(SystemExit, match="needs 3 or more classes"):
        bare_lightning.main([*binary, "--out", str(out)])


def test_the_bench_runner_refuses_a_zero_repeat_count(capsys):
    from bench.__main__ import main

    with pytest.raises(SystemExit):
        main(["--repeats", "0"])
    assert "--repeats must be at least 1, got 0" in capsys.readouterr().err


def test_the_overhead_ratios_get_five_repeats_and_only_the_default_suite_writes_the_readme(monkeypatch, tmp_path):
    import bench.__main__ as runner

    asked: dict[str, int] = {}

    def benchmark(name: str):
        def measure(repeats: int, log) -> Result:
            asked[name] = repeats
            return Result(name, name, ["x"])

        return measure

    monkeypatch.setattr(runner, "BENCHMARKS", {name: benchmark(name) for name in ("overhead", "scale")})
    monkeypatch.setattr(runner, "DEFAULT", ["overhead", "scale"])
    monkeypatch.setattr(runner, "ROOT", tmp_path)  # the README the runner rewrites
    readme = tmp_path / "README.md"
    blank = f"intro\n{report.README_BEGIN}\nold figures\n{report.README_END}\n"
    out = ["--no-setup", "--out", str(tmp_path / "results")]

    readme.write_text(blank)
    assert runner.main([*out, "--repeats", "2"]) == 0
    assert asked == {"overhead": 2, "scale": 2}
    assert "`python -m bench --no-setup" in (tmp_path / "results" / "results.md").read_text()
    assert readme.read_text() == blank  # fewer repeats than the suite's own: not the README's figures

    assert runner.main(out) == 0
    assert asked == {"overhead": 5, "scale": 3}
    # --no-setup and --out change where the data and results live, not what is measured: still `make bench`
    assert "Measured by `make bench`" in readme.read_text() and "old figures" not in readme.read_text()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/<pid>/status")
def test_peak_memory_is_the_childs_own_not_inherited_from_this_process():
    import numpy as np

    held = np.ones(300 << 20 >> 3)  # 300 MiB here: a child's ru_maxrss would report at least this much
    measured = harness.run([sys.executable, "-c", "import time, numpy; a = numpy.ones(50 << 20 >> 3); time.sleep(0.3)"])
    assert 50 < measured.peak_rss_mib < 200 and held[0] == 1.0


@pytest.mark.parametrize(
    ("values", "verdict"),
    [([1.01, 1.03, 1.04], "PASS"), ([1.06, 1.2, 1.1], "MISS"), ([1.02, 1.07, 1.04], "UNSURE"), ([1.05], "PASS")],
)
def test_a_verdict_needs_every_repeat_on_one_side_of_the_limit(values, verdict):
    target = report.range_target("ratio", values, 1.05)
    assert target.verdict == verdict
    assert target.measured == f"{sorted(values)[len(values) // 2]:.3f} ({min(values):.3f}–{max(values):.3f})"
    assert report.range_target("accuracy", [0.991, 0.989], 0.99, at_most=False).verdict == "UNSURE"
    assert report.range_target("accuracy", [0.991, 0.993], 0.99, at_most=False).limit == "≥ 0.99"
    share = report.range_target("share", [10.34, 9.87, 10.8], 3.0, unit="%", digits=1)
    assert (share.measured, share.limit, share.verdict) == ("10.3% (9.9–10.8)", "≤ 3%", "MISS")


def test_the_overhead_ratio_pairs_repeats_and_is_judged_on_the_steadier_clock():
    from bench import overhead

    def measured(wall: float, cpu: float) -> harness.Measured:
        epoch = {"start": 0.0, "end": wall, "cpu_start": 0.0, "cpu_end": cpu}
        return harness.Measured(start=0.0, wall_s=wall, peak_rss_mib=1.0, probe={"epochs": [epoch, epoch]})

    # the second repeat met a busy machine: wall times stretched on one side only, CPU times did not
    runs = {
        "plain": [measured(1.0, 2.0), measured(1.0, 2.0)],
        "pipeline": [measured(1.1, 2.2), measured(1.6, 2.3)],
        "bare": [measured(1.05, 2.1), measured(1.2, 2.0)],
    }
    ratios = {clock: overhead.paired_ratios(runs, clock) for clock in overhead.CLOCKS}
    assert ratios["wall"] == pytest.approx([1.1, 1.6]) and ratios["cpu"] == pytest.approx([1.1, 1.15])
    assert overhead.steadier(ratios) == "cpu"
    assert overhead.paired_ratios(runs, "cpu", "bare") == pytest.approx([1.05, 1.0])


def test_the_mlflow_clock_counts_the_main_threads_outermost_calls_once_and_others_apart(tmp_path):
    # In a child process: the clock patches MlflowClient's methods for the whole process.
    script = f"""
import json
from bench.probes import MlflowClock
clock = MlflowClock()
from mlflow import MlflowClient
client = MlflowClient("sqlite:///{tmp_path / "store.db"}")
client.create_experiment("e")
import threading
worker = threading.Thread(target=client.search_experiments)  # the system-metrics monitor's: beside, not in
worker.start()
worker.join()
print(json.dumps(clock.totals))
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, env=harness.bench_env()
    )
    totals = json.loads(out.stdout.strip().splitlines()[-1])
    assert totals["import_s"] > 0 and set(totals["by_call_s"]) == {"open the store", "create_experiment"}
    assert totals["calls"] == 2  # the constructor's and create_experiment's inner client calls count once each
    assert totals["calls_s"] == pytest.approx(sum(totals["by_call_s"].values()))
    assert set(totals["by_background_call_s"]) == {"search_experiments"} and totals["background_s"] > 0


def test_the_scale_summary_pairs_repeats_and_writes_its_notes():
    from bench import scale

    def measured(epoch: float, train: float, rss: float) -> harness.Measured:
        probe = {"epochs": [{"start": 0.0, "train_end": train, "end": epoch}]}
        return harness.Measured(start=0.0, wall_s=epoch + 5, peak_rss_mib=rss, probe=probe)

    rows = {1: 1000, 4: 4000, 16: 16000}
    mapped = {
        "1×": [measured(1.0, 0.8, 100), measured(1.2, 0.9, 100)],
        "4×": [measured(4.0, 3.6, 101), measured(4.4, 4.0, 102)],
        "16×": [measured(16.0, 15.2, 103), measured(17.0, 16.0, 104)],
    }
    in_memory = {"1×": [measured(0.9, 0.7, 110)], "16×": [measured(12.0, 11.2, 300)]}
    result = scale.summarise(mapped, in_memory, rows, repeats=2)
    assert [t.verdict for t in result.targets] == ["PASS", "PASS"]
    # time per sample 16× / 4×, per repeat: (15.2/16000)/(3.6/4000) and (16/16000)/(4/4000)
    assert result.targets[1].measured.startswith("1.028 (1.000–1.056)")
    assert "850.00 µs against 975.00 µs at 16×" in " ".join(result.notes)  # medians of (0.8, 0.9)/1000 s
    assert "in memory, 16× against 1×: 1.00×, one run of each" in " ".join(result.notes)  # 11.2/16000 vs 0.7/1000
    assert len(result.rows) == 5 and result.rows[-1]["training rows"] == "16,000"


def test_the_callback_cost_bench_runs_each_list_and_keeps_a_table_classifiers_figures(tmp_path):
    from bench.callback_cost import configured_callbacks, kept_for_a_table_classifier, measure

    kept = kept_for_a_table_classifier(configured_callbacks(str(tmp_path))())
    names = [type(c).__name__ for c in kept]
    assert {"LossCurves", "ConfusionMatrix", "ModelCheckpoint", "TQDMProgressBar"} <= set(names)
    assert not {"DecisionBoundary", "FittedCurve", "MisclassifiedExamples", "GANProgress"} & set(names)
    times = measure(repeats=1, steps=3)
    assert list(times) == ["no callbacks", "configured", "kept for a table classifier"]
    assert all(value > 0 for value in times.values())


def test_each_side_of_the_callback_cost_bench_fits_its_own_callbacks(tmp_path, monkeypatch):
    import bench.callback_cost as callback_cost

    configured = callback_cost.configured_callbacks(str(tmp_path))()
    kept = [type(c).__name__ for c in callback_cost.kept_for_a_table_classifier(configured)]
    fitted = []  # (callbacks' class names, logger) of each fit, in the order measured

    def record(callbacks, steps, work, logger=True):
        fitted.append(([type(c).__name__ for c in callbacks], logger))
        return 1.0

    monkeypatch.setattr(callback_cost, "cpu_us_per_step", record)
    sides = list(callback_cost.measure(repeats=1, steps=3, each=True))
    assert sides[:4] == ["no callbacks", "configured", "kept for a table classifier", "CSV logger only"]
    assert fitted[0] == ([], False) and fitted[2] == (kept, True) and fitted[3] == ([], True)
    assert len(fitted[1][0]) > len(kept)  # the configured list holds figures a table classifier leaves out
    # then one side per kept callback, fitting that callback alone (two of a class told apart by position)
    assert fitted[4:] == [([name], True) for name in kept]
    assert sides[4:] == [f"only {name}" + (f" #{i}" if kept.count(name) > 1 else "") for i, name in enumerate(kept)]


def test_the_callback_cost_counts_whole_steps_and_not_what_a_callback_does_once_a_fit(tmp_path):
    import lightning as L

    from bench.callback_cost import StepClock, cpu_us_per_step

    def burn(seconds):
        start = time.process_time()
        while time.process_time() - start < seconds:
            pass

    class BusyAtFitEnd(L.Callback):  # like LossCurves drawing its figure when the fit ends
        def on_train_end(self, trainer, pl_module):
            burn(0.3)

    class BusyEveryStep(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            burn(0.01)

    # spread over 4 steps, 0.3 s of fit-end work would read 75,000 µs a step; a linear layer's step is ~1,000
    assert cpu_us_per_step([BusyAtFitEnd()], steps=4, work=str(tmp_path)) < 20_000
    assert cpu_us_per_step([BusyEveryStep()], steps=4, work=str(tmp_path)) >= 10_000  # a step's own work counts
    clock = StepClock()
    clock.starts = [0.0, 1.0, 2.0, 4.0]  # three steps between the first batch's start and the last one's
    assert clock.us_per_step() == pytest.approx(4 / 3 * 1e6)
    clock.starts = [0.0]
    with pytest.raises(ValueError, match="two batch starts"):
        clock.us_per_step()


def test_the_results_name_the_cpu_they_were_measured_on(tmp_path):
    from pipeline.tracking.provenance import cpu_model_and_flags

    markdown = report.write([], tmp_path, "make bench", "2026-12-02 00:00 UTC", 60.0)
    model = cpu_model_and_flags()[0]
    assert model and f"CPUs, {model}, torch" in markdown.splitlines()[0]
    assert json.loads((tmp_path / "results.json").read_text())["machine"]["cpu"] == model


def test_the_step_parts_bench_times_every_part_in_every_round_after_a_warm_up():
    from bench import step_parts

    names = list(step_parts.parts())
    assert {"plain step", "module step", "model_step", "grouped metric update"} <= set(names)
    times = step_parts.measure(rounds=2, calls=2)
    assert list(times) == names and all(len(values) == 2 and min(values) > 0 for values in times.values())


def test_the_step_options_manual_step_trains_as_the_automatic_one():
    import lightning as L
    from torch.utils.data import DataLoader

    from bench import step_options

    data = step_options.random_batches(3)
    weights = []
    for manual in (False, True):  # the manual step must train as the automatic one does, or its time means nothing
        torch.manual_seed(0)
        module = step_options.MLPModule(manual)
        trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
        trainer.fit(module, DataLoader(data, batch_size=None))
        assert trainer.global_step == 3
        weights.append([p.detach().clone() for p in module.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*weights, strict=True))
    times, first_step_s = step_options.measure(rounds=1, steps=3, compile_too=False)
    assert list(times) == ["plain step", "Lightning, automatic optimization", "Lightning, manual optimization"]
    assert all(len(values) == 1 and values[0] > 0 for values in times.values()) and first_step_s is None


def test_the_metric_write_bench_times_writes_that_reach_the_store(tmp_path):
    from mlflow.tracking import MlflowClient

    from bench import metric_writes

    costs = metric_writes.measure(writes=3, rounds=2, folder=tmp_path)
    assert list(costs) == [1, 6, 60] and all(cpu > 0 and wall > 0 for cpu, wall in costs.values())
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("metric-writes").experiment_id])
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "loss")]
    assert sorted(steps) == list(range(3 * 2 * (1 + 6 + 60)))  # every value written, none a duplicate
