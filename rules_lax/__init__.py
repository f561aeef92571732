"""Lowerings of the ``jax.lax`` primitives, one module per family."""
from core.hookspecs import register_families

FAMILIES = (
    "special",
    "calls",
    "indexing",
    "elementwise",
    "structural",
    "slicing",
    "dot",
    "linalg",
    "linalg_tflite",
    "fft",
    "control_flow",
    "shape_poly",
    "reductions",
    "cumulative",
    "sorting",
    "comparison",
    "bitwise",
    "conversion",
    "narrow",
    "collectives",
    "onnx",
    "tfjs",
)

register_rules = register_families(__name__, FAMILIES)
