"""End the MLflow runs whose process died (killed, out of memory, pre-empted) as KILLED.

    python -m pipeline.tracking.reap                      # the project's store (or $MLFLOW_TRACKING_URI)
    python -m pipeline.tracking.reap sqlite:///other.db

Only runs started on this machine can be judged (see ``pipeline.tracking.processes``); every
training does the same for its own experiment when it starts, so this is for a store no run
has opened since.
"""

from __future__ import annotations

import os
import sys

from pipeline.tracking.run import open_store, reap_dead_runs

DEFAULT_STORE = "sqlite:///mlflow.db"


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    uri = args[0] if args else os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_STORE)
    reaped = reap_dead_runs(open_store(uri))
    print(f"{len(reaped)} run(s) of dead processes marked KILLED" + "".join(f"\n  {run_id}" for run_id in reaped))


if __name__ == "__main__":
    main()
