"""``--keep-float``: which layers of an eager int8 model stay float, given by name or found by ``auto``.

* :class:`KeepFloat`: the option (``LAYER,...`` or ``auto`` with its candidate count and size budget);
* :func:`search_keep_float`: the greedy ``auto`` search: adds layers to float, most helpful first, until the
  parity gate passes or the size budget would be exceeded; every step is recorded;
* :func:`auto_search`: the search end to end for any int8 path, given how to judge, size and debug it (the
  pte and onnx exporters call it with their own models);
* :func:`auto_keep_float`: :func:`auto_search` for the eager .ptl model, with the layers ranked by the
  debugger (:mod:`.debug`) and built by :mod:`.mixed_precision`;
* :func:`keep_float_for_export`: what the .ptl exporter calls.

It sits above both :mod:`.debug` and :mod:`.mixed_precision` (the debugger builds its what-if models with
mixed precision, and the search ranks layers with the debugger). Sizes are measured by a function the
exporter passes in, so nothing here imports an exporter.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor, nn

from . import debug
from .mixed_precision import check_layer_names, float_twin, keep_layers_float, weighted_layers

__all__ = ["KeepFloat", "SearchStep", "SearchResult", "search_keep_float", "default_max_size", "auto_search", "auto_keep_float", "RANKING_IMAGES", "manual_record", "calibration_logits",
           "keep_float_for_export"]


def default_max_size(variant: str, int8_size: int) -> int:
    """``--max-size`` default: the paper's 4.0 MB for ALiSNet-MnasNet, else the all-int8 size + 1.5 MB."""
    return 4_000_000 if variant == "alisnet_mnasnet" else int8_size + 1_500_000


@dataclass
class SearchStep:
    """One step of ``--keep-float auto``: the layers in float so far and what they measured."""

    added: Optional[str]  # the layer this step added (None: the all-int8 start)
    float_layers: list[str]
    size_bytes: int
    mean_iou: float
    min_iou: float
    mean_boundary_px: float
    passed: bool
    benefit_iou: Optional[float] = None  # the added layer's own measured benefit (IoU recovered alone)
    note: str = ""
    accepted: bool = True  # False: with the layers before it, this layer lowered the mean IoU, so it was dropped

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SearchResult:
    steps: list[SearchStep] = field(default_factory=list)
    stop_reason: str = ""

    @property
    def final(self) -> SearchStep:
        """The last accepted step: the layers the search keeps float."""
        return [s for s in self.steps if s.accepted][-1]

    def to_dict(self) -> dict[str, Any]:
        return {"steps": [s.to_dict() for s in self.steps], "stop_reason": self.stop_reason}


def search_keep_float(
    evaluate: Callable[[list[str]], Any],
    size_of: Callable[[list[str]], int],
    rank: Callable[[], Sequence[tuple[str, float]]],
    *,
    max_size: int,
    log: Callable[[str], None] = lambda m: None,
) -> SearchResult:
    """Greedy ``--keep-float auto``.

    ``evaluate(float_layers)`` -> a :class:`~..parity.ParityReport` of the model with those layers in
    float; ``size_of(float_layers)`` -> its artifact size in bytes; ``rank()`` -> ``(layer, benefit)`` in
    order of measured benefit (IoU recovered when that layer alone is float), best first: called once, and only
    when the all-int8 model fails its gate and is under ``max_size`` (a layer kept float only adds bytes). Adds layers
    until the gate passes, the next layer would exceed ``max_size``, or no remaining layer helps. A layer
    that lowers the mean IoU together with the ones already float is dropped again (recorded, not kept).
    """
    result = SearchResult()

    def record(added: Optional[str], layers: list[str], benefit: Optional[float], size: int) -> SearchStep:
        report = evaluate(layers)
        s = report.summary()
        step = SearchStep(added, list(layers), size, s["mean_iou"], s["min_iou"], s["mean_boundary_px"],
                          report.passed, benefit)
        result.steps.append(step)
        log(f"keep-float step {len(result.steps) - 1}: {added or 'all int8'}: {size / 1e6:.2f} MB, "
            f"IoU mean {step.mean_iou:.4f} (min {step.min_iou:.4f}), contour {step.mean_boundary_px:.2f} px, "
            f"{'PASSED' if step.passed else 'failed'}")
        return step

    layers: list[str] = []
    step = record(None, layers, None, size_of(layers))
    if step.passed:
        result.stop_reason = "the all-int8 model passes the parity gate; nothing kept float"
        return result
    if step.size_bytes >= max_size:  # a layer kept float only adds bytes (4 per weight instead of 1): nothing to rank
        result.stop_reason = (f"the all-int8 artifact is already {step.size_bytes / 1e6:.2f} MB, not under the "
                              f"{max_size / 1e6:.2f} MB budget: no layer can stay float; the gate still fails")
        return result
    for name, benefit in rank():
        if benefit <= 0:
            result.stop_reason = (f"no remaining layer improves the mask on its own (next: {name}, "
                                  f"IoU {benefit:+.4f}); the gate still fails")
            return result
        size = size_of(layers + [name])
        if size > max_size:
            result.stop_reason = (f"keeping {name} float too would make the artifact {size / 1e6:.2f} MB, over the "
                                  f"{max_size / 1e6:.2f} MB budget; the gate still fails")
            return result
        best = result.final
        step = record(name, layers + [name], benefit, size)
        if step.passed:
            result.stop_reason = f"the parity gate passes with {len(layers) + 1} layer(s) in float"
            return result
        if step.mean_iou <= best.mean_iou:
            step.accepted = False
            step.note = f"dropped: mean IoU {step.mean_iou:.4f} <= {best.mean_iou:.4f} without it"
            log(f"  {step.note}")
            continue
        layers = layers + [name]
    result.stop_reason = "every measured candidate was tried and the gate still fails"
    return result


