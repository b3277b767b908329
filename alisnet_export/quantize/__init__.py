"""Quantization: eager QNNPACK QAT/PTQ (for .ptl); PT2E and ORT paths live beside their exporters."""

from .eager import EagerQuantOptions, calibrate, convert, describe_quantization, prepare, qat_schedule, use_qnnpack

__all__ = ["EagerQuantOptions", "calibrate", "convert", "describe_quantization", "prepare", "qat_schedule", "use_qnnpack"]
