"""Why a JAX primitive has no rule, and which parameter forms a rule's condition refuses:
the data behind ``python -m core.registry list``, ``explain`` and :class:`NoRuleError`.

``NO_RULE``: every JAX primitive without a built-in rule, with a status and its reason.
A primitive in neither the registry nor this table is "missing": nobody has looked at it
yet (``tests/test_registry.py`` fails when a new JAX version brings one).

- "unsupported": refused on purpose; a TF graph cannot hold what it needs (another
  device, a GPU/TPU-only kernel, native code, serialized StableHLO).
- "internal": never in a jaxpr that ``jax.make_jaxpr`` gives for a program a user
  converts (transformation or lowering internals, private APIs).
- "not written": a rule could exist; the reason says what it would take.

``CONDITIONS``: for each built-in rule with a ``when=`` condition, either the valid
parameter forms it refuses (the primitive is then "partial" unless another rule takes
them) or, as ``GUARD + why``, why the condition rejects no valid program.
"""
from __future__ import annotations

UNSUPPORTED, INTERNAL, NOT_WRITTEN = "unsupported", "internal", "not written"
GUARD = "rejects no valid program: "

_ASYNC = ("an asynchronous collective of jax._src.lax.parallel (not in jax.lax's "
          "public API); its synchronous form has a one-device rule")
_LAPACK = ("TF has no op for it; a rule would be a loop of Householder reflections or "
           "rotations in TF ops, checked against LAPACK through JAX")
_CUDNN_ATTENTION = ("a cuDNN fused-attention kernel (GPU only; JAX cannot lower it on CPU "
                    "either); jax.nn.dot_product_attention(implementation='xla' or None) "
                    "is built from primitives that have rules")
_REFS = ("a primitive on mutable Refs (jax._src.state, Pallas kernels); Refs are discharged "
         "into values before a jit program reaches jaxtf")