def auto_search(
    evaluate: Callable[[list[str]], Any],
    size_of: Callable[[list[str]], int],
    layer_errors: Callable[[], Sequence[debug.LayerError]],
    *,
    variant: str,
    max_size: Optional[int] = None,
    candidates: int = 8,
    measured_on: str = "the calibration images",
    ranking_images: Optional[int] = None,
    log: Callable[[str], None] = lambda m: None,
) -> tuple[SearchResult, dict[str, Any]]:
    """``--keep-float auto`` for any int8 path: rank the ``candidates`` layers of lowest isolated SQNR
    (``layer_errors()``, run only if the all-int8 model fails its gate) by the IoU each recovers alone in float,
    then :func:`search_keep_float`.

    ``evaluate(float_layers)``: the parity report of the model with those layers float, against the float model
    on ``measured_on``; ``size_of(float_layers)``: that artifact's size in bytes. Both are called once per layer
    set; ``ranking_images``: how many images ``layer_errors`` measures (recorded). Returns the search and the
    manifest's ``keep_float`` record (layers, why, every step)."""
    reports: dict[tuple[str, ...], Any] = {}
    sizes: dict[tuple[str, ...], int] = {}

    def evaluate_once(layers: list[str]) -> Any:
        key = tuple(layers)
        if key not in reports:
            reports[key] = evaluate(list(layers))
        return reports[key]

    def size_once(layers: list[str]) -> int:
        key = tuple(layers)
        if key not in sizes:
            sizes[key] = size_of(list(layers))
        return sizes[key]

    int8_size = size_once([])
    budget = max_size if max_size is not None else default_max_size(variant, int8_size)
    attributions: list[debug.LayerAttribution] = []

    def rank() -> list[tuple[str, float]]:  # only where the search needs it (all int8 failing, under budget)
        log(f"measuring the {candidates} layers of lowest isolated SQNR, one at a time in float")
        worst = debug.worst_layers(layer_errors(), candidates)
        attributions.extend(debug.attribute_float_layers(worst, lambda layers, _name: evaluate_once(layers),
                                                         evaluate_once([]), progress=lambda n: log(f"  {n}")))
        return sorted(((a.name, a.iou_recovered) for a in attributions), key=lambda t: -t[1])

    result = search_keep_float(evaluate_once, size_once, rank, max_size=budget, log=log)
    final = result.final
    benefit = {a.name: a.iou_recovered for a in attributions}
    record = {
        "mode": "auto",
        "layers": final.float_layers,
        "max_size_bytes": budget,
        "int8_size_bytes": int8_size,
        "measured_on": measured_on,
        "ranked_by": "isolated SQNR" + (f" on {ranking_images} of those images" if ranking_images else "")
                     + f", the {candidates} lowest measured one at a time in float",
        "why": {name: f"kept float by --keep-float auto: alone in float it recovered {benefit[name]:+.4f} mean IoU "
                      f"vs float on {measured_on}" for name in final.float_layers},
        "stop_reason": result.stop_reason,
        "steps": [s.to_dict() for s in result.steps],
        "candidates": [a.to_dict() for a in attributions],
    }
    return result, record


def auto_keep_float(
    twin: nn.Module,
    converted: nn.Module,
    float_source: Any,
    reference_logits: Sequence[tuple[str, Any]],
    inputs: Sequence[Tensor],
    *,
    thresholds: Any,
    variant: str,
    size_bytes: Callable[[nn.Module], int],
    max_size: Optional[int] = None,
    candidates: int = 8,
    log: Callable[[str], None] = lambda m: None,
) -> tuple[nn.Module, SearchResult, dict[str, Any]]:
    """``--keep-float auto`` on an eager int8 model (the .ptl path): :func:`auto_search` with the layers ranked by
    :func:`..debug.layer_errors` (on the first :data:`RANKING_IMAGES` of ``inputs``) and built by
    :func:`.mixed_precision.keep_layers_float`, judged on ``inputs`` against the float logits ``reference_logits``
    with the int8 ``thresholds``.

    ``size_bytes(model)``: the artifact's size with that model (the .ptl exporter's ``lite_size_bytes``).
    Returns the chosen model, the search, and the record for the manifest (layers, why, every step).
    """
    def model_for(layers: Sequence[str]) -> nn.Module:
        return keep_layers_float(converted, float_source, layers) if layers else converted

    result, record = auto_search(
        lambda layers: debug.evaluate_model(model_for(layers), reference_logits, inputs, name="+".join(layers) or "int8",
                                            thresholds=thresholds),
        lambda layers: size_bytes(model_for(layers)),
        lambda: debug.layer_errors(twin, converted, inputs[:RANKING_IMAGES]),
        variant=variant, max_size=max_size, candidates=candidates, ranking_images=min(len(inputs), RANKING_IMAGES),
        log=log)
    return model_for(result.final.float_layers), result, record


