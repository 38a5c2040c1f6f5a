"""The installed stack works together: PyPI's torchvision needs PyPI's torch build (see pyproject.toml)."""


def test_torchvision_and_lightning_import_together() -> None:
    import lightning
    import torch
    import torchvision
    from torchvision.ops import nms

    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0], [50.0, 50.0, 60.0, 60.0]])
    keep = nms(boxes, torch.tensor([0.9, 0.8, 0.7]), iou_threshold=0.5)
    # The torchvision::nms operator is the one a mismatched torch build lacks.
    assert keep.tolist() == [0, 2]
    assert lightning.__version__.startswith("2.6")
    assert torchvision.__version__.startswith("0.28")


def test_torchmetrics_runs() -> None:
    import torch
    from torchmetrics.classification import MulticlassAccuracy

    metric = MulticlassAccuracy(num_classes=3, average="micro")
    assert metric(torch.tensor([0, 1, 2, 2]), torch.tensor([0, 1, 1, 2])).item() == 0.75
