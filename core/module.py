"""Parameters as variables: a converted model as a ``tf.Module`` ready for SavedModel.

    module = to_module(model.apply, params, input_signature=[tf.TensorSpec([None, 784])])
    tf.saved_model.save(module, path, signatures=module.serving_signatures,
                        options=tf.saved_model.SaveOptions(experimental_custom_gradients=True))

The parameters become ``tf.Variable``s read by the graph, not constants baked into it, so
the GraphDef stays small (no 2 GB limit, no duplicated weights) and the weights can be
fine-tuned in TensorFlow.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Sequence

import numpy as np
import tensorflow as tf

from core.converter import convert


def _var_name(path) -> str:
    import jax
    name = jax.tree_util.keystr(path, simple=True, separator="/") if path else "param"
    return re.sub(r"[^A-Za-z0-9_./-]", "_", name) or "param"


class ConvertedModule(tf.Module):
    """A converted ``apply_fn(params, *inputs)`` whose parameters are ``tf.Variable``s.

    Attributes: ``variables_tree`` (the parameter pytree with variables as leaves),
    ``serve`` (a ``tf.function`` taking only the data inputs; also what calling the module
    does, and what a reloaded SavedModel exposes as ``loaded.serve``) and
    ``serving_signatures`` (``{"serving_default": ...}`` when an input signature was
    given: pass it as ``signatures=`` to ``tf.saved_model.save``).
    """

    def __init__(self, apply_fn: Callable, params: Any, *, trainable: bool = False,
                 input_signature: Sequence[tf.TensorSpec] | None = None,
                 with_gradient: bool = True, name: str | None = None,
                 polymorphic_shapes=None, **convert_kw):
        import jax
        super().__init__(name=name)
        if polymorphic_shapes is not None:       # the parameters' shapes are always known
            polymorphic_shapes = [None, *polymorphic_shapes]
        leaves, self._treedef = jax.tree_util.tree_flatten_with_path(params)
        self.param_variables = [tf.Variable(np.asarray(leaf), trainable=trainable, name=_var_name(path))
                      for path, leaf in leaves]
        self.variables_tree = jax.tree_util.tree_unflatten(self._treedef, self.param_variables)
        self._converted = convert(apply_fn, with_gradient=with_gradient,
                                  polymorphic_shapes=polymorphic_shapes, **convert_kw)
        self.serve = tf.function(self._apply, autograph=False, input_signature=input_signature)
        self.serving_signatures = ({"serving_default": self.serve.get_concrete_function()}
                           if input_signature is not None else {})

    def __call__(self, *inputs):
        return self.serve(*inputs)

    def _apply(self, *inputs):
        import jax
        params = jax.tree_util.tree_unflatten(self._treedef, list(self.param_variables))
        return self._converted(params, *inputs)


def to_module(apply_fn: Callable, params: Any, *, trainable: bool = False,
              input_signature: Sequence[tf.TensorSpec] | None = None,
              with_gradient: bool = True, name: str | None = None,
              polymorphic_shapes: Sequence[str | None] | None = None,
              **convert_kw) -> ConvertedModule:
    """Turn ``(apply_fn, params)`` into a ``tf.Module`` whose parameters are variables and
    whose ``__call__`` takes only the data inputs.

    :param apply_fn: ``apply_fn(params, *inputs)``, e.g. a flax module's ``apply``.
    :param params: the parameter pytree (arrays).
    :param trainable: make the variables trainable (for fine-tuning in TF).
    :param input_signature: TensorSpecs of the data inputs; gives a serving signature.
    :param polymorphic_shapes: one spec per data input (``"(b, 28, 28)"``), for
        ``None`` dimensions in ``input_signature`` (e.g. a batch of any size).
    :param convert_kw: passed to :func:`core.convert` (``allow_xla``, ``device``,
        ``target="tflite"``, ...).
    """
    return ConvertedModule(apply_fn, params, trainable=trainable,
                           input_signature=input_signature, with_gradient=with_gradient,
                           name=name, polymorphic_shapes=polymorphic_shapes, **convert_kw)
