"""The network: backbones, Semantic-FPN head, PointRend, and the assembled :class:`ALiSNet`."""

from .alisnet import IGNORE_INDEX, ALiSNet, build_model
from .backbones import LEVEL_NAMES, LEVEL_STRIDES, Backbone, build_backbone, load_imagenet_weights
from .point_rend import (
    ambiguous_selection,
    calculate_uncertainty,
    get_uncertain_point_coords_on_grid,
    get_uncertain_point_coords_with_randomness,
    point_sample,
)

__all__ = [
    "ALiSNet",
    "Backbone",
    "IGNORE_INDEX",
    "LEVEL_NAMES",
    "LEVEL_STRIDES",
    "ambiguous_selection",
    "build_backbone",
    "build_model",
    "calculate_uncertainty",
    "get_uncertain_point_coords_on_grid",
    "get_uncertain_point_coords_with_randomness",
    "load_imagenet_weights",
    "point_sample",
]
