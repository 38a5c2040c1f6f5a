"""What MLflow's system-metrics monitor costs a tracked run: CPU time of its import, start, thread and finish.

    python bench/monitor_cost.py 55        # a run of 55 s, about experiment=mnist_fast's length here

Whole-command timings cannot resolve a cost under 1 % on a shared 2-core machine (repeats of one
case differ by 10 %), so this measures the monitor itself: a run in a throwaway SQLite store, the
monitor at the pipeline's default interval (10 s), its thread's CPU time read from the kernel
(psutil) just before it stops.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import psutil
from mlflow.tracking import MlflowClient


def main(duration: float) -> None:
    work = Path(tempfile.mkdtemp(prefix="monitor-cost-"))
    uri = f"sqlite:///{work}/mlflow.db"
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("monitor-cost"))
    started = time.perf_counter()
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    imported = time.perf_counter() - started
    cpu = time.process_time()
    monitor = SystemMetricsMonitor(run.info.run_id, sampling_interval=10, tracking_uri=uri)
    monitor.start()
    start = time.process_time() - cpu
    thread = monitor._process  # MLflow's sampling thread
    time.sleep(duration - 0.5)
    sampling = {t.id: t.user_time + t.system_time for t in psutil.Process().threads()}[thread.native_id]
    cpu = time.process_time()
    monitor.finish()
    finish = time.process_time() - cpu
    samples = len(client.get_metric_history(run.info.run_id, "system/cpu_utilization_percentage"))
    total = imported + start + sampling + finish
    print(
        f"import {imported:.3f} s, start {start:.3f} s CPU, thread {sampling:.3f} s CPU over {duration:.0f} s "
        f"({samples} samples), finish {finish:.3f} s CPU; total {total:.3f} s = {total / duration:.2%}"
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 60.0)