NO_RULE: dict[str, tuple[str, str]] = {
    # -- more than one device, asynchronous collectives ----------------------------------
    **{p: (INTERNAL, _ASYNC) for p in (
        "all_gather_start", "all_gather_done", "all_gather_reduced_start", "all_to_all_start",
        "all_to_all_done", "psum_start", "psum_done", "psum_invariant_start",
        "unreduced_psum_start", "reduce_scatter_start", "reduce_scatter_done",
        "unreduced_reduce_scatter_start", "ppermute_start", "ppermute_done",
        "pbroadcast_start", "pbroadcast_done")},
    "pbroadcast": (UNSUPPORTED, "JAX has no CPU lowering of pbroadcast (GPU only), so no rule "
                   "can be checked against JAX here; on one device it is the identity"),
    "psend": (UNSUPPORTED, "a point-to-point send to another device (pipeline parallelism); "
              "convert the per-device program"),
    "precv": (UNSUPPORTED, "a point-to-point receive from another device (pipeline "
              "parallelism); convert the per-device program"),
    "global_array_to_host_local_array": (UNSUPPORTED, "a multi-host array transfer "
                                         "(jax.experimental.multihost_utils); convert the "
                                         "per-host program"),
    "host_local_array_to_global_array": (UNSUPPORTED, "a multi-host array transfer "
                                         "(jax.experimental.multihost_utils); convert the "
                                         "per-host program"),
    "ragged_all_to_all": (UNSUPPORTED, "XLA:CPU cannot run it, so no rule can be checked "
                          "against JAX here; on one device it copies send_sizes[0] rows of "
                          "the operand from input_offsets[0] to output_offsets[0]"),
    # -- GPU/TPU-only kernels, native code, serialized programs ---------------------------
    **{p: (UNSUPPORTED, _CUDNN_ATTENTION) for p in (
        "dot_product_attention_fwd", "dot_product_attention_bwd",
        "dot_product_attention_fwd_wrapper", "dot_product_attention_bwd_wrapper",
        "dot_product_attention_fp8_fwd", "dot_product_attention_fp8_bwd",
        "dot_product_attention_fp8_fwd_wrapper", "dot_product_attention_fp8_bwd_wrapper")},
    "cudnn_fusion": (UNSUPPORTED, "a cuDNN fusion kernel (GPU only)"),
    "scaled_matmul": (UNSUPPORTED, "cuDNN block-scaled matmul (jax.nn.scaled_matmul, GPU "
                      "only)"),
    "scaled_matmul_wrapper": (UNSUPPORTED, "cuDNN block-scaled matmul (jax.nn.scaled_matmul, "
                              "GPU only)"),
    "core_map": (UNSUPPORTED, "a Pallas kernel mapped over TPU/GPU cores; a kernel is no "
                 "computation a TF graph can hold"),
    "with_memory_space_constraint": (UNSUPPORTED, "a Pallas TPU memory-space placement "
                                     "inside a kernel"),
    "ffi_call": (UNSUPPORTED, "jax.ffi.ffi_call runs native code registered with XLA, which "
                 "TF cannot call; give the function a jaxtf rule in a plugin "
                 "(docs/writing_rules.md)"),
    "call_exported": (UNSUPPORTED, "jax.export's Exported.call holds serialized StableHLO, "
                      "not a jaxpr; convert the original JAX function"),
    # -- never in a user's jaxpr -----------------------------------------------------------
    "create_linear": (INTERNAL, "exists only while JAX linearizes a function"),
    "custom_lin": (INTERNAL, "exists only while JAX linearizes a function"),
    "dimension_size": (INTERNAL, "a shape-polymorphism check JAX adds when it lowers a "
                       "jax.export module; jaxtf computes symbolic dimensions itself"),
    "shape_assertion": (INTERNAL, "a shape-polymorphism check JAX adds when it lowers a "
                        "jax.export module; jaxtf checks constraints itself"),
    "check": (INTERNAL, "checkify.checkify turns checks into values; an unfunctionalized "
              "check fails in jax.jit itself"),
    "call": (INTERNAL, "core.call_p; jit and make_jaxpr give jit/closed_call, which have "
             "rules"),
    "stage": (INTERNAL, "a staging primitive of JAX's tracing machinery"),
    "run_state": (INTERNAL, _REFS),
    "broadcast_to": (INTERNAL, _REFS),
    "pin": (INTERNAL, _REFS),
    "unpin": (INTERNAL, _REFS),
    # -- a rule could exist ----------------------------------------------------------------
    "after_all": (NOT_WRITTEN, "tokens order side effects (lax.create_token/after_all with "
                  "infeed/outfeed); no rule holds a token value yet"),
    "create_token": (NOT_WRITTEN, "tokens order side effects (lax.create_token/after_all "
                     "with infeed/outfeed); no rule holds a token value yet"),
    "to_edtype": (NOT_WRITTEN, "convert_element_type to an extended dtype; the only one "
                  "that allows it is the private jax._src.dtypes.primal_tangent_dtype "
                  "(PRNG keys refuse it and use wrap_key_data, which has a rule); jaxtf "
                  "holds no such dtype in TF"),
    "from_edtype": (NOT_WRITTEN, "convert_element_type from an extended dtype; the only one "
                    "that allows it is the private jax._src.dtypes.primal_tangent_dtype "
                    "(PRNG keys refuse it and use key_data, which has a rule); jaxtf holds "
                    "no such dtype in TF"),
    "philox2x32": (NOT_WRITTEN, "jax.random.key(..., impl='philox2x32'); rules_random has "
                   "threefry2x32 and rbg"),
    "philox4x32": (NOT_WRITTEN, "jax.random.key(..., impl='philox4x32'); rules_random has "
                   "threefry2x32 and rbg"),
    "threefry4x32": (NOT_WRITTEN, "jax.random.key(..., impl='threefry4x32'); rules_random "
                     "has threefry2x32 and rbg"),
    "scaled_dot": (NOT_WRITTEN, "lax.scaled_dot (block-scaled low-precision dot); a rule "
                   "would dequantize and call dot_general as JAX's CPU lowering does"),
    "cholesky_update": (NOT_WRITTEN, "lax.linalg.cholesky_update (rank-one update); " + _LAPACK),
    "symmetric_product": (NOT_WRITTEN, "lax.linalg.symmetric_product: alpha*A@A.T + beta*C, "
                          "a dot_general and an add; no rule yet"),
    "hessenberg": (NOT_WRITTEN, "jax.scipy.linalg.hessenberg; " + _LAPACK),
    "schur": (NOT_WRITTEN, "jax.scipy.linalg.schur (LAPACK gees, CPU only in JAX); TF has "
              "no op; a rule would be a QR iteration in TF ops"),
    "tridiagonal": (NOT_WRITTEN, "lax.linalg.tridiagonal; " + _LAPACK),
    "geqp3": (NOT_WRITTEN, "QR with column pivoting (jax.scipy.linalg.qr(pivoting=True)); "
              + _LAPACK),
    "ormqr": (NOT_WRITTEN, "multiplication by Q of a Householder QR (lax.linalg.ormqr); "
              + _LAPACK),
    "remat_opt": (NOT_WRITTEN, "the optimize_remat form of a custom_vjp forward pass; no "
                  "rule yet"),
    "unreachable": (NOT_WRITTEN, "a branch JAX knows cannot run (evaluating it raises); a "
                    "rule would raise at run time"),
}

