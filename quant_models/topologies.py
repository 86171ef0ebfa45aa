"""FINN's reference 1-bit topologies (TFC, SFC, LFC, CNV) as `OnebitNet`s built from an estimator.

Follows Brevitas' bnn_pynq models (brevitas_examples/bnn_pynq/models/{FC,CNV}.py): no biases,
BatchNorm eps 1e-4, max-pool after the binary activation, convolutions unpadded 3x3. Differences, all
required by docs/design.md §1: the model reads raw pixels 0..255 (no `2x - 1` in forward; the input
quantizer is an exact UINT8 identity or a threshold at 128), the class scores are the score layer's
integer accumulators (bnn_pynq's TensorNorm becomes a training-only scalar scale), and any input shape
and class count are accepted.

`arch` dicts (recorded in checkpoints, so plain types only):
    {"name": "tfc"|"sfc"|"lfc"|"cnv", "in_shape": [C, H, W], "num_classes": K, "input_bits": 8|1,
     "dropout": p,                                   # after every hidden activation; 0 = none
     # MLPs:  "hidden": [64, 64, 64]                 # widths of the hidden layers
     # CNV:   "channels": [64, 64, 128, 128, 256, 256], "pool": [False, True, False, True, False, False],
     #        "fc": [512, 512], "first_padding": 0|1|2...}
`complete_arch` fills every default, so the recorded dict fully determines the model.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from brevitas.nn import QuantIdentity
from torch import nn

from onebit.errors import OnebitError
from quant_models import compat  # noqa: F401  (Tensor.rename shim before any Brevitas layer runs)
from quant_models.estimators.base import Estimator
from quant_models.quantizers import BipolarActQuant, PixelUint8Quant

MLP_WIDTHS: dict[str, int] = {"tfc": 64, "sfc": 256, "lfc": 1024}
CNV_CHANNELS: list[int] = [64, 64, 128, 128, 256, 256]
CNV_POOL: list[bool] = [False, True, False, True, False, False]
CNV_FC: list[int] = [512, 512]
KERNEL_SIZE = 3
BN_EPS = 1e-4
ARCHITECTURES: tuple[str, ...] = ("tfc", "sfc", "lfc", "cnv")
# Size limits (docs/design.md §1): larger models cannot be trained, collapsed or built in memory here, and a
# typo such as in_shape [1, 100000, 100000] would otherwise try to allocate terabytes before failing.
MAX_INPUT_VALUES = 1 << 22  # C*H*W of one image (3 x 1024 x 1024 fits)
MAX_WIDTH = 1 << 16         # neurons / channels of one layer, and classes
MAX_WEIGHTS = 1 << 30       # binary weights of the whole model (1 Gbit)
# Threshold of the binary-input variant: pixel >= 128 -> +1, i.e. sign(x - 127.5), never exactly 0.
BINARY_INPUT_OFFSET = 127.5


class InputQuant(nn.Module):
    """The first quantizer: raw pixels 0..255 -> UINT8 identity (bits=8) or +-1 (bits=1).

    For bits=1 it subtracts `offset` (127.5) before a bipolar quantizer; the subtraction is part of
    the model so that Brevitas' export carries it and FINN turns it into a threshold on the UINT8
    input.
    """

    def __init__(self, bits: int) -> None:
        super().__init__()
        if bits == 8:
            self.offset = 0.0
            self.quant = QuantIdentity(act_quant=PixelUint8Quant)
        elif bits == 1:
            self.offset = BINARY_INPUT_OFFSET
            self.quant = QuantIdentity(act_quant=BipolarActQuant)
        else:
            raise OnebitError(f"input_bits={bits} is not supported; use 8 (UINT8 pixels) or 1 (binarized)")
        self.bits = bits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.offset:
            x = x - self.offset
        return self.quant(x)


class BinaryBlock(nn.Module):
    """weight layer -> BatchNorm -> binary activation [-> 2x2 max-pool] [-> dropout (training only)]."""

    def __init__(
        self,
        weight_layer: nn.Module,
        bn: nn.BatchNorm1d | nn.BatchNorm2d,
        act: nn.Module,
        pool: nn.MaxPool2d | None = None,
        dropout: nn.Dropout | None = None,
    ) -> None:
        super().__init__()
        self.weight_layer = weight_layer
        self.bn = bn
        self.act = act
        self.pool = pool
        self.dropout = dropout

    @property
    def is_conv(self) -> bool:
        return isinstance(self.bn, nn.BatchNorm2d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn(self.weight_layer(x)))
        if self.pool is not None:
            x = self.pool(x)
        if self.dropout is not None:
            x = self.dropout(x)
        return x


class ScoreScale(nn.Module):
    """Training-only positive scalar on the class scores (the softmax temperature); never exported.

    Stored as a log so it stays positive; a scalar does not change the argmax of the scores.
    """

    def __init__(self, init: float) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(math.log(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.log_scale.exp()


class OnebitNet(nn.Module):
    """input_quant -> blocks (conv blocks, flatten at `flatten_at`, linear blocks) -> score -> score_scale.

    `forward` returns the scaled scores used by the loss; `integer_scores` returns the score layer's
    integer accumulators (int64), which is what the accelerator computes and verification compares.
    """

    def __init__(self, arch: dict[str, Any], estimator: Estimator) -> None:
        super().__init__()
        self.arch = arch
        self.estimator = estimator
        channels, height, width = arch["in_shape"]
        self.input_quant = InputQuant(arch["input_bits"])
        self.blocks = nn.ModuleList()
        dropout = float(arch.get("dropout", 0.0))
        role = "first"
        features = channels * height * width

        if arch["name"] == "cnv":
            padding = arch["first_padding"]
            for out_ch, pool in zip(arch["channels"], arch["pool"]):
                layer = estimator.conv(channels, out_ch, KERNEL_SIZE, padding, role=role)
                height, width = height + 2 * padding - KERNEL_SIZE + 1, width + 2 * padding - KERNEL_SIZE + 1
                self.blocks.append(
                    BinaryBlock(
                        layer,
                        nn.BatchNorm2d(out_ch, eps=BN_EPS),
                        estimator.activation(out_ch, role=role),
                        nn.MaxPool2d(2) if pool else None,
                    )
                )
                if pool:
                    height, width = height // 2, width // 2
                channels, padding, role = out_ch, 0, "hidden"
            features = channels * height * width
            widths = arch["fc"]
        else:
            widths = arch["hidden"]
        # Index of the first fully connected block: the forward flattens (N, C, H, W) right before it.
        self.flatten_at = len(self.blocks)
        self.flatten = nn.Flatten()
        for out_f in widths:
            self.blocks.append(
                BinaryBlock(
                    estimator.linear(features, out_f, role=role),
                    nn.BatchNorm1d(out_f, eps=BN_EPS),
                    estimator.activation(out_f, role=role),
                    None,
                    nn.Dropout(dropout) if dropout > 0 else None,
                )
            )
            features, role = out_f, "hidden"
        self.score = estimator.linear(features, arch["num_classes"], role="score")
        # Integer scores grow like sqrt(fan-in) for random +-1 inputs; start the softmax near unit scale.
        self.score_scale = ScoreScale(1.0 / math.sqrt(features))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The +-1 input of the score layer."""
        x = self.input_quant(x)
        for index, block in enumerate(self.blocks):
            if index == self.flatten_at:
                x = self.flatten(x)
            x = block(x)
        if self.flatten_at == len(self.blocks):
            x = self.flatten(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.score_scale(self.score(self.features(x)))

    @torch.no_grad()
    def integer_scores(self, x: torch.Tensor) -> torch.Tensor:
        """The class scores as the accelerator computes them: sum(sign(w) * a), int64 (N, classes).

        Uses the score layer's binary weights directly, so any positive scalar scale an estimator
        keeps in the score layer is dropped; a per-class scale would change the argmax and is refused.
        """
        sign, scale = self.score.binary_weight_and_scale()
        if scale.numel() > 1 and not torch.all(scale == scale.reshape(-1)[0]):
            raise OnebitError(
                "layer 'score' has a per-class weight scale, which changes the argmax of the integer "
                "scores; the estimator must give the score layer one scale for all classes"
            )
        z = torch.nn.functional.linear(self.features(x), sign.to(x.device, torch.float32))
        return z.round().to(torch.int64)


# The keys an architecture takes (`--arch KEY=JSON`); an estimator may record its own beside them (BinaryDuo).
COMMON_KEYS: tuple[str, ...] = ("in_shape", "num_classes", "input_bits", "dropout")
MLP_KEYS: tuple[str, ...] = ("hidden",)
CNV_KEYS: tuple[str, ...] = ("channels", "pool", "fc", "first_padding")


def check_arch_keys(name: str, keys: Any, where: str = "--arch") -> None:
    """Refuse keys topology `name` does not have (a typo like `hiden` would train the default network)."""
    known = COMMON_KEYS + (CNV_KEYS if name == "cnv" else MLP_KEYS)
    unknown = [key for key in keys if key not in known]
    if unknown:
        raise OnebitError(f"{where}: {name} has no key {unknown[0]!r}; its keys are {', '.join(known)}")


def complete_arch(arch: dict[str, Any]) -> dict[str, Any]:
    """A copy of `arch` with every default filled in and checked; OnebitError for bad values."""
    if not isinstance(arch, dict):
        raise OnebitError(f"architecture must be a dict, got {type(arch).__name__}")
    result = dict(arch)
    name = str(result.get("name", "")).lower()
    if name not in ARCHITECTURES:
        raise OnebitError(f"unknown architecture {result.get('name')!r}; known: {', '.join(ARCHITECTURES)}")
    result["name"] = name
    in_shape = result.get("in_shape")
    if (
        not isinstance(in_shape, (list, tuple))
        or len(in_shape) != 3
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in in_shape)
    ):
        raise OnebitError(f"architecture {name}: in_shape must be [C, H, W] of positive ints, got {in_shape!r}")
    result["in_shape"] = [int(v) for v in in_shape]
    if math.prod(result["in_shape"]) > MAX_INPUT_VALUES:
        raise OnebitError(f"architecture {name}: in_shape {result['in_shape']} has {math.prod(result['in_shape']):,} "
                          f"values per image, more than onebit's limit {MAX_INPUT_VALUES:,} (MAX_INPUT_VALUES); "
                          "resize the images")
    result["num_classes"] = _positive_int(name, "num_classes", result.get("num_classes"))
    input_bits = result.get("input_bits", 8)
    if isinstance(input_bits, bool) or input_bits not in (8, 1):
        raise OnebitError(f"architecture {name}: input_bits must be the integer 8 or 1, got {input_bits!r}")
    result["input_bits"] = int(input_bits)
    dropout = result.get("dropout", 0.0)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise OnebitError(f"architecture {name}: dropout must be a number in [0, 1) (0 = none), got {dropout!r}")
    result["dropout"] = float(dropout)

    if name in MLP_WIDTHS:
        result["hidden"] = _width_list(name, "hidden", result.get("hidden", [MLP_WIDTHS[name]] * 3))
        widths = [math.prod(result["in_shape"])] + result["hidden"] + [result["num_classes"]]
        _check_weights(name, sum(a * b for a, b in zip(widths, widths[1:])))
        return result

    result["channels"] = _width_list(name, "channels", result.get("channels", CNV_CHANNELS))
    if "pool" in result:
        pool = result["pool"]
        if not isinstance(pool, (list, tuple)) or len(pool) != len(result["channels"]) \
                or not all(isinstance(p, bool) for p in pool):
            raise OnebitError(f"architecture cnv: pool must be a list of {len(result['channels'])} booleans")
        result["pool"] = [bool(p) for p in pool]
    elif len(result["channels"]) == len(CNV_CHANNELS):
        result["pool"] = list(CNV_POOL)
    else:
        # bnn_pynq's pattern for other depths: pool after every second conv except the last pair.
        n = len(result["channels"])
        result["pool"] = [i % 2 == 1 and i < n - 2 for i in range(n)]
    result["fc"] = _width_list(name, "fc", result.get("fc", CNV_FC), allow_empty=True)
    if "first_padding" in result:
        padding = result["first_padding"]
        if isinstance(padding, bool) or not isinstance(padding, int) or not 0 <= padding <= 16:
            raise OnebitError(f"architecture cnv: first_padding must be an integer in 0..16, got {padding!r}")
    else:
        result["first_padding"] = _needed_first_padding(result)
    if result["first_padding"] and result["input_bits"] == 1:
        # Zero padding of a +-1 map would introduce a third value that no binary layer computes.
        raise OnebitError(
            f"architecture cnv: input {result['in_shape'][1]}x{result['in_shape'][2]} needs padding "
            f"{result['first_padding']} in the first conv, which is exact only with input_bits=8 "
            "(zero is a valid pixel, not a +-1 value); use input_bits=8 or larger images"
        )
    height, width = _cnv_spatial(result, result["first_padding"])
    if height < 1 or width < 1:
        raise OnebitError(
            f"architecture cnv: input {result['in_shape'][1]}x{result['in_shape'][2]} is too small for "
            f"{len(result['channels'])} unpadded 3x3 convs with first_padding={result['first_padding']}"
        )
    channels = [result["in_shape"][0]] + result["channels"]
    fc = [result["channels"][-1] * height * width] + result["fc"] + [result["num_classes"]]
    _check_weights(name, sum(9 * a * b for a, b in zip(channels, channels[1:]))
                   + sum(a * b for a, b in zip(fc, fc[1:])))
    return result


