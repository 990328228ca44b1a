"""The per-value loop of generation, compiled (numba): AR updates, the shape table, exp, float16.

exp and the float16 conversion were 60% of the loop, so the float16 bits of exp(v) come straight
from v: y = v log2(e), the exponent field is floor(y) + 15 and the 10 mantissa bits are looked up
from the fraction of y in a 2^14-entry table (32 KB). The result is within one float16 unit in the
last place of exp(v) correctly rounded (exact for 96% of values); values below float16's normal
range take the exact path (exp, then round to nearest even).
"""
from __future__ import annotations

import math

from common.jit import njit
import numpy as np

FRAC_BITS = 14
#: float16 mantissa bits of 2^f at the centre of each of 2^FRAC_BITS bins of f in [0, 1); 1024 carries
MANTISSA = np.round((2.0 ** ((np.arange(1 << FRAC_BITS) + 0.5) / (1 << FRAC_BITS)) - 1.0) * 1024).astype(np.uint16)
LOG2E = 1.4426950408889634


@njit
def _f16(b):
    e = (b >> 23) & 0xFF
    m = b & 0x7FFFFF
    if e >= 143:                       # >= 2^16: beyond float16, clip to its largest finite value
        return 0x7BFF
    if e >= 113:                       # a normal float16
        h = ((e - 112) << 10) | (m >> 13)
        rem = m & 0x1FFF
        if rem > 0x1000 or (rem == 0x1000 and (h & 1)):
            h += 1
        return min(h, 0x7BFF)
    if e < 102:                        # below half the smallest subnormal: zero
        return 0
    m |= 0x800000                      # subnormal: units of 2^-24
    shift = 126 - e
    h = m >> shift
    rem = m & ((1 << shift) - 1)
    half = 1 << (shift - 1)
    if rem > half or (rem == half and (h & 1)):
        h += 1
    return h


@njit
def to_f16(src, out):
    """float16 bits (``out`` uint16) of positive float32 values ``src`` (same shape, 1-D)."""
    bits = src.view(np.uint32)
    for i in range(src.size):
        out[i] = _f16(bits[i])


@njit
def advance(noise, state, mu, sig, knots, z0, dz, coef, lo, hi, mantissa, out):
    """Advance one (layer, group) by ``w`` tokens.

    ``noise [w, 2, N]`` standard normals; ``state [3, N]``: the fast ARMA(1,1) part, its last
    innovation and the slow AR(1) part (updated in place); ``mu, sig [N]``; ``knots [K]`` the
    shape at sqrt|y| = z0, z0 + dz, ... (``copula.fold_knots``); ``coef`` = (phi1, c, theta,
    phi2, sqrt(1 - phi2^2), sqrt(w2));
    log values clipped to [lo, hi]; ``mantissa`` is :data:`MANTISSA`; ``out [w, N]`` uint16
    receives float16 bits of exp(mu + sig * shape(z)).
    """
    w, _, n = noise.shape
    k = knots.shape[0]
    p1, c, th, p2, s2, a2 = coef[0], coef[1], coef[2], coef[3], coef[4], coef[5]
    inv = np.float32(1.0 / dz)
    z0 = np.float32(z0)
    lo = np.float32(lo)
    hi = np.float32(hi)
    tmp = np.empty(1, dtype=np.float32)
    tb = tmp.view(np.uint32)
    log2e = np.float32(LOG2E)
    scale = np.float32(1 << FRAC_BITS)
    for t in range(w):
        for j in range(n):
            e = noise[t, 0, j]
            f = p1 * state[0, j] + c * (e + th * state[1, j])
            g = p2 * state[2, j] + s2 * noise[t, 1, j]
            state[0, j] = f
            state[1, j] = e
            state[2, j] = g
            pos = (math.sqrt(abs(f + a2 * g)) - z0) * inv            # ranks by |y|: the folded copula
            if pos < 0:
                i = 0
            elif pos >= k - 2:
                i = k - 2
            else:
                i = int(pos)
            s = knots[i] + (knots[i + 1] - knots[i]) * (pos - i)   # linear beyond the ends too
            v = mu[j] + sig[j] * s
            if v < lo:
                v = lo
            elif v > hi:
                v = hi
            y = v * log2e
            ex = int(y + 64.0) - 64          # floor: y >= -23.1 since v >= lo
            if ex >= -14:
                b = ((ex + 15) << 10) + mantissa[int((y - ex) * scale)]
                out[t, j] = b if b < 0x7BFF else 0x7BFF
            else:
                tmp[0] = math.exp(v)
                out[t, j] = _f16(tb[0])
