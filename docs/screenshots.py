"""Screenshots of the MLflow UI for the docs: a sweep's runs table, its charts, and one run's artifacts.

    python docs/screenshots.py --tracking-uri sqlite:///mlflow.db --out docs/images
    make screenshots                      # the same, on the project's store

What it needs, beside the project's environment:
- Chromium: on Debian ``apt-get install -y chromium`` (``/usr/bin/chromium``; ``--chromium`` or
  ``$CHROMIUM`` for another path). Playwright's own browser download is not used.
- The ``playwright`` Python package (in the ``dev`` extra; ``pip install playwright``), which
  drives that Chromium over CDP.

What it does: starts ``mlflow server`` on a free loopback port on the given store (a store that
is already an ``http(s)://`` tracking server is used as it is), picks the experiment of the most
recent sweep (the newest run that other runs name as ``mlflow.parentRunId``; without sweeps, the
experiment of the newest run), and saves, under ``--out``:

- ``mlflow_runs_table.png``: the experiment's runs table in the "Model training" view, the sweep's
  parent run expanded over its child runs, with the metrics and the params that differ between the
  children as columns;
- ``mlflow_runs_charts.png``: the same runs in the chart view (one colour per run);
- ``mlflow_run_artifacts.png``: one run's artifacts page (the sweep's best run, from the parent's
  ``best_run_id`` tag, else the newest child with ``figures/``), showing an image from ``figures/``;
- ``mlflow_run_system_metrics.png``: the *System metrics* tab of the newest run that recorded them
  (in the chosen experiment when one there did).

Every shot waits for the page's content (run names, the artifact tree) and is checked not to be a
mostly blank page; the script exits non-zero, saying which, when one is.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]
PREFERRED_FIGURES = ["loss_curves.png", "decision_boundary.png", "samples.png", "fitted_curve.png"]
PREFERRED_METRICS = ["val/acc", "val/loss", "test/acc", "test/loss", "val/mse", "test/mse", "val/fid"]
MAX_METRICS, MAX_PARAMS = 4, 3
PAGE_TIMEOUT_MS = 60_000


class ShotError(RuntimeError):
    pass


# --- which runs ------------------------------------------------------------------------------------


def choose_runs(client, experiment: str | None, run: str | None) -> dict:
    """The experiment, the sweep parent (or None), its children, and the run whose artifacts to show."""
    experiments = client.search_experiments()
    if experiment:
        chosen = (
            client.get_experiment(experiment) if experiment.isdigit() else client.get_experiment_by_name(experiment)
        )
        if chosen is None:
            raise ShotError(f"no experiment {experiment!r} in the store")
        ids = [chosen.experiment_id]
    else:
        ids = [e.experiment_id for e in experiments]
    runs = client.search_runs(ids, order_by=["attributes.start_time DESC"], max_results=5000)
    if not runs:
        raise ShotError("the store has no runs: train with logger=mlflow first")
    by_id = {r.info.run_id: r for r in runs}
    parents = [by_id[p] for p in dict.fromkeys(r.data.tags.get("mlflow.parentRunId") for r in runs) if p in by_id]
    parent = max(parents, key=lambda r: r.info.start_time) if parents else None
    experiment_id = parent.info.experiment_id if parent else runs[0].info.experiment_id
    children = [r for r in runs if parent and r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    group = children or [r for r in runs if r.info.experiment_id == experiment_id]

    if run:
        shown = client.get_run(run)
    else:
        best = by_id.get(parent.data.tags.get("best_run_id", "")) if parent else None
        with_figures = (r for r in group if any(a.path == "figures" for a in client.list_artifacts(r.info.run_id)))
        shown = best or next(with_figures, group[0])
    figures = [a.path for a in client.list_artifacts(shown.info.run_id, "figures") if a.path.endswith(".png")]
    named = {Path(f).name: f for f in figures}
    figure = next((named[n] for n in PREFERRED_FIGURES if n in named), figures[0] if figures else None)
    monitored = [r for r in runs if "system/cpu_utilization_percentage" in r.data.metrics]
    system_run = next(
        (r for r in monitored if r.info.experiment_id == experiment_id), monitored[0] if monitored else None
    )
    return {
        "experiment_id": experiment_id,
        "parent": parent,
        "group": group,
        "artifacts_run": shown,
        "figure": figure,
        "system_run": system_run,
    }


def swept_params(group: list) -> list[str]:
    """The params a sweep varied: from each child's ``sweep.overrides`` tag (a JSON list of Hydra
    overrides) when runs have one, else the params whose values differ, leaving out paths."""
    overrides = []
    for run in group:
        with contextlib.suppress(ValueError, TypeError):
            items = json.loads(run.data.tags.get("sweep.overrides", ""))
            overrides.append(dict(item.split("=", 1) for item in items if "=" in item))
    keys = sorted({key for o in overrides for key in o})
    varied = [key.lstrip("+~").replace(".", "/") for key in keys if len({o.get(key) for o in overrides}) > 1]
    if varied:
        return varied
    keys = sorted({key for r in group for key in r.data.params})
    return [
        k
        for k in keys
        if len({r.data.params.get(k) for r in group}) > 1
        and not k.endswith(("dir", "path", "file"))
        and not any("/" in str(r.data.params.get(k)) for r in group)
    ]


def columns_for(
    group: list, parent, metrics: list[str] | None, params: list[str] | None
) -> tuple[list[str], list[str]]:
    """Metric columns (preferred ones present, else the first few) and the params the runs differ in."""
    if metrics is None:
        present = sorted({key for r in group for key in r.data.metrics})
        metrics = [m for m in PREFERRED_METRICS if m in present][:MAX_METRICS] or present[:MAX_METRICS]
        if parent is not None:  # the sweep's summary (best/val/acc, ...), on the parent's row
            metrics += sorted(key for key in parent.data.metrics if key.startswith("best/"))[:1]
    if params is None:
        params = swept_params(group)[:MAX_PARAMS]
    return metrics, params


# --- the server ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def mlflow_ui(tracking_uri: str, artifacts_destination: str | None = None, timeout: float = 120) -> Iterator[str]:
    """The UI's base URL: the tracking server itself, or `mlflow server` started on the store for the shots."""
    if tracking_uri.startswith(("http://", "https://")):
        yield tracking_uri.rstrip("/")
        return
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no background job runner
    log = tempfile.TemporaryFile()  # noqa: SIM115 (the server's output, read back if it fails to start)
    # Runs logged straight to a store keep file:// artifact locations, which the server reads as they
    # are; runs logged through a server (mlflow-artifacts:/...) need that server's --artifacts-destination.
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        tracking_uri,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    if artifacts_destination:
        command += ["--artifacts-destination", artifacts_destination]
    process = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                output = log.read().decode(errors="replace")[-4000:]
                raise ShotError(f"mlflow server on {tracking_uri} did not answer {url}/health: {output}")
            time.sleep(0.25)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()


