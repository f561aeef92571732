"""fft: FFT, IFFT, RFFT and IRFFT over the last 1-3 axes, via tf.signal.

JAX's fft_type may arrive as a ``lax.FftType`` or its int value; ``fft_lengths`` are the
lengths of the transformed (innermost) axes, which for IRFFT are the real output's.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf
from jax import lax

from core.rule import case, rule

_OPS = {  # (FftType name, number of axes) -> tf.signal op
    ("FFT", 1): tf.signal.fft, ("FFT", 2): tf.signal.fft2d, ("FFT", 3): tf.signal.fft3d,
    ("IFFT", 1): tf.signal.ifft, ("IFFT", 2): tf.signal.ifft2d, ("IFFT", 3): tf.signal.ifft3d,
    ("RFFT", 1): tf.signal.rfft, ("RFFT", 2): tf.signal.rfft2d, ("RFFT", 3): tf.signal.rfft3d,
    ("IRFFT", 1): tf.signal.irfft, ("IRFFT", 2): tf.signal.irfft2d,
    ("IRFFT", 3): tf.signal.irfft3d,
}


def _fft(kind, lengths):
    return lambda x: lax.fft(x, kind, lengths)


def _complex(shape):
    def make(rng, dtype):
        return [(rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)]
    return make


def _real(shape):
    return lambda rng, dtype: [rng.standard_normal(shape).astype(dtype)]


_C = ["complex64", "complex128"]
_R = ["float32", "float64"]


@rule("fft", dtypes=_C + _R,
      cases=[case.custom("fft 1d", _fft("FFT", (8,)), _complex((3, 8)), dtypes=_C),
             case.custom("ifft 2d", _fft("IFFT", (4, 6)), _complex((2, 4, 6)), dtypes=_C),
             case.custom("fft 3d", _fft("FFT", (2, 3, 5)), _complex((2, 3, 5)), dtypes=_C),
             case.custom("rfft 1d odd", _fft("RFFT", (7,)), _real((2, 7)), dtypes=_R),
             case.custom("rfft 2d", _fft("RFFT", (4, 6)), _real((4, 6)), dtypes=_R),
             case.custom("irfft 1d even", _fft("IRFFT", (8,)), _complex((3, 5)), dtypes=_C),
             case.custom("irfft 1d odd", _fft("IRFFT", (9,)), _complex((3, 5)), dtypes=_C),
             case.custom("irfft 3d", _fft("IRFFT", (2, 3, 6)), _complex((2, 3, 4)),
                         dtypes=_C),
             case.custom("empty batch", _fft("FFT", (4,)), _complex((0, 4)), dtypes=_C)])
def fft_by_tf_signal(ctx, x, *, fft_type, fft_lengths, **_):
    """One tf.signal transform over the innermost len(fft_lengths) axes."""
    kind = lax.FftType(int(fft_type)).name  # an enum member or its int value
    lengths = [int(n) for n in fft_lengths]
    op = _OPS[(kind, len(lengths))]
    if kind in ("RFFT", "IRFFT"):
        return op(x, fft_length=lengths)
    return op(x)
