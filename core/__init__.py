"""jaxtf: JAX programs in, plain TensorFlow graphs out, one rule per primitive.

    from core import convert
    f_tf = convert(f_jax)          # call eagerly, or wrap in tf.function

Rules live in ``rules_lax``, ``rules_nn``, ``rules_random`` and in third-party packages
registered through the entry-point group ``jaxtf.rules``. ``python -m core.registry list``
prints the coverage table.
"""
from __future__ import annotations

__all__ = ["convert", "to_module", "hookimpl", "Registrar", "RuleContext",
           "NoRuleError", "TargetError", "UnsupportedError", "ConversionError",
           "RegistryError"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # Imported lazily so `import core` stays cheap: it neither scans entry points nor
    # imports TensorFlow until one of these names is used. (`python -m core.registry` does
    # import TensorFlow: rules are built with TF dtypes.)
    if name == "convert":
        from core.converter import convert
        return convert
    if name == "to_module":
        from core.module import to_module
        return to_module
    if name == "hookimpl":
        from core.hookspecs import hookimpl
        return hookimpl
    if name == "Registrar":
        from core.registry import Registrar
        return Registrar
    if name == "RuleContext":
        from core.interpreter import RuleContext
        return RuleContext
    if name in ("NoRuleError", "TargetError", "UnsupportedError", "ConversionError",
                "RegistryError"):
        from core import errors
        return getattr(errors, name)
    raise AttributeError(f"module 'core' has no attribute {name!r}")
