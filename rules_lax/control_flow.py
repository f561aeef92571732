"""Call-like primitives: their body is a sub-jaxpr that is lowered in place."""
from __future__ import annotations

import numpy as np
import tensorflow as tf
from jax import lax
import jax
import jax.numpy as jnp

from core.errors import UnsupportedError
from core.rule import random_values, case, rule


#: Control flow moves values without looking at them: every dtype, PRNG keys included.
ANY = ("all", "key")


def _nested_jit(x):
    inner = jax.jit(lambda a: jax.jit(lambda b: b * 2)(a) + 1)
    return jax.jit(lambda a: inner(a) - a)(x)


@rule("jit", dtypes=ANY, cases=[case.random(_nested_jit, shapes=[(3, 4)], name="jit nested 3 levels")])
def inline_jit(ctx, *args, jaxpr, **_):
    """Inline the called jaxpr; shardings, layouts and donation mean nothing in one TF graph."""
    return ctx.lower_jaxpr(jaxpr, *args)


@rule(["closed_call", "core_call", "remat", "checkpoint", "remat2"], dtypes=ANY,
      cases=[case.random(lambda x: jax.checkpoint(lambda a: jnp.sin(a) * a)(x),
                         shapes=[(5,)], dtypes="floating")])
def inline_call(ctx, *args, jaxpr=None, call_jaxpr=None, **_):
    """Calls and rematerialisation: the body computes the values; remat only matters
    for JAX's own autodiff scheduling."""
    return ctx.lower_jaxpr(jaxpr if jaxpr is not None else call_jaxpr, *args)


@rule("custom_jvp_call", dtypes=ANY, cases=[case.random(jax.nn.relu, shapes=[(4, 3)], dtypes="floating")])
def custom_jvp_primal(ctx, *args, call_jaxpr, **_):
    """Evaluate the primal function; the custom JVP rule only matters for differentiation."""
    return ctx.lower_jaxpr(call_jaxpr, *args)


@jax.custom_vjp
def _clip_grad(x):
    return jnp.sin(x)


_clip_grad.defvjp(lambda x: (jnp.sin(x), x), lambda x, g: (jnp.clip(g, -1, 1),))


@rule("custom_vjp_call", dtypes=ANY, cases=[case.random(_clip_grad, shapes=[(6,)], dtypes="floating")])
def custom_vjp_primal(ctx, *args, call_jaxpr=None, fun_jaxpr=None, **_):
    """Evaluate the primal function; the forward/backward pair only matters for VJPs."""
    return ctx.lower_jaxpr(call_jaxpr if call_jaxpr is not None else fun_jaxpr, *args)


# -- structured control flow --------------------------------------------------------------

def _switch3(i, x):
    return lax.switch(i, [jnp.sin, jnp.cos, lambda a: a * 3], x)


def _int_index(rng, dtype):
    return [np.int32(5), random_values(rng, (3,), dtype)]


@rule("cond", dtypes=ANY, cases=[
    case.custom("switch clamps index", _switch3, _int_index, dtypes="floating"),
    case.custom("cond on a predicate",
                lambda p, x: lax.cond(p, lambda a: a + 1, lambda a: a - 1, x),
                lambda rng, dt: [np.bool_(True), random_values(rng, (2, 2), dt)],
                dtypes=["signed", "floating"])])
def cond_by_switch(ctx, index, *operands, branches, **_):
    """``cond``/``switch``: JAX clamps the branch index into range, so we do too."""
    n = len(branches)
    if len(branches) == 1:
        return ctx.lower_jaxpr(branches[0], *operands)
    index = tf.clip_by_value(tf.cast(index, tf.int32), 0, n - 1)

    def branch_fn(jaxpr):
        return lambda: ctx.lower_jaxpr(jaxpr, *operands)
    fns = [branch_fn(b) for b in branches]
    if ctx.target in ("tflite", "onnx"):  # no CASE (tf2onnx neither): a chain of two-way ifs
        outs = _if_chain(index, fns)
    else:
        outs = tf.switch_case(index, fns)
    return list(outs) if isinstance(outs, (list, tuple)) else [outs]


def _if_chain(index, fns):
    if len(fns) == 1:
        return fns[0]()
    return tf.cond(tf.equal(index, 0), fns[0],
                   lambda: _if_chain(index - 1, fns[1:]))


_PLATFORM_NAMES = {"cpu": ("cpu",), "gpu": ("cuda", "rocm", "gpu"), "tpu": ("tpu",)}


def _det(x):
    return jnp.linalg.slogdet(x)[1]


