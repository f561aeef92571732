"""Dtype names, the groups rules declare, and the JAX -> TF dtype mapping."""
from __future__ import annotations

from typing import Iterable

import numpy as np
import tensorflow as tf
from jax import dtypes as jdtypes

# Every concrete dtype a rule may claim, by JAX's name for it.
BOOL = ("bool",)
SIGNED = ("int8", "int16", "int32", "int64")
UNSIGNED = ("uint8", "uint16", "uint32", "uint64")
FLOATING = ("bfloat16", "float16", "float32", "float64")
COMPLEX = ("complex64", "complex128")
ALL_CONCRETE = BOOL + SIGNED + UNSIGNED + FLOATING + COMPLEX

GROUPS: dict[str, tuple[str, ...]] = {
    "bool": BOOL,
    "signed": SIGNED,
    "unsigned": UNSIGNED,
    "integer": SIGNED + UNSIGNED,
    "floating": FLOATING,
    "complex": COMPLEX,
    "inexact": FLOATING + COMPLEX,
    "numeric": SIGNED + UNSIGNED + FLOATING + COMPLEX,
    "all": ALL_CONCRETE,
}
#: PRNG key arrays ("key<fry>", "key<rbg>") are extended dtypes; rules accept them by name
#: ("key<fry>") or with the group "key".
KEY_GROUP = "key"
KEY_DTYPES = ("key<fry>", "key<rbg>", "key<urbg>")


def expand(spec: str | Iterable[str]) -> frozenset[str]:
    """Turn a dtype spec ("floating", ["int32", "signed"], ...) into concrete names.

    Unknown names raise ValueError listing the accepted ones: this runs when a rule is
    declared, so a typo is found at import time of the rule module, not at conversion.
    """
    names = [spec] if isinstance(spec, str) else list(spec)
    out: set[str] = set()
    for name in names:
        if name in GROUPS:
            out.update(GROUPS[name])
        elif name in ALL_CONCRETE or name == KEY_GROUP or name.startswith("key<"):
            out.add(name)
        elif _is_other_numpy_dtype(name):
            out.add(name)
        else:
            raise ValueError(
                f"unknown dtype or dtype group {name!r}; use one of the groups "
                f"{sorted(GROUPS)} , 'key', 'key<fry>'/'key<rbg>', or a concrete dtype name "
                f"such as {', '.join(ALL_CONCRETE[:6])}, ...")
    return frozenset(out)


def _is_other_numpy_dtype(name: str) -> bool:
    # float8 / int4 variants: accepted by explicit name only, never through a group.
    try:
        np.dtype(getattr(jdtypes, name, None) or name)
        return name.startswith(("float8", "int4", "uint4", "int2", "uint2", "float4"))
    except TypeError:
        return False


def name_of(dtype) -> str:
    """JAX's name for a (numpy or extended) dtype: 'float32', 'key<fry>'."""
    if jdtypes.issubdtype(dtype, jdtypes.extended):
        return str(dtype)
    return np.dtype(dtype).name


def matches(dtype_name: str, accepted: frozenset[str]) -> bool:
    if dtype_name in accepted:
        return True
    return dtype_name.startswith("key<") and KEY_GROUP in accepted


def to_tf(dtype) -> tf.DType:
    """The TF dtype that holds values of a JAX dtype (keys: their uint32 key data)."""
    if jdtypes.issubdtype(dtype, jdtypes.extended):
        from jax._src import core as jcore  # physical layout of extended dtypes
        return to_tf(jcore.physical_element_aval(dtype).dtype)
    return tf.as_dtype(np.dtype(dtype))


def canonical(dtype) -> np.dtype:
    """The dtype JAX uses for ``dtype`` under the current x64 setting."""
    return np.dtype(jdtypes.canonicalize_dtype(dtype))


def is_key(dtype) -> bool:
    return bool(jdtypes.issubdtype(dtype, jdtypes.extended))


def physical_aval(aval):
    """The aval of the TF value that holds ``aval``: PRNG key arrays are their key data
    (``key<fry>[3]`` is ``uint32[3, 2]``); every other aval is itself."""
    if is_key(getattr(aval, "dtype", None)):
        from jax._src import core as jcore
        return jcore.physical_aval(aval)
    return aval


def physical_shape(aval) -> tuple:
    return tuple(physical_aval(aval).shape)


def unsigned_of(bits: int) -> tf.DType:
    """The unsigned TF integer type of ``bits`` (8, 16, 32, 64) bits."""
    return {8: tf.uint8, 16: tf.uint16, 32: tf.uint32, 64: tf.uint64}[bits]


def signed_of(bits: int) -> tf.DType:
    """The signed TF integer type of ``bits`` (8, 16, 32, 64) bits."""
    return {8: tf.int8, 16: tf.int16, 32: tf.int32, 64: tf.int64}[bits]
