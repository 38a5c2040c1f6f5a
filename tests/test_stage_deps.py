"""dvc.yaml's code dependencies follow the code: each stage lists exactly the project modules its command runs.

For every stage DVC resolves (``dvc.repo.Repo(...).index.stages``), the modules its
``python -m pipeline.<entry>`` command imports, transitively and including imports inside
functions (``if TYPE_CHECKING:`` blocks never run, so they do not count), plus the modules of
every ``_target_`` its composed config instantiates (models, datamodules, sources, callbacks,
loggers, Hydra callbacks). A stage must list each of those files (or a folder holding it),
and each code file a stage group lists must be needed by one of the group's stages: an edit
to code a stage runs re-runs that stage, and no other edit does.
"""

from __future__ import annotations

import ast
import shlex
from functools import cache
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from tests.conftest import REPO_ROOT
from tests.import_graph import PACKAGE, _walk_runtime, closure, direct_imports, module_file

# module-scoped fixtures: the whole module runs in one test process (make test's --dist loadgroup)
pytestmark = pytest.mark.xdist_group("stage_deps")


def targets(config: object) -> set[str]:
    """The project modules of every ``_target_`` in a composed config (interpolations left unresolved)."""
    if OmegaConf.is_config(config):
        config = OmegaConf.to_container(config, resolve=False)
    found: set[str] = set()
    if isinstance(config, dict):
        for key, value in config.items():
            if key == "_target_" and isinstance(value, str):
                module = value
                while module and module_file(module) is None:
                    module = module.rpartition(".")[0]
                found |= {module} if module.split(".")[0] == PACKAGE else set()
            else:
                found |= targets(value)
    elif isinstance(config, list):
        for item in config:
            found |= targets(item)
    return found


@cache
def compose_config(name: str, overrides: tuple[str, ...]) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        return compose(name, overrides=list(overrides), return_hydra_config=True)


def trivial(path: Path) -> bool:
    """A package ``__init__.py`` of a docstring and constants (``__version__``): editing it cannot change what a
    stage computes."""
    body = ast.parse(path.read_text()).body
    return path.name == "__init__.py" and all(
        isinstance(getattr(stmt, "value", None), ast.Constant) and isinstance(stmt, (ast.Expr, ast.Assign))
        for stmt in body
    )


@cache
def required_files(address: str, cmd: str) -> frozenset[str]:
    """The project source files stage ``address`` runs, relative to the repository root."""
    words = shlex.split(cmd)
    assert words[:3] == ["python", "-m", words[2]] and words[2].startswith(f"{PACKAGE}."), cmd
    entry = words[2]
    # the overrides that choose config groups (the others name files and folders)
    choices = tuple(w for w in words[3:] if w.split("=")[0] in ("data", "experiment"))
    modules = {entry}
    item = address.partition("@")[2]
    if entry in ("pipeline.fetch", "pipeline.preprocess"):
        modules |= targets(compose_config("prepare", choices).data.source)  # the datamodule is not built
    elif entry in ("pipeline.train", "pipeline.evaluate"):
        # evaluate rebuilds the model and datamodule the checkpoint of train@<item> recorded
        train = compose_config("train", (f"experiment={item}",))
        own = compose_config(entry.split(".")[1], ())
        # of the data config, training builds the datamodule only (the source is the data stages' business)
        modules |= targets(train.model) | targets(train.data.datamodule) | targets(own.hydra.callbacks)
        if entry == "pipeline.train":
            modules |= targets(train.callbacks) | targets(train.logger) | targets(train.hydra.callbacks)
        else:
            modules |= targets(own.trainer)
    files = {module_file(m) for m in closure(modules)}
    return frozenset(str(path.relative_to(REPO_ROOT)) for path in files if not trivial(path))


@pytest.fixture(scope="module")
def stages() -> dict[str, tuple[str, list[str]]]:
    """address → (command, dependency paths) of every stage dvc.yaml defines, as DVC resolves them."""
    from dvc.repo import Repo

    with Repo(str(REPO_ROOT)) as repo:
        return {
            stage.addressing: (stage.cmd, [dep.def_path for dep in stage.deps])
            for stage in repo.index.stages
            if getattr(stage, "cmd", None)
        }


def source_files(dep: str) -> list[str]:
    """The Python files a dependency path stands for (a folder: every non-trivial one in it)."""
    path = REPO_ROOT / dep
    files = sorted(path.rglob("*.py")) if path.is_dir() else [path] if path.suffix == ".py" else []
    return [str(f.relative_to(REPO_ROOT)) for f in files if not trivial(f)]


def covered(path: str, deps: list[str]) -> bool:
    return any(path == dep or path.startswith(dep.rstrip("/") + "/") for dep in deps)


def test_every_stage_lists_the_code_it_runs(stages):
    missing = {}
    for address, (cmd, deps) in stages.items():
        lacking = sorted(path for path in required_files(address, cmd) if not covered(path, deps))
        if lacking:
            missing[address] = lacking
    assert not missing, f"dvc.yaml misses code these stages run (add to their deps): {missing}"


def test_no_stage_group_lists_code_none_of_its_stages_runs(stages):
    needed: dict[str, set[str]] = {}
    listed: dict[str, set[str]] = {}
    for address, (cmd, deps) in stages.items():
        group = address.partition("@")[0]
        needed.setdefault(group, set()).update(required_files(address, cmd))
        listed.setdefault(group, set()).update(dep for dep in deps if dep.startswith("src/"))
    extra = {
        group: sorted(path for dep in deps for path in source_files(dep) if path not in needed[group])
        for group, deps in listed.items()
    }
    extra = {group: deps for group, deps in extra.items() if deps}
    assert not extra, f"dvc.yaml lists code no stage of the group runs (an edit would re-run it for nothing): {extra}"


def test_the_analysis_sees_imports_inside_functions_and_skips_type_checking():
    # process_images imports the splitting module inside the function
    assert "pipeline.data.splits" in direct_imports("pipeline.data.preparing")
    assert "pipeline.data.processed" in closure(["pipeline.data.datamodule"])
    tree = ast.parse(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pipeline.x\ndef f():\n    import pipeline.y\n"
    )
    imported = {alias.name for node in _walk_runtime(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert imported == {"pipeline.y"}
