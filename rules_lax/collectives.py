"""``shard_map`` (and ``pmap``, which JAX now writes as a jit of a shard_map) and the
collectives of its body, on ONE device.

A TF graph is one device's program. A shard_map whose manual mesh axes all have size 1
is its body run once on the whole arrays, so the body is inlined; in it every collective
over those axes sees a single participant: psum/pmax/pmin and the vary/reduced casts
give their operand, ``axis_index`` is 0, a ppermute gives its operand if it sends device
0 to itself and zeros otherwise, and all_gather/all_to_all/psum_scatter only insert or
drop a dimension of size 1 (a reshape). A mesh axis of size > 1 is refused up front
(NoRuleError naming the axis and its size): convert the per-device program instead.

The sizes of the axes in scope are kept while a shard_map body is lowered, so a
collective checks that its axes are bound with size 1 instead of assuming it.

Placement on one device: ``layout_constraint`` is the identity, ``inspect_sharding`` is
left out, ``custom_partitioning`` is its body (what XLA runs on one device).
"""
from __future__ import annotations

import contextvars

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow as tf
from jax import lax
from jax.sharding import Mesh, PartitionSpec as P

from core.errors import UnsupportedError
from core.rule import case, rule
from rules_lax.control_flow import ANY

#: {axis name: size} of the shard_map bodies being lowered (innermost wins).
_AXES: contextvars.ContextVar[dict] = contextvars.ContextVar("jaxtf_mesh_axes", default={})


def _manual_sizes(params) -> dict:
    mesh = params["mesh"]
    manual = params.get("newly_manual_axes", params.get("manual_axes", ()))
    return {name: int(mesh.shape[name]) for name in mesh.axis_names if name in manual}


def _one_device_mesh(eqn):
    big = {n: s for n, s in _manual_sizes(eqn.params).items() if s != 1}
    if big:
        axes = ", ".join(f"{n!r} of size {s}" for n, s in big.items())
        return (f"shard_map over mesh axis {axes}: jaxtf converts single-device programs "
                f"(a shard_map or pmap over axes of size 1); convert the per-device "
                f"function, or trace with a one-device mesh")
    return None


# -- cases: every collective in a shard_map over a one-device mesh ---------------------------

def _mesh():
    return Mesh(np.array(jax.devices()[:1]), ("x",))


def _smap(body, check_vma=False, out_specs=P("x")):
    return lambda a: jax.shard_map(body, mesh=_mesh(), in_specs=P("x"), out_specs=out_specs,
                                   check_vma=check_vma)(a)


def _reductions(a):
    return (lax.psum(a, "x"), lax.pmax(a, "x"), lax.pmin(a, "x"),
            lax.psum(a, "x", axis_index_groups=[[0]]))


def _gathers(a):
    return (lax.all_gather(a, "x"), lax.all_gather(a, "x", axis=1, tiled=True),
            lax.all_gather(a, "x", axis=1), lax.psum_scatter(a, "x", tiled=True),
            lax.psum_scatter(a[None], "x", scatter_dimension=0),
            lax.all_to_all(a, "x", 0, 1, tiled=True),
            lax.all_to_all(a[None], "x", 0, 2))


def _permutes(a):
    return lax.ppermute(a, "x", [(0, 0)]), lax.ppermute(a, "x", []), \
        a + lax.axis_index("x").astype(a.dtype)


def _vma(a):
    """check_vma=True: psum becomes psum_invariant, and pvary casts appear."""
    s = lax.psum(a, "x")
    return a * 2 + s, lax.pmean(a, "x") if jnp.issubdtype(a.dtype, jnp.inexact) else s


_POLY = {"polymorphic_shapes": ["(b, 3)"]}
_REDUCE = case.random(_smap(_reductions), shapes=[(4, 3)], name="psum pmax pmin",
                      dtypes=["float32", "int32", "uint8", "float16"])
_GATHER = case.random(_smap(_gathers), shapes=[(4, 3)],
                      name="all_gather psum_scatter all_to_all",
                      dtypes=["float32", "int8", "uint32", "complex64"])
_PERMUTE = case.random(_smap(_permutes), shapes=[(4, 3)], name="ppermute axis_index",
                       dtypes=["float32", "int32", "uint16"])
_VMA = case.random(_smap(_vma, check_vma=True), shapes=[(4, 3)], name="check_vma",
                   dtypes=["float32", "int32"])
_ANY_DTYPE = case.random(
    _smap(lambda a: (a[::-1], lax.all_gather(a, "x"), lax.ppermute(a, "x", [(0, 0)]))),
    shapes=[(2, 3)], name="shard_map of any dtype")
_SYMBOLIC = case.random(_smap(lambda a: (lax.psum(a, "x"), lax.all_gather(a, "x", axis=1),
                                         lax.ppermute(a, "x", []), _permutes(a)[2])),
                        shapes=[(4, 3)], name="symbolic", dtypes="float32", convert_kw=_POLY)
_PMAP = case.random(jax.pmap(lambda a: lax.psum(a, "i") * 2 + lax.axis_index("i"),
                             axis_name="i"), shapes=[(1, 5)], name="pmap over one device",
                    dtypes=["float32", "int32"])


# -- shard_map ---------------------------------------------------------------------------

@rule("shard_map", dtypes=ANY, when=_one_device_mesh,
      cases=[_ANY_DTYPE, _REDUCE, _GATHER, _PERMUTE, _VMA, _SYMBOLIC, _PMAP])
def shard_map_one_device(ctx, *args, jaxpr, **params):
    """A shard_map over mesh axes of size 1: the body, inlined, on the whole arrays."""
    token = _AXES.set({**_AXES.get(), **_manual_sizes(params)})
    try:
        return ctx.lower_jaxpr(jaxpr, *args)
    finally:
        _AXES.reset(token)


