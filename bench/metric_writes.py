"""What one metric write to a SQLite tracking store costs, by how many values it carries (not in ``make bench``).

    python -m bench.metric_writes --writes 40 --rounds 5

Why: the per-step loss went to MLflow one ``log_batch`` a call, one store transaction each; the pipeline
now gathers an epoch's values into one write (``pipeline.tracking.batched_metrics``). This times the
write itself (CPU and wall ms a call, medians of the rounds) in a throwaway store, so the saving can be
read off: n single-value writes against one write of n values.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

VALUES_A_WRITE = (1, 6, 60)


def measure(writes: int, rounds: int, folder: Path | None = None) -> dict[int, tuple[float, float]]:
    """CPU and wall ms a ``log_batch`` call carrying n values, for each n of ``VALUES_A_WRITE``, in a store in
    ``folder`` (a temporary one by default)."""
    folder = folder or Path(tempfile.mkdtemp(prefix="metric-writes-"))
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    run_id = client.create_run(client.create_experiment("metric-writes")).info.run_id
    client.log_batch(run_id, metrics=[Metric("warm-up", 0.0, 0, 0)])  # the store's first write sets up its ORM
    step = 0
    costs = {}
    for values in VALUES_A_WRITE:
        cpu_ms, wall_ms = [], []
        for _ in range(rounds):
            cpu, wall = time.process_time(), time.perf_counter()
            for _ in range(writes):
                # every value its own step: a value the store already holds takes MLflow's slow one-by-one path
                client.log_batch(run_id, metrics=[Metric("loss", 0.5, 0, step + i) for i in range(values)])
                step += values
            cpu_ms.append((time.process_time() - cpu) / writes * 1e3)
            wall_ms.append((time.perf_counter() - wall) / writes * 1e3)
        costs[values] = (statistics.median(cpu_ms), statistics.median(wall_ms))
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=40, help="writes a round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    for values, (cpu_ms, wall_ms) in measure(args.writes, args.rounds).items():
        print(f"{values:>3} value(s) a write: {cpu_ms:6.2f} CPU ms, {wall_ms:6.2f} wall ms")


if __name__ == "__main__":
    main()
