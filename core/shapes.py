"""Shape polymorphism: symbolic dimensions, solved from the actual TF input shapes.

With ``convert(f, polymorphic_shapes=["(b, 28, 28)"])`` the jaxpr is traced once with a
symbolic dimension ``b``. When the TF graph runs, ``b`` is solved from the inputs'
``tf.shape`` (the same solver JAX's export uses), the constraints between dimensions are
checked with TF assertions (so inconsistent inputs raise, never compute), and rules read
shapes through ``ctx.shape(aval)``, which gives Python ints for known dimensions and TF
scalars for symbolic ones. ``polymorphic_constraints=["b >= 16"]`` adds constraints of
one's own: JAX's shape reasoning may rely on them while tracing, and they are asserted at
run time like the others.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Sequence

import tensorflow as tf

from core.errors import InputError


def is_symbolic(d) -> bool:
    from jax._src import core as jcore
    return not jcore.is_constant_dim(d)


def has_symbolic(shape) -> bool:
    return any(is_symbolic(d) for d in shape)


@dataclasses.dataclass(frozen=True)
class Constrained:
    """``polymorphic_shapes`` together with ``polymorphic_constraints`` (``"b >= 16"``,
    ``"c == 2 * b"``): the symbolic dimensions are made in one scope holding them."""
    specs: Any
    constraints: tuple[str, ...]


def symbolic_avals(args, kwargs, polymorphic_shapes, avals: list) -> list:
    """The input avals with the dimensions named in ``polymorphic_shapes`` made symbolic.

    ``polymorphic_shapes`` follows ``jax2tf.convert``: a spec string per positional
    argument (or a pytree prefix of them), ``None`` for fully known shapes; or a
    :class:`Constrained` of such specs.
    """
    import jax
    from jax import export
    n_pos = len(jax.tree_util.tree_leaves(args))
    pos_tree = jax.tree_util.tree_structure(args)
    pos = jax.tree_util.tree_unflatten(
        pos_tree, [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in avals[:n_pos]])
    spec, constraints = polymorphic_shapes, ()
    if isinstance(spec, Constrained):
        spec, constraints = spec.specs, spec.constraints
    given = f"polymorphic_shapes={spec!r}" + (
        f" with polymorphic_constraints={list(constraints)!r}" if constraints else "")
    if isinstance(spec, list) and isinstance(pos, tuple):
        spec = tuple(spec)
    try:
        sym = export.symbolic_args_specs(pos, spec, constraints=constraints)
    except Exception as exc:
        raise InputError(f"{given} does not fit the arguments "
                         f"{[tuple(a.shape) for a in avals[:n_pos]]}: {exc}") from None
    out = jax.tree_util.tree_leaves(sym) + list(avals[n_pos:])
    for i, a in enumerate(out):
        if any(d is None for d in a.shape):
            raise InputError(
                f"input #{i} has unknown dimensions {tuple(a.shape)} that polymorphic_shapes "
                f"does not name; give them names, e.g. '(b, ...)'")
    return out


def _val(x):
    return x.t if isinstance(x, _TFDim) else x


class _TFDim:
    """A TF scalar that JAX's dimension-expression evaluator can compute with: it needs
    ``divmod`` (floor division and remainder), which TF tensors lack."""
    __slots__ = ("t",)

    def __init__(self, t):
        self.t = t

    def __add__(self, o): return _TFDim(self.t + _val(o))
    def __radd__(self, o): return _TFDim(_val(o) + self.t)
    def __sub__(self, o): return _TFDim(self.t - _val(o))
    def __rsub__(self, o): return _TFDim(_val(o) - self.t)
    def __mul__(self, o): return _TFDim(self.t * _val(o))
    def __rmul__(self, o): return _TFDim(_val(o) * self.t)
    def __neg__(self): return _TFDim(-self.t)

    def __divmod__(self, o):
        return (_TFDim(tf.math.floordiv(self.t, _val(o))),
                _TFDim(tf.math.floormod(self.t, _val(o))))

    def __rdivmod__(self, o):
        return (_TFDim(tf.math.floordiv(_val(o), self.t)),
                _TFDim(tf.math.floormod(_val(o), self.t)))


def eval_expr(e, env: dict, floordiv=tf.math.floordiv, mod=tf.math.floormod):
    """A JAX dimension expression on TF int32 scalars. JAX's own evaluator sends min/max
    through ``lax.min``/``lax.max``, which TF values cannot take, so this walks the
    expression (a sum of terms, each a coefficient times powers of factors) itself.
    ``floordiv``/``mod``: the TF forms of those factors (a target may need others, see
    rules_lax.onnx)."""
    from jax._src.export import shape_poly
    if not isinstance(e, shape_poly._DimExpr):
        return int(e)
    factor = shape_poly._DimFactor
    ops = {factor.FLOORDIV: floordiv, factor.MOD: mod,
           factor.MAX: tf.maximum, factor.MIN: tf.minimum}
    total = 0
    for term, coeff in e._sorted_terms:
        val = coeff
        for f, exp in term._factors:
            if f.var is not None:
                v = env[f.var]
            else:
                v = ops[f.operation](*[eval_expr(o, env, floordiv, mod) for o in f.operands])
            for _ in range(exp):
                val = val * v
        total = total + val
    return total


class DimEnv:
    """Values of the dimension variables for one lowering: TF int32 scalars."""

    def __init__(self, values: dict[str, Any] | None = None):
        self.values = values or {}
        self.assertions: list = []      # TF assertions of the constraints between dims

    def evaluate(self, d):
        """A dimension as a Python int (known) or a TF int32 scalar (symbolic)."""
        if not is_symbolic(d):
            return int(d)
        return eval_expr(d, self.values)

    @classmethod
    def solve(cls, in_avals: Sequence, tensors: Sequence[tf.Tensor], in_tree) -> "DimEnv":
        """Solve the dimension variables of ``in_avals`` from the tensors' runtime shapes,
        adding a TF assertion for every constraint (e.g. two dims declared equal)."""
        from jax._src.export import shape_poly
        if not any(has_symbolic(a.shape) for a in in_avals):
            return cls()
        solution, constraints, synthetic = shape_poly.solve_dim_vars(tuple(in_avals), in_tree)
        synth_env = {name: tf.shape(tensors[i], out_type=tf.int32)[j]
                     for name, i, j in synthetic}
        evaluate = lambda e: eval_expr(e, synth_env)
        # JAX's evaluator, only to fill in its error messages
        synth_eval = shape_poly.ShapeEvaluator({k: _TFDim(v) for k, v in synth_env.items()})
        env = cls({v: evaluate(e) for v, e in solution.items()})
        checks = []
        for c in constraints.constraints:
            left, right = evaluate(c.left), evaluate(c.right)
            ok = tf.equal(left, right) if c.comp == shape_poly.Comparator.EQ else \
                tf.greater_equal(left, right)
            msg, inputs = c.error_message_and_inputs(synth_eval)
            inputs = [_val(i) for i in inputs]
            # JAX numbers its placeholders ({0}, {1}, reused); tf.strings.format wants {}
            order = [int(m) for m in re.findall(r"\{(\d+)\}", msg)]
            text = tf.strings.format(re.sub(r"\{\d+\}", "{}", msg.replace("%", "%%")),
                                     [inputs[k] for k in order]) if order else msg
            checks.append(tf.debugging.Assert(ok, [text]))
        env.assertions = checks
        return env
