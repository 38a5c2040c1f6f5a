"""The data every benchmark needs, made once and kept in ``bench/.work`` (git-ignored).

- MNIST and Fashion-MNIST: the project's own DVC stages (``dvc repro preprocess_images@...``),
  so the benchmarks train on exactly what ``dvc repro`` trains on (the mirror, when set, is used).
- A CSV table for the MLP case: a seeded scikit-learn ``make_classification`` table written
  as CSV, then fetched and preprocessed by the pipeline's own stages like any user CSV.
- A tiny CSV table (its first rows) for the fixed-costs sweep, fetched and preprocessed the same way.
- MNIST tiled 4× and 16× (training split only) for the scale benchmark.
- A tracking store migrated once, so no measured run pays for creating MLflow's tables.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np

from bench.harness import ROOT, bench_env, python

WORK = ROOT / "bench" / ".work"
PROCESSED = WORK / "processed"
RAW = WORK / "raw"
TABLE_CSV = WORK / "table.csv"
TABLE_ROWS, TABLE_FEATURES, TABLE_CLASSES = 200_000, 50, 7
TINY_CSV = WORK / "tiny.csv"
TINY_ROWS = 2_000
BENCH_CONF = ROOT / "bench" / "conf"
IMAGE_STAGES = ("preprocess_images@mnist", "preprocess_images@fashion_mnist")


def project_processed(name: str) -> Path:
    return ROOT / "datasets" / "processed" / name


def tracking_uri() -> str:
    return f"sqlite:///{WORK / 'mlflow.db'}"


def env() -> dict[str, str]:
    """Benchmarked pipeline runs track into the bench's own store, not the project's."""
    return bench_env({"MLFLOW_TRACKING_URI": tracking_uri()})


def table_overrides(name: str = "bench_table", csv: Path = TABLE_CSV) -> list[str]:
    """Hydra overrides that point the pipeline at a bench table (bench/conf/data/<name>.yaml)."""
    return [
        f"hydra.searchpath=[file://{BENCH_CONF}]",
        f"data={name}",
        f"data.source.path={csv}",
        f"paths.raw_dir={RAW}",
        f"paths.processed_dir={PROCESSED}",
    ]


def tiny_overrides() -> list[str]:
    """Hydra overrides that point the pipeline at the tiny bench table."""
    return table_overrides("bench_tiny", TINY_CSV)


def dvc() -> str:
    """The environment's ``dvc`` (beside its python), whatever is on PATH."""
    return str(Path(python()).parent / "dvc")


def _check(cmd: list[str], **kwargs) -> None:
    subprocess.run(cmd, cwd=ROOT, env=env(), check=True, **kwargs)


def _fetch_and_preprocess(overrides: list[str]) -> None:
    for stage in ("fetch", "preprocess"):
        _check([python(), "-m", f"pipeline.{stage}", *overrides])


def images() -> None:
    """MNIST and Fashion-MNIST through the project's DVC stages (a no-op when they are up to date)."""
    _check([dvc(), "repro", *IMAGE_STAGES])


def table() -> None:
    if (PROCESSED / "bench_table" / "meta.json").is_file():
        return
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=TABLE_ROWS,
        n_features=TABLE_FEATURES,
        n_informative=30,
        n_classes=TABLE_CLASSES,
        n_clusters_per_class=2,
        class_sep=1.0,
        random_state=0,
    )
    WORK.mkdir(parents=True, exist_ok=True)
    header = ",".join([f"f{i}" for i in range(TABLE_FEATURES)] + ["label"])
    tmp = TABLE_CSV.with_suffix(".tmp")
    np.savetxt(
        tmp, np.column_stack([x, y]), delimiter=",", header=header, comments="", fmt=["%.6g"] * TABLE_FEATURES + ["%d"]
    )
    tmp.replace(TABLE_CSV)
    _fetch_and_preprocess(table_overrides())


def tiny_table() -> None:
    """The first ``TINY_ROWS`` rows of the bench table as their own CSV dataset ``bench_tiny``."""
    if (PROCESSED / "bench_tiny" / "meta.json").is_file():
        return
    table()
    with open(TABLE_CSV, encoding="utf-8") as src:
        lines = [line for _, line in zip(range(TINY_ROWS + 1), src, strict=False)]  # the header and TINY_ROWS rows
    tmp = TINY_CSV.with_suffix(".tmp")
    tmp.write_text("".join(lines), encoding="utf-8")
    tmp.replace(TINY_CSV)
    _fetch_and_preprocess(tiny_overrides())


def tiled_mnist(factor: int) -> Path:
    """MNIST with its training split repeated ``factor`` times (val and test unchanged)."""
    dest = PROCESSED / f"mnist_x{factor}"
    if (dest / "meta.json").is_file():
        return dest
    source = project_processed("mnist")
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    meta = json.loads((source / "meta.json").read_text())
    for part in ("x", "y"):
        train = np.load(source / f"train_{part}.npy", mmap_mode="r")
        out = np.lib.format.open_memmap(
            tmp / f"train_{part}.npy", mode="w+", dtype=train.dtype, shape=(len(train) * factor, *train.shape[1:])
        )
        for i in range(factor):
            out[i * len(train) : (i + 1) * len(train)] = train
        out.flush()
        del out
    for split in ("val", "test"):
        for part in ("x", "y"):
            shutil.copyfile(source / f"{split}_{part}.npy", tmp / f"{split}_{part}.npy")
    meta["splits"]["train"]["n"] *= factor
    meta["splits"]["train"]["x_shape"][0] *= factor
    meta["name"] = dest.name
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


def tracking_store() -> None:
    """Create and migrate the bench's MLflow store once (it takes seconds the first time)."""
    if (WORK / "mlflow.db").is_file():
        return
    WORK.mkdir(parents=True, exist_ok=True)
    _check([python(), "-c", f"import mlflow; mlflow.MlflowClient({tracking_uri()!r}).search_experiments()"])


def all_data(scale_factors: tuple[int, ...] = (4, 16)) -> None:
    images()
    table()
    tiny_table()
    for factor in scale_factors:
        tiled_mnist(factor)
    tracking_store()