def _check_weights(name: str, count: int) -> None:
    if count > MAX_WEIGHTS:
        raise OnebitError(f"architecture {name}: {count:,} binary weights, more than onebit's limit {MAX_WEIGHTS:,} "
                          "(MAX_WEIGHTS); use fewer or narrower layers")


def _positive_int(name: str, key: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise OnebitError(f"architecture {name}: {key} must be a positive int, got {value!r}")
    if value > MAX_WIDTH:
        raise OnebitError(f"architecture {name}: {key} {value:,} is more than onebit's limit {MAX_WIDTH:,} per layer "
                          "(MAX_WIDTH)")
    return int(value)


def _width_list(name: str, key: str, value: Any, allow_empty: bool = False) -> list[int]:
    if not isinstance(value, (list, tuple)) or (not value and not allow_empty):
        raise OnebitError(f"architecture {name}: {key} must be a list of positive ints, got {value!r}")
    return [_positive_int(name, key, v) for v in value]


def _cnv_spatial(arch: dict[str, Any], first_padding: int) -> tuple[int, int]:
    _, height, width = arch["in_shape"]
    padding = first_padding
    for pool in arch["pool"]:
        height, width = height + 2 * padding - KERNEL_SIZE + 1, width + 2 * padding - KERNEL_SIZE + 1
        if height < 1 or width < 1:
            return 0, 0
        if pool:
            height, width = height // 2, width // 2
        padding = 0
    return height, width


def _needed_first_padding(arch: dict[str, Any]) -> int:
    """0 where the unpadded stack fits, else the smallest first-conv padding that makes it fit
    (2 for 28x28 MNIST-like inputs, which then behave like 32x32)."""
    for padding in range(0, 16):
        height, width = _cnv_spatial(arch, padding)
        if height >= 1 and width >= 1:
            return padding
    return 0  # hopeless; complete_arch reports the input as too small


def build_model(arch: dict[str, Any], estimator: Estimator) -> OnebitNet:
    """The `OnebitNet` for `arch` (completed with defaults) whose layers come from `estimator`."""
    arch = complete_arch(arch)
    estimator.on_build(arch)
    return OnebitNet(arch, estimator)


def default_arch(name: str, in_shape: list[int], num_classes: int, input_bits: int = 8, **overrides: Any) -> dict[str, Any]:
    """The completed arch dict of a named topology for a dataset's shape."""
    return complete_arch(
        {"name": name, "in_shape": list(in_shape), "num_classes": num_classes, "input_bits": input_bits, **overrides}
    )