_ACCURACY = ("accuracy=lax.AccuracyMode.HIGHEST or a lax.Tolerance (e.g. lax.exp(x, "
             "accuracy=lax.Tolerance(ulps=1))): the TF lowering has one accuracy, the default; "
             "accuracy=None and AccuracyMode.DEFAULT convert")
_NEW_DTYPE = "new_dtype outside the 15 standard dtypes (float8 kinds, int4, uint4, int2, ...)"

#: Built-in ``when=`` conditions, by rule id or by the condition's ``module:qualname``: the
#: valid forms they refuse, or GUARD + why they reject no valid program.
CONDITIONS: dict[str, str] = {
    "rules_lax.elementwise:_no_accuracy": _ACCURACY,
    "rules_lax.conversion:_standard_new_dtype": _NEW_DTYPE,
    "rules_lax.elementwise:_pow_base_inexact": (
        GUARD + "jax.lax.pow takes an integer exponent only with an inexact base, so every "
        "valid pow has an inexact base"),
    "rules_lax.linalg:qr_householder": "pivoting=True (column pivoting)",
    "rules_random.rbg:_refuse": (
        GUARD + "it takes every key jax.jit lowers (uint32[4], uint64[2]) and all three "
        "RandomAlgorithm values"),
    "rules_random.keys:_has_key": ("operands without a PRNG key (the primitive's general "
                                   "rule takes them)"),
    "rules_nn.activations:_is_softmax": ("a custom_jvp_call that is not jax.nn.softmax (the "
                                         "general custom_jvp_call rule takes it)"),
    "rules_nn.activations:relu_fused": ("a custom_jvp_call that is not jax.nn.relu (the "
                                        "general custom_jvp_call rule takes it)"),
    "rules_nn.activations:relu6_fused": ("a custom_jvp_call that is not jax.nn.relu6 (the "
                                         "general custom_jvp_call rule takes it)"),
    "rules_lax.collectives:_one_device_mesh": (
        "a mesh axis of size > 1 (more than one device): jaxtf converts single-device "
        "programs"),
}


def declared_condition(rule) -> str | None:
    """What CONDITIONS says about ``rule``'s condition (by rule id, then by condition)."""
    when = rule.when
    key = f"{getattr(when, '__module__', '?')}:{getattr(when, '__qualname__', '?')}"
    return CONDITIONS.get(rule.id) or CONDITIONS.get(key)


def refused_forms(rule) -> str | None:
    """The valid forms ``rule`` refuses: None if it has no condition or its condition is
    a declared guard; the declared forms; else a note that they are not declared."""
    if rule.when is None:
        return None
    note = declared_condition(rule)
    if note is None:
        name = getattr(rule.when, "__qualname__", "its condition")
        return f"the forms its condition {name} declines (not declared in core/statuses.py)"
    return None if note.startswith(GUARD) else note
