"""An int8 TorchScript copy of a model file, served by the service's own loader unchanged.

The shipped file is frozen: batch norm is folded into the convolutions and the weights are
constants of a graph, so torch's quantisation tools cannot work on it directly. The eager
EfficientNet-Lite0 is rebuilt instead, with the frozen weights copied in (convolutions in
the order they run, batch norm replaced by identity), checked against the file, quantised
with FX graph mode and post-training calibration, and exported with
``training.export.export_model`` like every other model file.

Measured on this project's model: the quantised weights must be packed for oneDNN. With
torch's default ``x86`` engine (fbgemm underneath) the same file ran 8 times slower, and
with activations at full 8-bit range fbgemm's 16-bit accumulation overflows (top-1
agreement with the float model fell to 77%). So the file records
``quantized_engine: onednn`` in its meta.json and ``classifier.model.load_model`` selects
that engine before loading it.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import torch
from torch import nn

from training.export import EFFICIENTNET_LITE_MEAN, EFFICIENTNET_LITE_STD, export_model
from classifier.onnx_copy import file_sha256
from classifier.model import QUANTIZED_ENGINE, load_model

from .network import ARCHITECTURE

ENGINE = "onednn"
# Largest gap tolerated between the rebuilt eager network and the frozen file it came from.
REBUILD_TOLERANCE = 1e-3


def quantize_torchscript_int8(
    model_path: str | Path, output_path: str | Path, calibration_images: torch.Tensor, batch_size: int = 16
) -> Path:
    """Write an int8 TorchScript model file from ``model_path``, calibrated on uint8 images."""
    loaded = load_model(model_path)
    network = rebuild_network(loaded.module, len(loaded.labels))
    check_rebuild(loaded.module, network, calibration_images[:batch_size])
    quantized = _quantize(network, calibration_images, batch_size)
    meta = {
        **loaded.meta,
        "variant": f"int8 (torch FX post-training quantisation, {ENGINE})",
        QUANTIZED_ENGINE: ENGINE,
        "source": {"file": Path(model_path).name, "sha256": file_sha256(model_path)},
        "calibration_images": len(calibration_images),
    }
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = ENGINE
    try:
        with warnings.catch_warnings():
            # Tracing reads each quantisation scale as a Python float: they are constants.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            # The same wrapper as the float file: normalisation in float, then the int8 network.
            return export_model(quantized, loaded.labels, meta, output_path)
    finally:
        torch.backends.quantized.engine = previous


def rebuild_network(frozen: torch.jit.ScriptModule, num_classes: int) -> nn.Module:
    """The eager network inside a frozen EfficientNet-Lite0 model file (input normalised)."""
    from efficientnet_lite_pytorch import EfficientNet

    weights = _frozen_weights(frozen)
    # A fixed input size gives static "same" padding, which FX can trace.
    network = EfficientNet.from_name(ARCHITECTURE, num_classes=num_classes, image_size=224)
    convolutions = [m for m in network.modules() if isinstance(m, nn.Conv2d)]
    if len(convolutions) != len(weights.convolutions):
        raise ValueError(
            f"the file has {len(weights.convolutions)} convolutions, {ARCHITECTURE} has "
            f"{len(convolutions)}: not the architecture this rebuild knows"
        )
    for module, (weight, bias, stride, groups) in zip(convolutions, weights.convolutions):
        if module.weight.shape != weight.shape or list(module.stride) != list(stride) or module.groups != groups:
            raise ValueError(f"convolution {module} does not match the file's {tuple(weight.shape)}")
        module.weight.data.copy_(weight)
        module.bias = nn.Parameter(bias.clone() if bias is not None else torch.zeros(weight.shape[0]))
    network._fc.weight.data.copy_(weights.linear[0])
    network._fc.bias.data.copy_(weights.linear[1])
    _replace_children(network)
    return network.eval()


def check_rebuild(frozen: torch.jit.ScriptModule, network: nn.Module, images: torch.Tensor) -> float:
    """Largest logit difference between the rebuilt network and the file; raise if not tiny."""
    batch = images.float().div(255)
    with torch.inference_mode():
        gap = float((frozen(batch) - network(_normalise(batch))).abs().max())
    if gap > REBUILD_TOLERANCE:
        raise ValueError(f"the rebuilt network differs from the model file by {gap:.2e} in logits")
    return gap


def _normalise(batch: torch.Tensor) -> torch.Tensor:
    """What ``ServedModel`` does in front of the network: [0, 1] pixels to its input range."""
    mean = torch.tensor(EFFICIENTNET_LITE_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(EFFICIENTNET_LITE_STD).view(1, 3, 1, 1)
    return (batch - mean) / std


class _FrozenWeights:
    def __init__(self):
        self.convolutions: list[tuple] = []  # (weight, bias, stride, groups) in execution order
        self.linear: tuple | None = None


def _frozen_weights(frozen: torch.jit.ScriptModule) -> _FrozenWeights:
    """Read the convolutions' and the classifier's constants from the frozen graph, in order."""
    found = _FrozenWeights()
    for node in frozen.graph.nodes():
        inputs = list(node.inputs())
        if node.kind() in ("aten::_convolution", "aten::conv2d"):
            groups_at = 8 if node.kind() == "aten::_convolution" else 6
            found.convolutions.append(
                (_constant(inputs[1]), _constant(inputs[2]), _constant(inputs[3]), _constant(inputs[groups_at]))
            )
        elif node.kind() == "aten::linear":
            found.linear = (_constant(inputs[1]), _constant(inputs[2]))
    if not found.convolutions or found.linear is None:
        raise ValueError("no convolutions or no final linear layer found in the frozen graph")
    return found


def _constant(value):
    node = value.node()
    if node.kind() == "prim::ListConstruct":
        return [_constant(item) for item in node.inputs()]
    if node.kind() != "prim::Constant":
        raise ValueError(f"expected a constant in the frozen graph, found {node.kind()}")
    return value.toIValue()


def _replace_children(module: nn.Module) -> None:
    """Batch norm (already folded) becomes identity; "same"-padded convolutions become plain.

    Plain ``nn.Conv2d`` modules are what FX quantises into int8 convolutions with packed
    weights; the library's padded subclass would trace into a slow functional convolution.
    """
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, nn.Identity())
        elif isinstance(child, nn.Conv2d):
            setattr(module, name, _plain_convolution(child))
        else:
            _replace_children(child)


def _plain_convolution(conv: nn.Conv2d) -> nn.Module:
    plain = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, groups=conv.groups)
    plain.weight.data.copy_(conv.weight.data)
    plain.bias.data.copy_(conv.bias.data)
    pad = getattr(conv, "static_padding", None)
    if not isinstance(pad, nn.ZeroPad2d):
        return plain
    left, right, top, bottom = pad.padding
    if left == right == top == bottom:
        plain.padding = (top, left)
        return plain
    return nn.Sequential(nn.ZeroPad2d(pad.padding), plain)  # stride 2: TensorFlow pads one side


def _quantize(network: nn.Module, calibration_images: torch.Tensor, batch_size: int) -> nn.Module:
    from torch.ao.quantization import QConfig, get_default_qconfig_mapping
    from torch.ao.quantization.observer import HistogramObserver, PerChannelMinMaxObserver
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    # Full 8-bit activations (oneDNN has no fbgemm overflow to avoid), histogram ranges that
    # ignore rare outliers, symmetric per-channel weights.
    qconfig = QConfig(
        activation=HistogramObserver.with_args(dtype=torch.quint8, reduce_range=False),
        weight=PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric),
    )
    mapping = get_default_qconfig_mapping("x86").set_global(qconfig)
    example = (torch.rand(1, 3, 224, 224),)
    with warnings.catch_warnings():
        # torch.ao.quantization announces its move to torchao; it is what makes TorchScript int8.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        prepared = prepare_fx(copy.deepcopy(network), mapping, example)
        with torch.inference_mode():
            for start in range(0, len(calibration_images), batch_size):
                prepared(_normalise(calibration_images[start : start + batch_size].float().div(255)))
        return convert_fx(prepared)