def _check_axes(ctx, axes, size=None) -> None:
    """Refuse a collective over an axis that is not bound to size 1 by a shard_map."""
    names = (axes,) if isinstance(axes, str) else tuple(axes)
    bound = _AXES.get()
    for name in names:
        if isinstance(name, int):
            continue
        n = bound.get(name)
        if n is None:
            raise UnsupportedError(
                f"{ctx.eqn.primitive} over axis {name!r} outside a shard_map/pmap that jaxtf "
                f"lowered: the axis size is unknown; convert the per-device program")
        if n != 1 or (size is not None and size != 1):
            raise UnsupportedError(f"{ctx.eqn.primitive} over axis {name!r} of size "
                                   f"{size or n}: jaxtf converts single-device programs")


# -- collectives on one device ---------------------------------------------------------------

_POSITIONAL = {"psum": lax.reduce_sum, "pmax": lax.reduce_max, "pmin": lax.reduce_min}


@rule(["psum", "pmax", "pmin"], dtypes="all", cases=[
    _REDUCE, _SYMBOLIC, _PMAP,
    case.random(lambda a: (lax.psum(a, 0), lax.pmax(a, (1,)), lax.pmin(a, (0, 1))),
                shapes=[(4, 3)], name="positional axes", dtypes=["float32", "int32"])])
def all_reduce_one_device(ctx, x, *, axes, **_):
    """One participant: the operand. Positional (integer) axes, which JAX allows outside
    any mapped axis, reduce those dimensions of the operand, as JAX's implementation does."""
    _check_axes(ctx, axes)
    pos = tuple(a for a in axes if isinstance(a, int))
    if not pos:
        return x
    return ctx.lower_fun(lambda v: _POSITIONAL[ctx.eqn.primitive.name](v, pos), x)[0]


@rule(["psum_invariant", "pvary", "preduced", "unreduced_psum", "vary_unreduced_cast_p",
       "reduced_vary_cast_p"], dtypes="all", cases=[_VMA])
def cast_one_device(ctx, x, *, axes=None, axis_name=None, **_):
    """A sum over one participant, or a change of the varying/reduced type only: the
    operand."""
    _check_axes(ctx, axes if axes is not None else axis_name)
    return x


@rule(["all_gather", "all_gather_invariant", "all_gather_reduced", "reduce_scatter",
       "unreduced_reduce_scatter", "all_to_all"], dtypes="all",
      cases=[_GATHER, _ANY_DTYPE, _SYMBOLIC])
def gather_scatter_one_device(ctx, x, *, axis_name, axis_size=None, **_):
    """One participant: the data in the same order; only a dimension of size 1 appears
    (untiled all_gather, all_to_all) or goes (untiled psum_scatter), a reshape."""
    _check_axes(ctx, axis_name, axis_size)
    if tuple(ctx.aval_out.shape) == tuple(ctx.avals_in[0].shape):
        return x
    return tf.reshape(x, ctx.shape_tensor(ctx.aval_out))


@rule("ppermute", dtypes="all", cases=[_PERMUTE, _ANY_DTYPE, _SYMBOLIC])
def ppermute_one_device(ctx, x, *, axis_name, perm, **_):
    """Device 0 sends to itself, or nobody sends to it and it receives zeros."""
    _check_axes(ctx, axis_name)
    return x if (0, 0) in {tuple(p) for p in perm} else tf.zeros_like(x)


@rule("axis_index", dtypes="all", cases=[_PERMUTE, _SYMBOLIC, _PMAP])
def axis_index_one_device(ctx, *, axis_name, **_):
    """The only device along an axis of size 1 has index 0."""
    _check_axes(ctx, axis_name)
    return ctx.constant(0, ctx.aval_out)


# -- placement on one device -----------------------------------------------------------------

def _with_layout(x):
    from jax.experimental.layout import Layout, with_layout_constraint
    return with_layout_constraint(x * 2, Layout(tuple(range(x.ndim))))


@rule("layout_constraint", dtypes="all", cases=[
    case.random(_with_layout, shapes=[(2, 3)])])
def layout_constraint_identity(ctx, x, **_):
    """``with_layout_constraint``: a memory layout for XLA; the values are the operand's."""
    return x


def _inspected(x):
    jax.debug.inspect_array_sharding(x, callback=lambda sharding: None)
    return x * 2


@rule("inspect_sharding", dtypes="all", cases=[
    case.random(_inspected, shapes=[(3,)], dtypes="numeric")])
def inspect_sharding_dropped(ctx, x, **_):
    """``jax.debug.inspect_array_sharding``: its callback runs while XLA compiles, with
    the sharding XLA chose; a TF graph has no sharding to report, so it is left out."""
    return []


def _partitioned():
    from jax.experimental.custom_partitioning import custom_partitioning

    @custom_partitioning
    def f(x):
        return jnp.sin(x) * 2
    # the per-shard function differs on purpose: on one device XLA runs the body
    f.def_partition(partition=lambda mesh, args, result: (
        mesh, lambda x: x * 100, result.sharding, (args[0].sharding,)),
        sharding_rule="i j -> i j")
    return f


@rule("custom_partitioning", dtypes=ANY, cases=[
    case.random(lambda x: _partitioned()(x), shapes=[(2, 3)], dtypes="floating"),
    case.random(lambda x: _partitioned()(x), shapes=[(4, 3)], name="symbolic",
                dtypes="float32", convert_kw=_POLY)])
def custom_partitioning_body(ctx, *args, call, **_):
    """``custom_partitioning``: its partition callback only tells XLA how to split the
    work over devices; on one device XLA runs the body (checked: a case whose per-shard
    function differs gives the body's numbers)."""
    return ctx.lower_jaxpr(call, *args)
