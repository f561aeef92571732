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


def _import_tensorflow_quietly() -> None:
    """For the command-line entry points only: import TensorFlow with its start-up log
    lines (oneDNN, CUDA, each written twice) held to ``TF_CPP_MIN_LOG_LEVEL``, 3 unless
    the user set it. TF writes them before it reads that level (tensorflow#100442), so
    they are taken from stderr here and only lines at or above the level are passed on."""
    import os
    import re
    import sys
    import tempfile
    level = os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" in sys.modules or not level.isdigit() or int(level) < 1:
        return
    sys.stderr.flush()
    with tempfile.TemporaryFile() as log:
        saved = os.dup(2)
        os.dup2(log.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            log.seek(0)
            for line in log.read().decode(errors="replace").splitlines(keepends=True):
                m = re.match(r"([IWEF])\d{4} |\d{4}-\d\d-\d\d [\d:.]+: ([IWEF]) ", line)
                if not (line.startswith("WARNING: All log messages before absl::") or
                        m and "IWEF".index(m.group(1) or m.group(2)) < int(level)):
                    sys.stderr.write(line)
