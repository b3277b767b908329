"""Where ONNX Runtime's QDQ int8 model loses precision, per float conv layer.

* :func:`conv_node_layers` / :func:`conv_nodes_of_layers`: which Conv nodes of an exported ONNX graph compute which
  float conv layer (the dynamo exporter's module scopes): ``--keep-float`` names layers, ``nodes_to_exclude``
  takes nodes;
* :func:`onnx_layer_errors`: every quantized conv layer's propagated, isolated, weight and output-rounding SQNR,
  with ``onnxruntime.quantization.qdq_loss_debug``.

``quant-report``'s onnx section and the onnx exporter's ``--keep-float auto`` rank layers with it.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import numpy as np
from torch import nn

from .._io import private_workdir
from ..errors import ExportError
from ..manifest import INPUT_NAME
from . import debug

__all__ = ["conv_node_layers", "conv_nodes_by_layer", "conv_nodes_of_layers", "OnnxLayerError", "onnx_layer_errors", "quiet_root_logger",
           "ONNX_FLOAT_SAVED_OPS", "ONNX_INT8_SAVED_OPS"]


def conv_node_layers(model_proto: Any, reference: Any) -> dict[str, str]:
    """Every ONNX Conv node of ``model_proto`` that computes a float conv layer of ``reference``: node name ->
    layer name (graph order).

    A node is matched by the module scopes the dynamo exporter records on it
    (``pkg.torch.onnx.name_scopes``): the innermost scope that is a conv, or the BatchNorm the exporter folded
    into the conv, which stands for the conv that ran just before it (execution order from a forward pass).
    A layer used twice (PointRend's point head runs once per subdivision step) has one node per use."""
    import ast

    import torch
    from torch import nn

    modules = dict(reference.named_modules())
    order: list[str] = []
    hooks = [m.register_forward_pre_hook(lambda mod, args, n=name: order.append(n))
             for name, m in modules.items() if name and isinstance(m, (nn.Conv1d, nn.Conv2d, nn.BatchNorm2d))]
    try:
        with torch.no_grad():
            reference.eval()(torch.zeros(1, 3, 256, 192))
    finally:
        for h in hooks:
            h.remove()
    conv_before = {}
    last = None
    for name in order:
        if isinstance(modules[name], nn.BatchNorm2d):
            conv_before[name] = last
        else:
            last = name
    found: dict[str, str] = {}
    for node in model_proto.graph.node:
        if node.op_type != "Conv":
            continue
        props = {p.key: p.value for p in node.metadata_props}
        try:
            scopes = ast.literal_eval(props.get("pkg.torch.onnx.name_scopes", "[]"))
        except (ValueError, SyntaxError):
            scopes = []
        for scope in reversed(scopes):
            module = modules.get(scope)
            if isinstance(module, (nn.Conv1d, nn.Conv2d)) or isinstance(module, nn.BatchNorm2d):
                layer = scope if not isinstance(module, nn.BatchNorm2d) else conv_before.get(scope)
                if layer is not None:
                    found[node.name] = layer
                break
    return found


def conv_nodes_by_layer(model_proto: Any, reference: Any) -> dict[str, list[str]]:
    """:func:`conv_node_layers` inverted: each float conv layer -> the Conv nodes that compute it (graph order;
    a layer used twice has a node per use)."""
    found: dict[str, list[str]] = {}
    for node, layer in conv_node_layers(model_proto, reference).items():
        found.setdefault(layer, []).append(node)
    return found


def conv_nodes_of_layers(model_proto: Any, reference: Any, layers: Sequence[str]) -> dict[str, list[str]]:
    """The ONNX Conv nodes that compute each float conv layer of ``reference`` named in ``layers``
    (:func:`conv_nodes_by_layer`); an :class:`ExportError` names the layers no node computes."""
    by_layer = conv_nodes_by_layer(model_proto, reference)
    found = {layer: by_layer.get(layer, []) for layer in layers}
    missing = [layer for layer, nodes in found.items() if not nodes]
    if missing:
        raise ExportError(f"--keep-float: no Conv node of the ONNX graph computes {', '.join(missing)} (the exporter's "
                          "name scopes did not name it); give other layers, or keep them float in the .ptl")
    return found


#: the float model's tensors qdq_loss_debug saves: every conv's input and output (ReLU folded into it in the QDQ graph)
ONNX_FLOAT_SAVED_OPS = ("Conv", "Relu")
#: the QDQ model's: every tensor before its QuantizeLinear and after its DequantizeLinear
ONNX_INT8_SAVED_OPS = ("QuantizeLinear", "DequantizeLinear")


@dataclass
class OnnxLayerError(debug.LayerError):
    """A float conv layer's error in the QDQ model (all its Conv nodes together)."""

    nodes: list[str] = field(default_factory=list)  # the QDQ model's Conv nodes computing this layer
    #: the dequantized int8 weights vs the float weights (``create_weight_matching``; worst node)
    weight_sqnr_db: Optional[float] = None
    #: this layer's output (ReLU applied where QDQ folds it) before vs after its own QuantizeLinear/DequantizeLinear
    #: pair: the output rounding and clipping alone
    output_qdq_sqnr_db: Optional[float] = None

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d["weight_sqnr_db"] = debug.finite(self.weight_sqnr_db)
        d["output_qdq_sqnr_db"] = debug.finite(self.output_qdq_sqnr_db)
        return d


@dataclass
class _OnnxConv:
    """One quantized Conv node of the QDQ graph and the tensors that compare it with the float graph."""

    node: str
    layer: str
    keepable: bool
    input_act: Optional[str]  # the float tensor its int8 input is quantized from (a tensor of the float graph too)
    output_act: str  # its output before requantization (Relu folded in): the float graph has the same tensor
    output: str  # what the next layer reads: the output after its DequantizeLinear (output_act if not requantized)
    weight: Optional[str]  # the float weight initializer's name
    input_q: Optional[tuple[float, int]]
    output_scale: Optional[float]


def _onnx_convs(qdq: Any, layer_of: Mapping[str, str]) -> list[_OnnxConv]:
    """The QDQ model's quantized Conv nodes (graph order) with their tensors (``layer_of``: node -> float layer)."""
    from onnx import numpy_helper
    from onnxruntime.quantization.quant_utils import TENSOR_NAME_QUANT_SUFFIX

    inits = {i.name: i for i in qdq.graph.initializer}
    produced = {o: n for n in qdq.graph.node for o in n.output}
    consumers: dict[str, list[Any]] = {}
    for n in qdq.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def scalar(name: str) -> Optional[float]:
        return float(numpy_helper.to_array(inits[name]).reshape(-1)[0]) if name in inits else None

    def user(tensor: str, op: str) -> Any:
        return next((c for c in consumers.get(tensor, []) if c.op_type == op), None)

    out = []
    for n in qdq.graph.node:
        dq = produced.get(n.input[0]) if n.op_type == "Conv" else None
        if dq is None or dq.op_type != "DequantizeLinear":
            continue  # not a Conv, or a float one (nodes_to_exclude)
        q = produced.get(dq.input[0])
        quantized_input = q is not None and q.op_type == "QuantizeLinear"
        qo = user(n.output[0], "QuantizeLinear")
        dqo = user(qo.output[0], "DequantizeLinear") if qo is not None else None
        wdq = produced.get(n.input[1]) if len(n.input) > 1 else None
        weight = (wdq.input[0][:-len(TENSOR_NAME_QUANT_SUFFIX)] if wdq is not None and wdq.op_type == "DequantizeLinear"
                  and wdq.input[0].endswith(TENSOR_NAME_QUANT_SUFFIX) else None)
        zp = scalar(q.input[2]) if quantized_input and len(q.input) > 2 else 0.0
        scale = scalar(q.input[1]) if quantized_input else None
        out.append(_OnnxConv(
            node=n.name, layer=layer_of.get(n.name, n.name), keepable=n.name in layer_of,
            input_act=q.input[0] if quantized_input else None, output_act=n.output[0],
            output=dqo.output[0] if dqo is not None else n.output[0], weight=weight,
            input_q=(scale, int(zp or 0)) if scale is not None else None,
            output_scale=scalar(qo.input[1]) if qo is not None else None))
    return out


def _onnx_subgraph(model: Any, input_name: str, output_name: str) -> Any:
    """The nodes of ``model`` between tensor ``input_name`` and ``output_name`` as a model of their own (a
    layer's QuantizeLinear -> DequantizeLinear -> Conv -> QuantizeLinear -> DequantizeLinear, weights included)."""
    from onnx import TensorProto, helper

    inits = {i.name: i for i in model.graph.initializer}
    produced = {o: n for n in model.graph.node for o in n.output}
    keep: set[int] = set()
    used: set[str] = set()
    stack = [output_name]
    while stack:
        tensor = stack.pop()
        if not tensor or tensor == input_name:
            continue
        if tensor in inits:
            used.add(tensor)
            continue
        node = produced[tensor]
        if id(node) not in keep:
            keep.add(id(node))
            stack.extend(node.input)
    graph = helper.make_graph([n for n in model.graph.node if id(n) in keep], "isolated-layer",
                              [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, None)],
                              initializer=[inits[name] for name in sorted(used)])
    return helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)


