"""The one interface every format's exporter implements.

An exporter, configured by its typed options (:class:`ExportOptions` subclasses: ``PtlOptions``,
``PteOptions``, ``OnnxOptions``, ``CoreMLOptions``; a format's variants such as ``.bpte``, ``.ort`` or Core
ML's image input are fields of them), turns an :class:`ExportJob` (checkpoint, float reference, precision,
what the session knows) into one artifact written at a path it is given (a temporary name; the pipeline renames it into place only
after it is complete) and returns an :class:`ArtifactInfo` describing the artifact for the manifest.
It does not run parity, write manifests or print: ``alisnet_export.pipeline`` does that, the same way
for every format.
"""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Optional

import torch
from torch import nn

from ..checkpoint import LoadedCheckpoint
from ..errors import DataError, ExportError
from ..formats import FORMATS, FormatSpec
from ..quantize.equalize import equalize_for_quantization
from ..quantize.keep_float import KeepFloat

__all__ = ["SizeBounds", "ExportOptions", "Int8Options", "ExportJob", "ArtifactInfo", "Exporter"]


@dataclass(frozen=True)
class SizeBounds:
    """Input sizes an artifact accepts: multiples of 32 in ``[min_hw, max_hw]`` with ``H * W >= min_pixels``."""

    min_hw: tuple[int, int] = (64, 64)
    max_hw: tuple[int, int] = (4096, 4096)
    min_pixels: int = 0

    def __post_init__(self) -> None:
        for v in (*self.min_hw, *self.max_hw):
            if v % 32 or v < 32:
                raise DataError(f"input size bound {v} is not a positive multiple of 32")
        if self.min_hw[0] > self.max_hw[0] or self.min_hw[1] > self.max_hw[1]:
            raise DataError(f"input size bounds are empty: min {self.min_hw} > max {self.max_hw}")

    def check(self, h: int, w: int, what: str = "input") -> None:
        """Raise :class:`DataError` saying which constraint ``h x w`` breaks."""
        problems = []
        if h % 32 or w % 32:
            problems.append("height and width must be multiples of 32")
        if not (self.min_hw[0] <= h <= self.max_hw[0]):
            problems.append(f"height must be within [{self.min_hw[0]}, {self.max_hw[0]}]")
        if not (self.min_hw[1] <= w <= self.max_hw[1]):
            problems.append(f"width must be within [{self.min_hw[1]}, {self.max_hw[1]}]")
        if h * w < self.min_pixels:
            problems.append(f"height x width must be at least {self.min_pixels} (PointRend's fixed point budget)")
        if problems:
            raise DataError(f"{what} size {h}x{w} is outside what this artifact accepts: " + "; ".join(problems))

    def fit(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (N, C, H, W) centre-cropped to at most :attr:`max_hw` (to a multiple of 32), e.g. a
        calibration image wider than an exported program's width bound. Smaller inputs are returned as is."""
        h, w = x.shape[-2:]
        th, tw = min(h, self.max_hw[0]), min(w, self.max_hw[1])
        if (th, tw) == (h, w):
            return x
        th, tw = th - th % 32, tw - tw % 32
        y0, x0 = (h - th) // 2, (w - tw) // 2
        return x[..., y0:y0 + th, x0:x0 + tw]

    def to_dict(self) -> dict[str, Any]:
        return {"min_hw": list(self.min_hw), "max_hw": list(self.max_hw), "min_pixels": self.min_pixels}

    def dynamic_shapes(self, names: tuple[str, str] = ("h32", "w32"), arg: str = "x") -> dict[str, dict[int, Any]]:
        """``torch.export``'s ``dynamic_shapes`` for input ``arg``: H and W as ``32 * Dim`` within these
        bounds (multiples of 32 only; docs/design.md section 4.3). ``names``: the two ``Dim`` names."""
        from torch.export import Dim

        h = Dim(names[0], min=self.min_hw[0] // 32, max=self.max_hw[0] // 32)
        w = Dim(names[1], min=self.min_hw[1] // 32, max=self.max_hw[1] // 32)
        return {arg: {2: 32 * h, 3: 32 * w}}


@dataclass(frozen=True)
class ExportOptions:
    """The options of one exporter (each format subclasses it; the fields are that format's knobs)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Int8Options(ExportOptions):
    """What every exporter that calibrates int8 activations takes (pte, onnx; ptl adds its own)."""

    per_channel: bool = True  # int8: one weight scale per output channel
    equalize: bool = True  # int8: activation-range equalization before calibration
    #: int8: these float conv layers (quant-report's names) stay float, or ``auto`` finds them; the rest is int8.
    #: Also takes layer names, ``"auto"`` or a dict (:meth:`KeepFloat.coerce`).
    keep_float: Optional[KeepFloat] = None

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "keep_float", KeepFloat.coerce(self.keep_float))
        except (TypeError, ValueError) as exc:
            raise ExportError(f"keep_float: {exc}") from None


@dataclass
class ExportJob:
    """Everything an exporter needs that is not one of its options. ``calibration`` builds PTQ inputs lazily
    (only int8 paths call it); exporters take them through :meth:`calibration_inputs`, which fits them into
    :attr:`bounds`."""

    loaded: LoadedCheckpoint
    reference: nn.Module  # the float model the artifact must match
    precision: str
    calibration: Callable[[], list[torch.Tensor]]
    bounds: SizeBounds = field(default_factory=SizeBounds)
    example_hw: tuple[int, int] = (256, 192)
    log: Callable[[str], None] = lambda message: None
    qat_model: Optional[nn.Module] = None  # a fake-quantized (QAT) model, when the checkpoint is one
    name: str = ""  # the artifact's base name (set by the pipeline): sidecars are named after it
    #: what the artifact embeds about itself (variant, input and output sections, provenance)
    metadata: dict[str, Any] = field(default_factory=dict)
    #: the manifest's record of the calibration images (set, source, files, height)
    calibration_info: dict[str, Any] = field(default_factory=dict)
    #: a QAT checkpoint's record (its ``qat`` section, quantization options included)
    qat_info: dict[str, Any] = field(default_factory=dict)
    #: the manifest's record of the parity images
    parity_images: Optional[dict[str, Any]] = None
    #: the parity gates this artifact will be judged by (searches such as ``--keep-float auto`` aim at them)
    thresholds: Any = None

    def calibration_inputs(self) -> list[torch.Tensor]:
        return [self.bounds.fit(x) for x in self.calibration()]

    def quantization_source(self, inputs: list[torch.Tensor], *, equalize: bool = True) -> tuple[nn.Module, dict[str, Any]]:
        """The float model an int8 exporter quantizes: :attr:`reference` with its activation ranges
        equalized on ``inputs`` (unless ``equalize`` is off), and the manifest's record of that."""
        return equalize_for_quantization(self.reference, inputs, enabled=equalize, log=self.log)

    def example_input(self) -> torch.Tensor:
        return torch.randn(1, 3, *self.example_hw, generator=torch.Generator().manual_seed(0))


@dataclass
class ArtifactInfo:
    """What the manifest says about an artifact (filled in by the exporter)."""

    precision: str
    quantization: dict[str, Any]
    runtime: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)
    #: extra files written next to the artifact: suffix (e.g. ".ops.yaml") -> text
    sidecars: dict[str, str] = field(default_factory=dict)
    #: the exporter's own checks of the written artifact (recorded when its runtime cannot run here)
    checks: dict[str, Any] = field(default_factory=dict)


class Exporter(abc.ABC):
    """One artifact format. Subclasses set :attr:`format` and :attr:`options_class` and implement :meth:`export`;
    what the format is called, which precisions it has and its suffixes come from its row of the formats
    table (:data:`alisnet_export.formats.FORMATS`)."""

    format: ClassVar[str]
    options_class: ClassVar[type[ExportOptions]] = ExportOptions
    #: sizes the artifact accepts when the user gives no bounds
    default_bounds: ClassVar[SizeBounds] = SizeBounds()
    #: when the format's runner cannot run on this platform (it raises EnvironmentProblem, e.g. Core ML
    #: off macOS), still write the artifact: parity is recorded 'not_run' with the reason, and
    #: :attr:`ArtifactInfo.checks` (what could be checked without running it) stands in
    checks_without_runtime: ClassVar[bool] = False

    def __init__(self, options: Optional[ExportOptions | dict[str, Any]] = None) -> None:
        if options is None:
            options = self.options_class()
        elif isinstance(options, dict):
            try:
                options = self.options_class(**options)
            except TypeError as exc:
                known = ", ".join(f.name for f in dataclasses.fields(self.options_class))
                raise ExportError(f"{self.format}: {exc}; its options are: {known or 'none'}") from None
        elif not isinstance(options, self.options_class):
            raise ExportError(f"{self.format}: options must be {self.options_class.__name__}, not {type(options).__name__}")
        self.options = options

    @property
    def spec(self) -> FormatSpec:
        return FORMATS[self.format]

    @property
    def suffix(self) -> str:
        """The artifact's suffix (a variant may change it, e.g. ONNX's ``.ort``)."""
        return self.spec.suffix

    @property
    def precisions(self) -> tuple[str, ...]:
        return self.spec.precisions

    @property
    def default_precision(self) -> str:
        return self.spec.default_precision

    @property
    def sidecar_suffixes(self) -> tuple[str, ...]:
        """Suffixes of the extra files :attr:`ArtifactInfo.sidecars` may hold (checked for existence up front)."""
        return ()

    def bounds_for(self, config: Any, requested: Optional[SizeBounds] = None) -> SizeBounds:
        """Sizes the artifact of ``config`` accepts: ``requested`` (else :attr:`default_bounds`), tightened
        where the format needs it (e.g. exported PointRend's fixed point count)."""
        return requested or self.default_bounds

    def check_precision(self, precision: str) -> None:
        """An :class:`ExportError` for a precision this format does not offer, or for ``keep_float`` on a float
        precision (every layer is float there already)."""
        if precision not in self.precisions:
            raise ExportError(f"{self.format}: precision {precision!r} not supported; choose from {', '.join(self.precisions)}")
        if getattr(self.options, "keep_float", None) is not None and precision != "int8":
            raise ExportError(f"keep_float applies to int8 (a {precision} .{self.format} has every layer in float)")

    @abc.abstractmethod
    def export(self, job: ExportJob, dest: Path) -> ArtifactInfo:
        """Write the artifact to ``dest`` (a file or, for packages, a folder) and describe it."""

    def runtime_sidecars(self, artifact: Path, job: ExportJob, golden_input: Any, golden_output: Any,
                         info: ArtifactInfo) -> dict[str, bytes]:
        """Binary files built from the written ``artifact`` and its own output on the golden input (e.g. an
        ExecuTorch BundledProgram), by suffix (each listed in :attr:`sidecar_suffixes`). Called only when
        the artifact ran here; may add what it wrote to ``info.runtime``. Default: none."""
        return {}
