"""Errors a user can act on. Each message names what is wrong and what to try."""
from __future__ import annotations


class JaxtfError(Exception):
    """Base class of every error jaxtf raises on purpose."""


class RegistryError(JaxtfError):
    """The set of rules is inconsistent (an ambiguity, a bad declaration, a broken plugin
    in strict mode). Found when the registry is built, never during a conversion."""


class NoRuleError(JaxtfError, NotImplementedError):
    """Some equations of the program have no applicable rule. The message lists all of
    them, grouped, with each candidate rule and why it was rejected."""

    def __init__(self, message: str, gaps: list | None = None):
        super().__init__(message)
        self.gaps = gaps or []


class TargetError(JaxtfError, NotImplementedError):
    """Some equations have rules, but the ops those rules emit are refused by the export
    target's runtime (``convert(f, target="tflite")``). The message lists all of them,
    grouped, with the source line, the op and the way out. Raised before any export."""

    def __init__(self, message: str, refusals: list | None = None):
        super().__init__(message)
        self.refusals = refusals or []


class UnsupportedError(JaxtfError, NotImplementedError):
    """A rule saw a parameter form or value it cannot lower with JAX's exact semantics.
    Raised instead of computing a number that could be wrong."""


class ConversionError(JaxtfError):
    """A rule failed while emitting TF ops; the message names the equation and the
    user's source line, and the original exception is chained."""


class InputError(JaxtfError, TypeError):
    """The arguments given to a converted function cannot be turned into JAX inputs."""


class MissingDependency(JaxtfError, ImportError):
    """An optional tool an export format needs (tf2onnx, onnxruntime, the TF.js converter,
    node) is not installed; the message says how to install it."""