@dataclass(frozen=True)
class KeepFloat:
    """Which layers an int8 export keeps in float: the named ``layers``, or with ``auto`` those
    :func:`auto_keep_float` picks (among ``candidates`` measured layers, within ``max_size`` bytes;
    None: :func:`default_max_size`)."""

    layers: tuple[str, ...] = ()
    auto: bool = False
    candidates: int = 8
    max_size: Optional[int] = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))
        if self.auto == bool(self.layers):
            raise ValueError("keep-float: give either layer names or auto, not both or neither")
        if self.candidates < 1:
            raise ValueError("keep-float: candidates must be at least 1")

    @classmethod
    def coerce(cls, value: Any) -> Optional["KeepFloat"]:
        """An exporter option's ``keep_float`` as a caller may give it: None or ``()`` (off), a :class:`KeepFloat`,
        ``"auto"``, layer names (a sequence), or a dict of the fields (options read back from JSON)."""
        if value is None or isinstance(value, cls):
            return value
        if isinstance(value, dict):
            return cls(**value)
        if isinstance(value, str):
            return cls.parse(value)
        layers = tuple(value)
        return cls(layers=layers) if layers else None

    @classmethod
    def parse(cls, text: str, *, candidates: int = 8, max_size: Optional[int] = None) -> "KeepFloat":
        """``"auto"`` or ``"LAYER,LAYER"`` (the command line's ``--keep-float``); :class:`ValueError` otherwise."""
        layers = [n.strip() for n in text.split(",") if n.strip()]
        if layers == ["auto"]:
            return cls(auto=True, candidates=candidates, max_size=max_size)
        if "auto" in layers or not layers:
            raise ValueError("--keep-float takes `auto` or a comma-separated list of layer names")
        if max_size is not None:
            raise ValueError("a size budget (max_size) applies to --keep-float auto only")
        return cls(layers=tuple(layers))


#: how many calibration images rank the candidate layers by isolated SQNR (a statistic that settles on a few
#: images; the candidates' IoU and every search step are measured on all calibration images)
RANKING_IMAGES = 8


def manual_record(layers: Sequence[str], **extra: Any) -> dict[str, Any]:
    """The manifest's ``keep_float`` record for layers the user named."""
    return {"mode": "manual", "layers": list(layers), **extra,
            "why": {n: "asked for with --keep-float" for n in layers}}


def calibration_logits(reference: nn.Module, inputs: Sequence[Tensor]) -> list[tuple[str, Any]]:
    """The float model's logits on the calibration images: what ``auto`` judges every candidate against (never
    the parity images that later judge the artifact)."""
    with torch.no_grad():
        return [(f"calibration-{i}", reference(x).numpy()) for i, x in enumerate(inputs)]


def keep_float_for_export(job: Any, spec: Optional[KeepFloat], source: nn.Module, converted: nn.Module, *,
                          size_bytes: Callable[[nn.Module], int]) -> tuple[nn.Module, Optional[dict[str, Any]]]:
    """The .ptl exporter's ``keep_float`` option applied to its converted int8 model; returns the model to
    script and the manifest's ``keep_float`` record (None: off). ``auto`` searches on the job's calibration
    images, never on the parity images that then judge the artifact, aiming at the job's gates."""
    if spec is None:
        return converted, None
    float_source = job.qat_model if job.qat_model is not None else float_twin(source)
    if not spec.auto:
        layers = list(spec.layers)
        check_layer_names(layers, weighted_layers(converted))
        job.log(f"keeping {len(layers)} layer(s) float (--keep-float): {', '.join(layers)}")
        return keep_layers_float(converted, float_source, layers), manual_record(layers)
    inputs = job.calibration_inputs()
    reference_logits = calibration_logits(job.reference, inputs)
    twin = float_twin(source) if job.qat_model is None else float_source
    model, _, record = auto_keep_float(twin, converted, float_source, reference_logits, inputs,
                                       thresholds=job.thresholds, variant=job.loaded.config.name,
                                       size_bytes=size_bytes, max_size=spec.max_size, candidates=spec.candidates,
                                       log=job.log)
    job.log(f"--keep-float auto: {record['stop_reason']}")
    return model, record