# --- the browser -----------------------------------------------------------------------------------


def find_chromium(explicit: str | None) -> str:
    for candidate in (
        explicit,
        os.environ.get("CHROMIUM"),
        "/usr/bin/chromium",
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
        shutil.which("google-chrome"),
    ):
        if candidate and Path(candidate).is_file():
            return candidate
    raise ShotError("no Chromium found: on Debian `apt-get install -y chromium`, or pass --chromium PATH")


def check_not_blank(path: Path, min_ink: float = 0.004) -> float:
    """The share of dark pixels (text, lines, plots) in the main pane, the sidebar (left 15 %) left out;
    fail when there are almost none: a page still showing its grey loading skeleton has 0 %, a loaded
    runs table or artifact view 1-2 %."""
    from PIL import Image

    image = Image.open(path).convert("L")
    pane = image.crop((int(image.width * 0.15), 0, image.width, image.height))
    histogram = pane.histogram()
    ink = sum(histogram[:160]) / sum(histogram)
    if ink < min_ink:
        raise ShotError(f"{path} looks blank: {ink:.2%} of its main pane is text or lines")
    return ink


def close_overlays(page) -> None:
    """The assistant side panel and first-visit tips, when the UI shows them."""
    page.wait_for_timeout(500)
    for name in ("Close", "Got it", "Dismiss"):
        buttons = page.get_by_role("button", name=name, exact=True)
        for i in range(buttons.count()):
            with contextlib.suppress(Exception):
                if buttons.nth(i).is_visible():
                    buttons.nth(i).click(timeout=2000)
    page.keyboard.press("Escape")