def _ort_options(*, arena: bool = True) -> Any:
    """The session options qdq_loss_debug runs with (no graph optimization: Q/DQ computed as written), quiet.
    ``arena=False``: no CPU memory arena, for sessions kept open side by side (one per layer), which would each
    keep the largest buffers they ever ran with."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    options.enable_cpu_mem_arena = arena
    return options


#: the suffix qdq_loss_debug gives the model outputs it adds (one per saved tensor)
_SAVED_SUFFIX = "_ReshapedSavedOutput"


def _keep_saved_shapes(path: Path) -> None:
    """qdq_loss_debug saves every tensor flattened (a Reshape to [-1]); the isolated check feeds the float
    model's conv inputs to int8 subgraphs, so here the saved tensors keep their shapes (Identity)."""
    import onnx

    model = onnx.load(str(path))
    for node in model.graph.node:
        if node.op_type == "Reshape" and node.output[0].endswith(_SAVED_SUFFIX):
            del node.input[1:]
            node.op_type = "Identity"
    for out in model.graph.output:
        if out.name.endswith(_SAVED_SUFFIX):
            out.type.tensor_type.ClearField("shape")
    onnx.save(model, str(path))


@contextlib.contextmanager
def _workdir(prefix: str) -> Iterator[Path]:
    """The ONNX exporter's private working folder (the ORT tools write files into the cwd), with stdout sent to
    stderr (``--json`` owns stdout)."""
    with private_workdir(prefix) as folder, contextlib.redirect_stdout(sys.stderr):
        yield folder


