"""Where a PT2E int8 graph (XNNPACK quantizer) loses precision, per float conv layer.

:func:`pte_layer_errors`: every quantized conv of the converted coarse graph against the exported float graph,
propagated with torchao's numeric debugger and isolated by re-running the converted graph on the float
model's inputs (:class:`_FloatInputs`). ``quant-report``'s pte section and the pte exporter's
``--keep-float auto`` rank layers with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence

import torch
from torch import nn

from . import debug

__all__ = ["pte_layer_errors"]


_RELUS = ("aten.relu.default", "aten.relu_.default", "aten.hardtanh.default", "aten.hardtanh_.default")
_BATCH_NORMS = ("aten.batch_norm.default", "aten._native_batch_norm_legit_no_training.default")


def _target_name(node: Any) -> str:
    return str(node.target) if node.op == "call_function" else ""


@dataclass
class _PteConv:
    """A quantized conv of the converted coarse graph: where its int8 output is read, and its float layer."""

    layer: str
    end: str  # the node whose debug handle names the output (the ReLU after the conv, else the conv)
    output: Optional[str]  # the dequantize node after it: what the next layer reads
    input_q: Optional[tuple[float, int]]
    output_scale: Optional[float]


def _module_path(node: Any, prefix: str = "model.") -> Optional[str]:
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return None
    path = list(stack.values())[-1]
    path = path[0] if isinstance(path, tuple) else str(path)
    return path[len(prefix):] if path.startswith(prefix) else path


def _pte_convs(converted: nn.Module) -> list[_PteConv]:
    """The converted graph's quantized convs in graph order (input from a dequantize node)."""
    def number(v: Any) -> Optional[float]:
        return float(v) if isinstance(v, (int, float)) else None

    out = []
    for n in converted.graph.nodes:
        if _target_name(n) != "aten.conv2d.default" or "dequantize_per_tensor" not in _target_name(n.args[0]):
            continue
        users = list(n.users)
        end = users[0] if len(users) == 1 and _target_name(users[0]) in _RELUS else n
        q = next((u for u in end.users if "quantize_per_tensor" in _target_name(u)
                  and "dequantize" not in _target_name(u)), None)
        dq = next((u for u in q.users if "dequantize_per_tensor" in _target_name(u)), None) if q is not None else None
        dq_in = n.args[0]
        scale, zp = number(dq_in.args[1]), number(dq_in.args[2])
        out.append(_PteConv(layer=_module_path(n) or n.name, end=end.name, output=dq.name if dq is not None else None,
                            input_q=(scale, int(zp)) if scale is not None and zp is not None else None,
                            output_scale=number(q.args[1]) if q is not None else None))
    return out


def _debug_names(logged: nn.Module) -> dict[str, str]:
    """Node name -> the name of its debug handle (its oldest ancestor in the exported graph), from the loggers
    ``prepare_for_propagation_comparison`` inserted."""
    from torchao.quantization.pt2e._numeric_debugger import OutputLogger

    return {m.node_name: m.debug_info.name for _, m in logged.named_children() if isinstance(m, OutputLogger)}


def _clear_loggers(logged: nn.Module) -> None:
    from torchao.quantization.pt2e._numeric_debugger import OutputLogger

    for _, m in logged.named_children():
        if isinstance(m, OutputLogger):
            m.stats.clear()


class _FloatInputs(torch.fx.Interpreter):
    """The converted graph run with every layer fed the float graph's value of its input: each activation quantize
    node quantizes the float graph's value of the same tensor (its producer's debug handle) for the layers after
    it, so each int8 layer sees the float model's input and its output error is the error it adds by itself. The
    ``watch`` dequantize nodes record what they dequantize from the graph's own value (the layer's int8 output)."""

    def __init__(self, graph_module: nn.Module, float_values: Mapping[str, torch.Tensor], debug_name: Mapping[str, str],
                 watch: set[str]) -> None:
        super().__init__(graph_module)
        self.float_values, self.debug_name, self.watch = float_values, debug_name, watch
        self.own: dict[str, torch.Tensor] = {}  # quantize node -> its output from the graph's own value
        self.recorded: dict[str, torch.Tensor] = {}

    def run_node(self, n: Any) -> Any:
        name = _target_name(n)
        if "dequantize_per_tensor" in name and n.name in self.watch and isinstance(n.args[0], torch.fx.Node) \
                and n.args[0].name in self.own:
            args, kwargs = self.fetch_args_kwargs_from_env(n)
            self.recorded[n.name] = n.target(self.own[n.args[0].name], *args[1:], **kwargs)
        elif "quantize_per_tensor" in name and "dequantize" not in name and isinstance(n.args[0], torch.fx.Node) \
                and n.args[0].op != "placeholder":
            value = self.float_values.get(self.debug_name.get(n.args[0].name, ""))
            if isinstance(value, torch.Tensor):
                args, kwargs = self.fetch_args_kwargs_from_env(n)
                if value.shape == args[0].shape:
                    self.own[n.name] = n.target(*args, **kwargs)
                    return n.target(value.to(args[0].dtype), *args[1:], **kwargs)
        result = super().run_node(n)
        if n.name in self.watch and n.name not in self.recorded:
            self.recorded[n.name] = result
        return result