def row(page, run_id: str):
    """A run's row in the runs grid (ag-grid splits a row between its pinned and scrolling parts)."""
    return page.locator(f'.ag-row[row-id="{run_id}"]')


def expand_parent(page, run_id: str) -> None:
    """Click the +/- button in the parent run's name cell so its child runs show beneath it."""
    row(page, run_id).locator('[data-component-id$="runnamecellrenderer.tsx_46"]').first.click()


def hide_from_charts(page, run_id: str) -> None:
    """The eye toggle of a run: the sweep parent carries only the sweep's summary, no curves."""
    row(page, run_id).locator("label", has=page.locator("input.is-visibility-toggle-checkbox")).first.click()


def tick_columns(page, names: list[str], ticked: bool = True) -> list[str]:
    """Tick (or untick) each name in the Columns picker, which lists attributes, metrics and params; return
    the names it does not offer."""
    page.get_by_role("button", name="Columns", exact=True).click()
    search = page.get_by_placeholder("Search columns")
    search.wait_for()
    missing = []
    for name in names:
        search.fill(name)  # the tree is virtualised: filter it so the node is rendered
        # The whole title, not a highlighted part of it (searching "val/acc" also lists "best/val/acc").
        title = page.locator(".du-bois-light-tree-title").filter(has_text=re.compile(f"^{re.escape(name)}$"))
        node = page.locator(".du-bois-light-tree-treenode").filter(has=title).first
        try:
            node.wait_for(timeout=3000)
        except Exception:
            missing.append(name)
            continue
        checkbox = node.locator(".du-bois-light-tree-checkbox")
        if ("checkbox-checked" in (checkbox.get_attribute("class") or "")) != ticked:
            checkbox.click()
    search.fill("")
    page.keyboard.press("Escape")
    page.wait_for_timeout(300)
    return missing


def collapse_other_sections(page, keep: str) -> None:
    """Fold every chart section but ``keep`` (the chart view groups metrics by their prefix)."""
    headers = page.locator('.du-bois-light-collapse-header[aria-expanded="true"]')
    for i in reversed(range(headers.count())):
        header = headers.nth(i)
        label = header.locator('[data-testid="experiment-view-compare-runs-section-header"]')
        if label.count() and label.inner_text().split("\n")[0].strip() != keep:
            header.click()
    page.wait_for_timeout(500)


def take_shots(
    url: str, chosen: dict, metrics: list[str], params: list[str], out: Path, chromium: str, width: int, height: int
) -> list[Path]:
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mlflow-shots-chromium-") as profile, sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=chromium,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": width, "height": height},
            device_scale_factor=1,
        )
        context.set_default_timeout(PAGE_TIMEOUT_MS)
        page = context.pages[0] if context.pages else context.new_page()
        try:
            saved = shoot_pages(page, url, chosen, metrics, params, out, width, height)
        except Exception as error:
            failed = Path(tempfile.gettempdir()) / "mlflow-screenshots-failed.png"
            with contextlib.suppress(Exception):
                page.screenshot(path=str(failed))
                print(f"the page when it failed: {failed}", file=sys.stderr)
            raise ShotError(f"{type(error).__name__}: {error}") from error
        finally:
            context.close()
    return saved