@rule("platform_index", cases=[case.custom(
    "slogdet picks the default branch", _det,
    lambda rng, dt: [(rng.standard_normal((3, 3)) + 3 * np.eye(3)).astype(dt)],
    dtypes=["float32", "float64"])])
def platform_index_for_device(ctx, *, platforms, **_):
    """The branch for the device we convert for; ``None`` entries are the default."""
    names = _PLATFORM_NAMES[ctx.device]
    default = None
    for i, ps in enumerate(platforms):
        if ps is None:
            default = i
        elif any(p in names for p in ps):
            return tf.constant(i, tf.int32)
    if default is None:
        raise UnsupportedError(
            f"platform_index: no branch for device {ctx.device!r} among {platforms}; "
            "convert with device= one of the listed platforms")
    return tf.constant(default, tf.int32)


@rule("while", dtypes=ANY, cases=[
    case.random(lambda x: lax.while_loop(lambda c: c[0] < 10, lambda c: (c[0] + 1, c[1] * 1.5),
                                         (0, x))[1], shapes=[(2,)], dtypes="floating",
                name="while with a counter"),
    case.random(jax.vmap(lambda x: lax.while_loop(lambda c: c < 100, lambda c: c * 2 + 1, x)),
                shapes=[(5,)], dtypes=["int32", "int64"], name="vmapped: batched predicate"),
    case.random(lambda x: lax.while_loop(lambda s: s[0] < 3,
                                         lambda s: (s[0] + 1, s[1] + s[3], s[1] * 2, s[2]),
                                         (0, x, x * 3, x * 5))[1:],
                shapes=[(2,)], dtypes=["float32", "int32"],
                name="carry passed on to another position")])
def while_loop(ctx, *args, cond_jaxpr, body_jaxpr, cond_nconsts, body_nconsts, **_):
    cond_consts = args[:cond_nconsts]
    body_consts = args[cond_nconsts:cond_nconsts + body_nconsts]
    init = list(args[cond_nconsts + body_nconsts:])
    shapes = [_static_shape(ctx, a) for a in ctx.avals_in[cond_nconsts + body_nconsts:]]

    # vmap of a while loop gives a batched predicate: JAX loops while any element still
    # runs, and an element whose predicate is false keeps its carry unchanged
    batched = bool(cond_jaxpr.out_avals[0].shape)

    def cond(*carry):
        pred = ctx.lower_jaxpr(cond_jaxpr, *cond_consts, *carry)[0]
        return tf.reduce_any(pred) if batched else pred

    def body(*carry):
        outs = ctx.lower_jaxpr(body_jaxpr, *body_consts, *carry)
        if batched:
            pred = ctx.lower_jaxpr(cond_jaxpr, *cond_consts, *carry)[0]
            outs = [tf.where(_trailing_ones(pred, len(s)), o, c)
                    for o, c, s in zip(outs, carry, shapes)]
        return ctx.loop_outputs([tf.ensure_shape(o, s) if not s.is_fully_defined() else o
                                 for o, s in zip(outs, shapes)], carry)
    if not init:
        raise UnsupportedError("while loop with no carried values has no effect to lower")
    return list(tf.while_loop(cond, body, init, shape_invariants=shapes))


def _trailing_ones(pred: tf.Tensor, rank: int) -> tf.Tensor:
    """``pred`` reshaped to broadcast against a value of ``rank`` dims (batch dims first)."""
    extra = rank - len(pred.shape)
    return tf.reshape(pred, tf.concat([tf.shape(pred), tf.ones([extra], tf.int32)], 0)) \
        if extra else pred


def _static_shape(ctx, aval) -> tf.TensorShape:
    """The TF static shape of a value: symbolic dimensions are unknown (None)."""
    return tf.TensorShape([d if isinstance(d, int) else None for d in ctx.shape(aval)])


def _cumulative(xs):
    return lax.scan(lambda c, x: (c + x, c * x), xs[0], xs)


# A scan of a static length whose body totals at most this many equations over all steps
# is unrolled: a TF while loop costs tens of microseconds per step on CPU and LiteRT's
# WHILE more (measured on a 100-step RNN of 4 equations per step, see benchmarks/).
UNROLL_EQUATIONS = 1024


