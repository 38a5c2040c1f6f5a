"""The installed stack works together: PyPI's torchvision needs PyPI's torch build (see pyproject.toml),
and every installed package is the version requirements.lock names."""

from __future__ import annotations

import re
from importlib import metadata

from packaging.markers import Marker
from packaging.utils import canonicalize_name

from tests.conftest import REPO_ROOT


def test_torchvision_and_lightning_import_together() -> None:
    import lightning
    import torch
    import torchvision
    from torchvision.ops import nms

    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0], [50.0, 50.0, 60.0, 60.0]])
    keep = nms(boxes, torch.tensor([0.9, 0.8, 0.7]), iou_threshold=0.5)
    # The torchvision::nms operator is the one a mismatched torch build lacks.
    assert keep.tolist() == [0, 2]
    assert lightning.LightningModule is not None and torchvision.ops is not None


def test_torchmetrics_runs() -> None:
    import torch
    from torchmetrics.classification import MulticlassAccuracy

    metric = MulticlassAccuracy(num_classes=3, average="micro")
    assert metric(torch.tensor([0, 1, 2, 2]), torch.tensor([0, 1, 1, 2])).item() == 0.75


def locked_versions() -> dict[str, str]:
    """name -> version of every requirements.lock line whose environment markers match this interpreter."""
    locked = {}
    for line in (REPO_ROOT / "requirements.lock").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)==([^ ;]+)\s*(?:;\s*(.+))?$", line)
        if match and (match.group(3) is None or Marker(match.group(3)).evaluate()):
            locked[canonicalize_name(match.group(1))] = match.group(2)
    return locked


def test_installed_packages_are_the_locked_versions() -> None:
    """`make install` installs from the lock: a package at another version (a local torch 2.13.0+cpu build,
    an upgrade by hand) means the environment is not the one the project was tested with."""
    locked = locked_versions()
    assert locked["torch"] == "2.13.0" and "lightning" in locked
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}
    differing = {
        name: (installed[name], version)
        for name, version in locked.items()
        if name in installed and installed[name] != version
    }
    assert not differing, f"installed vs requirements.lock: {differing}; run make install"