@contextlib.contextmanager
def quiet_root_logger() -> Iterator[None]:
    """ONNX Runtime's quantization tools log through the root logger (an error per bias shared between Conv nodes,
    a warning when 16-bit activations raise the opset): silenced while they run, restored afterwards."""
    import logging

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        root.setLevel(level)


def _power_sums(ref: Sequence[np.ndarray], out: Sequence[np.ndarray]) -> tuple[float, float, float]:
    """``compute_activation_error``'s ``err_func``: signal and noise power and max |error|, to sum over images."""
    p = debug.PowerSums()
    for r, o in zip(ref, out):
        p.add(r, o)
    return p.signal, p.noise, p.max_abs


def onnx_layer_errors(float_path: Path, qdq_path: Path, reference: nn.Module, inputs: Sequence[np.ndarray], *,
                      progress: Callable[[int], None] | None = None) -> list[OnnxLayerError]:
    """SQNR of every quantized float conv layer of the QDQ model ``qdq_path`` against the float ONNX model
    ``float_path`` (the model it was quantized from), on ``inputs``, in graph order; layer names from the
    exporter's module scopes (:func:`conv_node_layers`, ``reference``: the float model).

    With ``onnxruntime.quantization.qdq_loss_debug``: both models augmented to output their intermediate
    tensors (``modify_model_output_intermediate_tensors``), run (``collect_activations``), matched by tensor name
    (``create_activation_matching``) and compared (``compute_activation_error``): the propagated error of each
    conv's requantized output against the float model's, and its output rounding alone; weights by
    ``create_weight_matching`` / ``compute_weight_error``. The isolated error: each layer's int8 subgraph
    (input QuantizeLinear to output DequantizeLinear) run on the float model's input to that layer."""
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import qdq_loss_debug as qdl


    float_path, qdq_path = Path(float_path).resolve(), Path(qdq_path).resolve()
    qdq, float_model = onnx.load(str(qdq_path)), onnx.load(str(float_path), load_external_data=False)
    convs = _onnx_convs(qdq, conv_node_layers(float_model, reference))
    # the QDQ graph folds a conv's ReLU into its output QuantizeLinear (the tensor keeps the ReLU's name, holding the
    # conv's output): the rounding alone compares the ReLU of it with the dequantized output
    relu_outputs = {n.output[0] for n in float_model.graph.node if n.op_type == "Relu"}
    prop, local, rounding = ({c.layer: debug.PowerSums() for c in convs} for _ in range(3))
    options = _ort_options()
    with _workdir(".alisnet-quant-report-qdq-debug.") as work:
        with quiet_root_logger():  # it logs an error for every bias duplicated per use (point head): not weights
            weight_sqnr = qdl.compute_weight_error(qdl.create_weight_matching(str(float_path), str(qdq_path)))
        saving_float, saving_int8 = work / "float.saving.onnx", work / "int8.saving.onnx"
        qdl.modify_model_output_intermediate_tensors(str(float_path), str(saving_float),
                                                     op_types_for_saving=list(ONNX_FLOAT_SAVED_OPS))
        _keep_saved_shapes(saving_float)
        qdl.modify_model_output_intermediate_tensors(str(qdq_path), str(saving_int8),
                                                     op_types_for_saving=list(ONNX_INT8_SAVED_OPS))
        alone_options = _ort_options(arena=False)
        isolated = {c.node: ort.InferenceSession(_onnx_subgraph(qdq, c.input_act, c.output).SerializeToString(), alone_options,
                                                 providers=["CPUExecutionProvider"]) for c in convs if c.input_act}
        for i, x in enumerate(inputs):
            feed = [{INPUT_NAME: np.ascontiguousarray(x, dtype=np.float32)}]
            floats = qdl.collect_activations(str(saving_float), feed, session_options=options)
            floats.setdefault(INPUT_NAME, [feed[0][INPUT_NAME]])
            matched = {k: v for k, v in qdl.create_activation_matching(
                qdl.collect_activations(str(saving_int8), feed, session_options=options), floats).items() if "float" in v}
            for name in relu_outputs & matched.keys():
                matched[name]["pre_qdq"] = [np.maximum(a, 0) for a in matched[name]["pre_qdq"]]
            errors = qdl.compute_activation_error(matched, err_func=_power_sums)
            for c in convs:
                if c.output_act in errors:
                    prop[c.layer].merge(errors[c.output_act]["xmodel_err"])
                    rounding[c.layer].merge(errors[c.output_act]["qdq_err"])
                if c.node in isolated and c.input_act in floats and c.output_act in floats:
                    alone = isolated[c.node].run(None, {c.input_act: floats[c.input_act][0]})[0]
                    local[c.layer].add(floats[c.output_act][0], alone)
            del floats, matched, errors
            if progress:
                progress(i + 1)
    first: dict[str, _OnnxConv] = {}
    nodes: dict[str, list[str]] = {}
    for c in convs:
        first.setdefault(c.layer, c)
        nodes.setdefault(c.layer, []).append(c.node)
    out = []
    for order, (layer, c) in enumerate(first.items()):
        weights = [weight_sqnr[w.weight] for w in convs if w.layer == layer and w.weight in weight_sqnr]
        out.append(debug.conv_layer_error(order, layer, c.keepable, prop[layer], local[layer], input_q=c.input_q,
                                output_scale=c.output_scale, cls=OnnxLayerError, nodes=nodes[layer],
                                weight_sqnr_db=min(weights) if weights else None,
                                output_qdq_sqnr_db=rounding[layer].sqnr_db if rounding[layer].calls else None))
    return out