def shoot_pages(
    page, url: str, chosen: dict, metrics: list[str], params: list[str], out: Path, width: int, height: int
) -> list[Path]:
    experiment_id, parent, group = chosen["experiment_id"], chosen["parent"], chosen["group"]
    shown = chosen["artifacts_run"]
    saved = []

    # (a) the runs table, "Model training" view, parent expanded, chosen columns.
    page.goto(f"{url}/#/experiments/{experiment_id}/runs?workflowType=machine_learning&startTime=ALL")
    first_name = (parent or group[0]).info.run_name
    page.get_by_text(first_name, exact=True).first.wait_for()
    close_overlays(page)
    if parent is not None:
        expand_parent(page, parent.info.run_id)
        row(page, group[-1].info.run_id).first.wait_for()
    tick_columns(page, ["Source"], ticked=False)  # the same on every row here
    missing = tick_columns(page, metrics + params)
    if missing:
        print(f"columns not offered by the UI: {missing}", file=sys.stderr)
    page.mouse.move(0, height - 1)  # no hover highlight
    page.wait_for_timeout(1000)
    rows = page.locator(".ag-center-cols-container .ag-row")
    bottom = max(box["y"] + box["height"] for box in (rows.nth(i).bounding_box() for i in range(rows.count())))
    clip_height = min(height, max(int(bottom) + 48, height // 2))  # no empty page below a short table
    saved.append(
        shot(page, out / "mlflow_runs_table.png", clip={"x": 0, "y": 0, "width": width, "height": clip_height})
    )

    # (b) the chart view of the same runs, only the section of the first metric ("val" for val/acc) open.
    page.locator("label", has=page.locator('input[name="runs-view-mode"][value="CHART"]')).click()
    if parent is not None:
        hide_from_charts(page, parent.info.run_id)
    section = metrics[0].rsplit("/", 1)[0] if metrics and "/" in metrics[0] else None
    if section:
        page.get_by_placeholder("Search metric charts").fill(section + "/")
        page.wait_for_timeout(1000)
        collapse_other_sections(page, section)
    page.locator(".js-plotly-plot").first.wait_for()
    page.mouse.move(0, height - 1)
    page.wait_for_timeout(2500)  # plotly draws after the grid
    saved.append(shot(page, out / "mlflow_runs_charts.png"))

    # (c) one run's artifacts, an image from figures/ opened.
    ml_view = "?workflowType=machine_learning"
    base = f"{url}/#/experiments/{shown.info.experiment_id}/runs/{shown.info.run_id}/artifacts"
    figure = chosen["figure"]
    page.goto(f"{base}/{figure}{ml_view}" if figure else base + ml_view)
    page.get_by_text("config.yaml").first.wait_for()
    if figure:
        image = page.locator(f'img[alt="{figure}"]').first
        image.wait_for()
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
    close_overlays(page)
    page.mouse.move(0, height - 1)
    page.wait_for_timeout(1000)
    saved.append(shot(page, out / "mlflow_run_artifacts.png"))

    # (d) the System metrics tab of a run that recorded them (CPU, memory, disk, network over time).
    system = chosen["system_run"]
    if system is None:
        print("no run recorded system metrics: mlflow_run_system_metrics.png not taken", file=sys.stderr)
        return saved
    page.goto(f"{url}/#/experiments/{system.info.experiment_id}/runs/{system.info.run_id}/system-metrics{ml_view}")
    page.locator(".js-plotly-plot").first.wait_for()
    close_overlays(page)
    page.mouse.move(0, height - 1)
    page.wait_for_timeout(2500)  # plotly draws after the page
    saved.append(shot(page, out / "mlflow_run_system_metrics.png"))
    return saved


def shot(page, path: Path, clip: dict | None = None) -> Path:
    page.evaluate("document.activeElement && document.activeElement.blur()")  # no focus ring
    page.screenshot(path=str(path), clip=clip)
    ink = check_not_blank(path)
    print(f"saved {path} ({ink:.1%} ink)")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--tracking-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"),
        help="the store (sqlite:///..., postgresql://...) or a tracking server (http://...)",
    )
    parser.add_argument(
        "--artifacts-destination", help="the --artifacts-destination of the server the runs were logged through, if any"
    )
    parser.add_argument("--out", type=Path, default=Path("docs/images"), help="folder for the PNG files")
    parser.add_argument("--experiment", help="experiment name or id (default: the newest sweep's)")
    parser.add_argument("--run", help="run id for the artifacts shot (default: the sweep's best run)")
    parser.add_argument("--metrics", nargs="*", help="metric columns (default: val/acc, val/loss, test/acc, ...)")
    parser.add_argument("--params", nargs="*", help="param columns (default: those that differ between the runs)")
    parser.add_argument("--chromium", help="Chromium binary (default: $CHROMIUM or /usr/bin/chromium)")
    parser.add_argument("--size", default="1600x900", help="window size, WIDTHxHEIGHT")
    args = parser.parse_args(argv)

    from mlflow.tracking import MlflowClient

    try:
        chromium = find_chromium(args.chromium)
        chosen = choose_runs(MlflowClient(args.tracking_uri), args.experiment, args.run)
        metrics, params = columns_for(chosen["group"], chosen["parent"], args.metrics, args.params)
        width, height = (int(v) for v in args.size.lower().split("x"))
        with mlflow_ui(args.tracking_uri, args.artifacts_destination) as url:
            take_shots(url, chosen, metrics, params, args.out, chromium, width, height)
    except ShotError as error:
        print(f"screenshots: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
