"""Lowerings of the ``jax.lax`` primitives, one module per family."""
from core.hookspecs import hookimpl

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
    "conversion",
    "narrow",
    "collectives",
    "onnx",
    "tfjs",
)


@hookimpl
def register_rules(register) -> None:
    import importlib
    for family in FAMILIES:
        register.module(importlib.import_module(f"{__name__}.{family}"))