def _unroll(ctx, jaxpr, length, unroll) -> int:
    """Steps per loop iteration: the scan's own ``unroll`` (True: all), or all of a short
    static scan (``UNROLL_EQUATIONS``); 1 for a symbolic length, and on ONNX (tf2onnx
    takes TensorArray writes only inside a loop, and an unrolled float16 scan gave other
    roundings in onnxruntime than the loop and JAX: measured, not understood)."""
    if not isinstance(length, int) or ctx.target == "onnx":
        return 1
    k = length if unroll is True else max(int(unroll or 1), 1)
    if length * max(len(jaxpr.eqns), 1) <= UNROLL_EQUATIONS:
        k = length
    return min(k, length)


@rule("scan", dtypes=ANY, cases=[
    case.random(_cumulative, shapes=[(5, 3)], dtypes=["signed", "floating"], name="scan"),
    case.random(lambda xs: lax.scan(lambda c, x: (c - x, c), xs[0], xs, reverse=True),
                shapes=[(4, 2)], dtypes=["signed", "floating"], name="reverse scan"),
    case.random(lambda xs: lax.scan(lambda c, x: (c + x, c), xs[0], xs[:0]),
                shapes=[(3, 2)], dtypes="floating", name="length 0"),
    case.random(lambda xs: lax.scan(lambda c, x: (c * x, c), xs[0], xs, unroll=2),
                shapes=[(5, 2)], dtypes="floating", name="unrolled"),
    *[case.random(lambda xs, r=r: lax.scan(lambda c, x: (c * 0.5 + x, c - x), xs[0],
                                           jnp.tile(xs, (200, 1)), unroll=3, reverse=r),
                  shapes=[(4, 2)], dtypes="floating",
                  name=f"long{' reverse' if r else ''} (a loop), unroll=3 with a remainder")
      for r in (False, True)],
    case.random(lambda xs: lax.scan(lambda c, x: (c + x, c * x), xs[0], jnp.tile(xs, (600, 1))),
                shapes=[(3, 2)], dtypes=["int32", "float32"], name="long (a loop)")])
def scan_as_while(ctx, *args, jaxpr, length, reverse, num_consts, num_carry, unroll=1, **_):
    """``scan`` as TF ops: unrolled when short (``UNROLL_EQUATIONS``), else a TF while loop
    of ``unroll`` steps per iteration (the remainder after it), xs read by index, ys
    written to TensorArrays. ``unroll`` only changes the schedule, not the numbers."""
    consts = list(args[:num_consts])
    init = list(args[num_consts:num_consts + num_carry])
    xs = list(args[num_consts + num_carry:])
    y_avals = ctx.avals_out[num_carry:]
    if length == 0:
        return init + [tf.zeros(ctx.shape(a), ctx.tf_dtype(a)) for a in y_avals]
    k = _unroll(ctx, jaxpr, length, unroll)
    length = ctx.dim(length)

    def step(i, carry, put):
        """Step ``i`` (a tensor or an int): its ys go to ``put(i, t, ys)``."""
        t = length - 1 - i if reverse else i
        outs = ctx.lower_jaxpr(jaxpr, *consts, *carry, *[tf.gather(x, t) for x in xs])
        return ctx.loop_outputs(outs[:num_carry], carry), put(i, t, outs[num_carry:])

    if isinstance(length, int) and k == length:      # all unrolled: no loop, ys stacked
        carry, ys = init, []
        for i in range(length):
            carry, _ = step(i, carry, lambda i, t, y: ys.append(y))
        return list(carry) + [tf.stack(y[::-1] if reverse else y) for y in zip(*ys)]

    # tf2onnx takes TensorArray writes at the loop counter only: for onnx a reverse scan
    # writes its ys in loop order and reverses them after the loop
    in_order = ctx.target == "onnx"

    def write(arrays):
        def put(i, t, ys):
            arrays[:] = [arr.write(i if in_order else t, y) for arr, y in zip(arrays, ys)]
        return put

    def body(j, carry, arrays):
        arrays = list(arrays)
        for s in range(k):      # (tf2onnx needs the counter itself as the index)
            carry, _ = step(j if k == 1 else j * k + s, carry, write(arrays))
        return j + 1, carry, arrays

    arrays = [tf.TensorArray(ctx.tf_dtype(a), size=length,
                             element_shape=_static_shape(ctx, a)[1:]) for a in y_avals]
    _, carry, arrays = tf.while_loop(lambda j, c, a: j < length // k, body,
                                     (tf.constant(0), init, arrays))
    arrays = list(arrays)
    for i in range(length // k * k, length) if k > 1 else ():   # the remainder
        carry, _ = step(i, carry, write(arrays))
    ys = [arr.stack() for arr in arrays]
    if reverse and in_order:
        ys = [tf.reverse(y, [0]) for y in ys]
    return list(carry) + ys
