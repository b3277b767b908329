"""Mixed precision for the eager QNNPACK int8 model: chosen layers run in float, the rest stays int8.

Built by surgery on a converted int8 model (:func:`eager.convert`), not by re-calibrating: in eager
post-training quantization the observers see float activations whatever else is quantized, so the
ranges a layer's neighbours were calibrated with do not change when that layer goes back to float.

* :func:`keep_layers_float`: each named quantized conv/linear becomes a :class:`FloatIsland`
  (dequantize -> the float layer, BatchNorm folded -> quantize with the int8 layer's own output
  scale and zero point), so everything around it stays int8. Same effect as giving the module no
  qconfig with quant/dequant stubs around it, without a second calibration.
* :func:`only_layers_int8`: the reverse, on the fused float model: each named layer becomes an
  :class:`Int8Island` (quantize with the scale its input had in the int8 model -> the int8 layer ->
  dequantize); everything else is float.
The ``--keep-float`` option and its ``auto`` search live in :mod:`.keep_float`, above this module and the
debugger it uses.

Only weighted layers (quantized Conv1d/Conv2d, fused with BN/ReLU, and Linear) can be kept float;
the int8 adds (``QFunctional``) and the quant stubs are reported by the debugger but stay int8.
"""

from __future__ import annotations

import copy
from typing import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.ao.nn.quantized import DeQuantize, Quantize

from . import eager

__all__ = [
    "FloatIsland",
    "Int8Island",
    "float_twin",
    "weighted_layers",
    "keep_layers_float",
    "only_layers_int8",
    "float_layer_extra_bytes",
    "float_layer_names",
    "check_layer_names",
]

_QUANT_LINEAR = (torch.ao.nn.quantized.Linear,)


class FloatIsland(nn.Module):
    """A float layer inside an int8 model: dequantize, run ``module`` in float, quantize its output."""

    def __init__(self, module: nn.Module, scale: float, zero_point: int) -> None:
        super().__init__()
        self.dequant = DeQuantize()
        self.module = module
        self.quant = Quantize(float(scale), int(zero_point), torch.quint8)

    def forward(self, x: Tensor) -> Tensor:
        return self.quant(self.module(self.dequant(x)))


class Int8Island(nn.Module):
    """An int8 layer inside a float model: quantize its input as the int8 model did, run it, dequantize."""

    def __init__(self, module: nn.Module, scale: float, zero_point: int) -> None:
        super().__init__()
        self.quant = Quantize(float(scale), int(zero_point), torch.quint8)
        self.module = module
        self.dequant = DeQuantize()

    def forward(self, x: Tensor) -> Tensor:
        return self.dequant(self.module(self.quant(x)))


def float_twin(source: nn.Module) -> nn.Module:
    """``source`` (the float model int8 was quantized from) fused the way :func:`eager.prepare` fuses it
    (Conv-BN(-ReLU) folded), in eval mode and without observers: its modules have the int8 model's names."""
    twin = copy.deepcopy(source).eval()
    twin.fuse_model(is_qat=False)
    return twin


def _is_weighted(module: nn.Module) -> bool:
    return isinstance(module, (eager._QuantizedConv, *_QUANT_LINEAR))


def weighted_layers(converted: nn.Module) -> list[str]:
    """Names of the quantized conv/linear layers of a converted model (module order), the ones that can be kept float."""
    return [name for name, m in converted.named_modules() if name and _is_weighted(m)]


def _set_module(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)


def _float_layer(float_source: nn.Module | Callable[[str], nn.Module], name: str) -> nn.Module:
    if callable(float_source) and not isinstance(float_source, nn.Module):
        return float_source(name)
    module = copy.deepcopy(float_source.get_submodule(name))
    to_float = getattr(module, "to_float", None)  # a QAT module (ConvBnReLU2d...): fold BN, drop fake-quant
    if to_float is not None and hasattr(module, "weight_fake_quant"):
        module = to_float()
    return module.eval()


def keep_layers_float(converted: nn.Module, float_source: nn.Module | Callable[[str], nn.Module],
                      names: Sequence[str]) -> nn.Module:
    """A copy of ``converted`` with each layer of ``names`` in float (a :class:`FloatIsland`).

    ``float_source``: the fused float model (:func:`float_twin`) or a QAT model with the same names,
    or a callable ``name -> float module``. Unknown or non-weighted names raise ``KeyError``/``ValueError``.
    """
    model = copy.deepcopy(converted)
    for name in names:
        try:
            quantized = model.get_submodule(name)
        except AttributeError:
            raise KeyError(f"no layer {name!r} in the int8 model") from None
        if not _is_weighted(quantized):
            raise ValueError(f"layer {name!r} ({type(quantized).__name__}) is not a quantized conv/linear; only those can be kept float")
        _set_module(model, name, FloatIsland(_float_layer(float_source, name), quantized.scale, quantized.zero_point))
    return model.eval()


def only_layers_int8(twin: nn.Module, converted: nn.Module, names: Sequence[str],
                     input_qparams: dict[str, tuple[float, int]]) -> nn.Module:
    """A copy of the fused float model ``twin`` where only the layers of ``names`` run int8 (each an
    :class:`Int8Island` quantizing its input with ``input_qparams[name]``, the scale and zero point its
    input had in the int8 model; see :func:`..debug.layer_errors`)."""
    model = copy.deepcopy(twin)
    for name in names:
        scale, zero_point = input_qparams[name]
        _set_module(model, name, Int8Island(copy.deepcopy(converted.get_submodule(name)), scale, zero_point))
    return model.eval()


def float_layer_extra_bytes(converted: nn.Module, name: str) -> int:
    """About how many bytes keeping ``name`` float adds: 4 instead of 1 byte per weight (fp32 vs int8)."""
    module = converted.get_submodule(name)
    weight = module.weight()
    return 3 * int(weight.numel())


def float_layer_names(model: nn.Module) -> list[str]:
    """Names of the conv/linear layers of a *float* model (module order): the names ``--keep-float`` takes in
    every format. They are the names of the int8 layers too (eager fusion keeps the conv's name)."""
    kinds = (nn.Conv1d, nn.Conv2d, nn.Linear)
    return [name for name, m in model.named_modules() if name and isinstance(m, kinds)]


def check_layer_names(layers: Sequence[str], known: Sequence[str]) -> None:
    """:class:`DataError` naming the ``layers`` that are not in ``known``, with examples of known ones."""
    unknown = [n for n in layers if n not in set(known)]
    if unknown:
        from ..errors import DataError

        raise DataError(f"--keep-float: not a quantized conv/linear layer of this model: {', '.join(unknown)} "
                        f"(`alisnet-export quant-report` lists them; e.g. {', '.join(sorted(known)[:3])})")