@torch.no_grad()
def pte_layer_errors(float_graph: nn.Module, converted: nn.Module, inputs: Sequence[torch.Tensor], *,
                     keepable: Optional[Sequence[str]] = None,
                     progress: Callable[[int], None] | None = None) -> list[debug.LayerError]:
    """SQNR of every quantized conv of ``converted`` (the PT2E-converted coarse graph) against ``float_graph`` (the
    exported float coarse graph it was quantized from, :func:`.exporters.pte.export_coarse`) on ``inputs``, in
    graph order, named by the exporter graph's ``nn_module_stack`` (``model.`` stripped: the float layer names).

    torchao's numeric debugger logs every node of both graphs (``prepare_for_propagation_comparison``,
    ``extract_results_from_loggers``) and pairs them by debug handle (``compare_results``): the propagated
    error. Handles are matched by name (the two graphs come from two exports of the same model, whose
    node names agree), and a conv followed by BatchNorm in the float graph is compared after the BatchNorm
    (PT2E folds it into the conv). Isolated error: the converted graph re-run with each activation's quantize
    node fed the float graph's value (:class:`_FloatInputs`)."""
    from torchao.quantization.pt2e import compare_results, extract_results_from_loggers, prepare_for_propagation_comparison

    float_logged = prepare_for_propagation_comparison(float_graph)
    int8_logged = prepare_for_propagation_comparison(converted)
    float_handle, int8_handle = _debug_names(float_logged), _debug_names(int8_logged)
    folded = {}
    for n in float_graph.graph.nodes:
        users = list(n.users)
        if _target_name(n) == "aten.conv2d.default" and len(users) == 1 and _target_name(users[0]) in _BATCH_NORMS:
            folded[float_handle.get(n.name)] = float_handle.get(users[0].name)
    convs = _pte_convs(converted)
    keys = {c.layer: int8_handle.get(c.end) for c in convs}
    prop = {c.layer: debug.PowerSums() for c in convs}
    local = {c.layer: debug.PowerSums() for c in convs}
    try:
        for i, x in enumerate(inputs):
            float_logged(x)
            int8_logged(x)
            ref = {info.name: value for info, value in extract_results_from_loggers(float_logged).items()}
            for conv, bn in folded.items():
                if bn in ref:
                    ref[conv] = ref[bn]
            act = {info.name: value for info, value in extract_results_from_loggers(int8_logged).items()}
            wanted = {k for k in keys.values() if k in ref and k in act}
            comparisons = compare_results({k: ref[k] for k in wanted}, {k: act[k] for k in wanted})
            forced = _FloatInputs(converted, {k: v[2][0] for k, v in ref.items() if v[2]}, int8_handle,
                                  {c.output for c in convs if c.output})
            forced.run(x)
            for c in convs:
                key = keys[c.layer]
                for r in (comparisons[key].results if key in comparisons else []):
                    prop[c.layer].add(r.ref, r.actual)
                if key in ref and c.output in forced.recorded:
                    local[c.layer].add(ref[key][2][0], forced.recorded[c.output])
            _clear_loggers(float_logged)
            _clear_loggers(int8_logged)
            if progress:
                progress(i + 1)
    finally:
        _clear_loggers(float_logged)
        _clear_loggers(int8_logged)
    allowed = set(keepable) if keepable is not None else None
    return [debug.conv_layer_error(order, c.layer, allowed is None or c.layer in allowed, prop[c.layer], local[c.layer],
                         input_q=c.input_q, output_scale=c.output_scale) for order, c in enumerate(convs)]
