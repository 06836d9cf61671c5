"""Flash attention with a quantized KV cache: per-tile primitives and the whole-tensor references built
from them (DESIGN.md 4.3).

Layout (one (batch, kv-head) pair at a time): Q is R x Dk with R = (q_heads / kv_heads) x q_len rows,
ordered q-head major, query position minor (row r is query position r % q_len); K is L x Dk, V is L x Dv
(MLA: V = the first Dv columns of the one latent cache K). Query position i of a chunk of q_len sees kv
positions <= L - q_len + i (decode: q_len = 1 sees everything).

Every primitive is row-wise (rows never interact), so how a schedule deals rows to cores or AIVs cannot
change a bit. What does change results, and is therefore a parameter of the references, is the KV block
size and the split of the KV length into independently reduced parts (flash-decoding): `kv_partition`.

Semantics (fp32 everywhere on the Vector, each operation rounded to nearest even):
- exp is the correctly rounded fp32 exponential (float64 exp, one rounding to fp32);
- row sums add the columns left to right, sequentially (np.cumsum), never pairwise;
- the online softmax of a block: m' = max(m, rowmax S), P = exp(S - m'), alpha = exp(m - m'),
  l' = l * alpha + rowsum P, O' = O * alpha + P V (the first block of a part starts from P, rowsum P, PV);
- split parts are merged: M = max m_s, w_s = exp(m_s - M), L = sum w_s l_s, O = sum w_s O_s (part order);
- output: bf16((O / L) [* v_scale]) (or fp32, `out="fp32"`, to see the error without the output cast); MSD accumulates O in units of P's fixed scale 1/127 and multiplies
  by fp32(v_scale x 1/127) at the end (`msd_v_scale`).
"""

from __future__ import annotations

import numpy as np

from npusim.errors import NumericsError
from npusim.numerics.cube import mmad_fp32, mmad_int32, to_bf16
from npusim.numerics.intq import dequant_int_tile
from npusim.numerics.msd import (
    msd_combine_passes, msd_decompose, msd_decompose_fixed, msd_row_scale, msd_stack, msd_unstack, row_absmax,
)

F32 = np.float32
P_SCALE = msd_row_scale(np.ones(1, dtype=F32))[0]  # fp32(1) / fp32(127): the fixed scale of P's passes


# ---- partition of the KV length ------------------------------------------------------------------------

def kv_partition(kv_len: int, q_len: int, block: int, n_splits: int) -> list[list[tuple[int, int]]]:
    """The KV length cut into blocks of `block` (the last shorter), the blocks dealt to at most n_splits
    contiguous parts as evenly as possible. Every part starts at or before kv_len - q_len, so the first
    block of every part has a visible column for every query row (no part is fully masked)."""
    if kv_len <= 0 or q_len <= 0 or block <= 0 or n_splits <= 0:
        raise NumericsError(f"kv_partition: kv_len {kv_len}, q_len {q_len}, block {block}, splits {n_splits} "
                            "must be positive")
    blocks = [(a, min(a + block, kv_len)) for a in range(0, kv_len, block)]
    n = min(n_splits, len(blocks))
    while True:
        base, extra = divmod(len(blocks), n)
        parts, i = [], 0
        for s in range(n):
            take = base + (1 if s < extra else 0)
            parts.append(blocks[i:i + take])
            i += take
        if n == 1 or parts[-1][0][0] <= kv_len - q_len:
            return parts
        n -= 1


def visible_limit(kv_len: int, q_len: int, rows: np.ndarray) -> np.ndarray:
    """Last kv position each row may see: kv_len - q_len + (row % q_len)."""
    return kv_len - q_len + (np.asarray(rows, dtype=np.int64) % q_len)


def block_needs_mask(kv_len: int, q_len: int, b: int) -> bool:
    """Does block [a, b) hold a column some row may not see? (Only the last q_len - 1 positions can.)"""
    return b - 1 > kv_len - q_len


# ---- per-tile primitives -------------------------------------------------------------------------------

def softmax_scale(dk: int) -> np.float32:
    return F32(1.0 / np.sqrt(dk))


def exp_f32(x: np.ndarray) -> np.ndarray:
    """Correctly rounded fp32 exp (float64 exp, one rounding); exp(-inf) = 0."""
    return np.exp(np.asarray(x, dtype=np.float64)).astype(F32)


def row_sum_f32(p: np.ndarray) -> np.ndarray:
    """fp32 row sums, columns added left to right (sequential, not pairwise)."""
    p = np.ascontiguousarray(p, dtype=F32)
    if p.shape[1] == 0:
        return np.zeros(p.shape[0], F32)
    return np.cumsum(p, axis=1, dtype=F32)[:, -1].copy()


def scores_bf16(s32: np.ndarray, sm_scale: np.float32) -> np.ndarray:
    """S = fp32(Q K^T) x softmax scale (one fp32 multiply)."""
    return np.asarray(s32, dtype=F32) * F32(sm_scale)


def scores_msd(parts: np.ndarray, row_scale: np.ndarray) -> np.ndarray:
    """S from the int32 partials (p, r, n) of the Q passes times raw int8 K: combine passes, x M_r/127.
    (The K channel scale and the softmax scale were folded into Q before the decomposition.)"""
    return msd_combine_passes(parts) * np.asarray(row_scale, dtype=F32)[:, None]


def mask_scores(s: np.ndarray, limit: np.ndarray, col0: int) -> np.ndarray:
    """-inf where column col0 + j lies beyond the row's visible limit (the Vector's select)."""
    cols = col0 + np.arange(s.shape[1])
    return np.where(cols[None, :] <= np.asarray(limit)[:, None], s, F32(-np.inf)).astype(F32)


def softmax_block(s: np.ndarray, m_old: np.ndarray | None = None, l_old: np.ndarray | None = None):
    """One online-softmax step over a block of scores. Returns (P fp32, m_new, l_new, alpha or None)."""
    s = np.asarray(s, dtype=F32)
    bm = s.max(axis=1)
    m_new = bm if m_old is None else np.maximum(m_old, bm)
    p = exp_f32(s - m_new[:, None])
    rs = row_sum_f32(p)
    if m_old is None:
        return p, m_new, rs, None
    alpha = exp_f32(m_old - m_new)
    return p, m_new, l_old * alpha + rs, alpha


def o_update(o_old: np.ndarray | None, alpha: np.ndarray | None, pv: np.ndarray) -> np.ndarray:
    """O' = O x alpha + PV (fp32, two roundings); the first block starts from PV."""
    pv = np.asarray(pv, dtype=F32)
    if o_old is None:
        return pv.copy()
    return o_old * alpha[:, None] + pv


def pv_msd(parts: np.ndarray) -> np.ndarray:
    """PV from the int32 partials (p, r, n) of P's passes times raw int8 V: the passes combined, in units of
    P's fixed scale 1/127 (which is folded into the V scale at the end: `msd_v_scale`)."""
    return msd_combine_passes(parts)


def msd_v_scale(v_scale: np.ndarray) -> np.ndarray:
    """MSD: the per-channel V scale with P's fixed scale folded in, fp32(v_scale) x fp32(1/127), formed once
    per work item; the output is bf16((O / l) x this)."""
    return np.asarray(v_scale, dtype=F32) * P_SCALE


def fold_q(q: np.ndarray, k_scale: np.ndarray, sm_scale: np.float32) -> np.ndarray:
    """MSD: Q' = fp32(Q) x (k_scale x sm_scale), the per-channel factor formed once in fp32."""
    factor = np.asarray(k_scale, dtype=F32) * F32(sm_scale)
    return np.asarray(q).astype(F32) * factor[None, :]


def decompose_q(qf: np.ndarray, passes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-row MSD of Q': (components (p, r, Dk) int8, row scale M_r / 127 fp32)."""
    rmax = row_absmax(qf)
    return msd_decompose(qf, rmax, passes, name="q"), msd_row_scale(rmax)


def decompose_p(p: np.ndarray, passes: int) -> np.ndarray:
    """P in [0, 1] into p int8 passes with the fixed scale 127: (p, r, n)."""
    return msd_decompose_fixed(p, passes, name="P")


def merge_weights(ms: np.ndarray, ls: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split parts' (m_s, l_s), each (S, r): weights w_s = exp(m_s - M) (S, r) and L = sum w_s l_s."""
    ms, ls = np.asarray(ms, dtype=F32), np.asarray(ls, dtype=F32)
    w = exp_f32(ms - ms.max(axis=0)[None, :])
    total = w[0] * ls[0]
    for s in range(1, ms.shape[0]):
        total = total + w[s] * ls[s]
    return w, total


def merge_acc(acc: np.ndarray | None, w: np.ndarray, o: np.ndarray) -> np.ndarray:
    """acc + w x O_s (fp32); the first part starts from w x O_s."""
    term = np.asarray(o, dtype=F32) * np.asarray(w, dtype=F32)[:, None]
    return term if acc is None else acc + term


OUT_DTYPES = ("bf16", "fp32")


def finalize(o: np.ndarray, l: np.ndarray, v_scale: np.ndarray | None = None, out: str = "bf16") -> np.ndarray:
    """(O / l) [x v_scale], fp32 division and multiply, cast to bf16 (out = "fp32": no cast)."""
    y = np.asarray(o, dtype=F32) / np.asarray(l, dtype=F32)[:, None]
    if v_scale is not None:
        y = y * np.asarray(v_scale, dtype=F32)[None, :]
    return y.astype(F32) if out == "fp32" else to_bf16(y)


# ---- whole-tensor references ---------------------------------------------------------------------------

def _heads(q, k, v, dv):
    q, k = np.asarray(q), np.asarray(k)
    if q.ndim != 4 or k.ndim != 4 or q.shape[:2] != k.shape[:2] or q.shape[3] != k.shape[3]:
        raise NumericsError(f"attention: Q {q.shape} and K {k.shape} must be (B, Hkv, R, Dk) and (B, Hkv, L, Dk)")
    return q, k, (None if v is None else np.asarray(v))


def _attend(q, k_cache, v_cache, *, q_len, block, n_splits, dv, block_kv, scores, pv_fn, v_scale_of, out="bf16"):
    """The loop every reference shares: per (batch, kv-head), per split part, per block."""
    b_n, h_n, r, _ = q.shape
    kv_len = k_cache.shape[2]
    parts = kv_partition(kv_len, q_len, block, n_splits)
    odt = F32 if out == "fp32" else to_bf16(np.zeros(1)).dtype
    res = np.empty((b_n, h_n, r, dv), dtype=odt)
    limit = visible_limit(kv_len, q_len, np.arange(r))
    for b in range(b_n):
        for h in range(h_n):
            state = scores.prepare(q[b, h], h)
            results = []
            for part in parts:
                m = l = o = None
                for a, e in part:
                    kb, vb = block_kv(b, h, a, e)
                    s = scores.block(state, kb)
                    if block_needs_mask(kv_len, q_len, e):
                        s = mask_scores(s, limit, a)
                    p, m, l, alpha = softmax_block(s, m, l)
                    o = o_update(o, alpha, pv_fn(p, vb))
                results.append((o, m, l))
            vs = v_scale_of(h)
            if len(results) == 1:
                o, _, l = results[0]
                res[b, h] = finalize(o, l, vs, out)
            else:
                w, total = merge_weights(np.stack([x[1] for x in results]), np.stack([x[2] for x in results]))
                acc = None
                for s_i, (o_s, _, _) in enumerate(results):
                    acc = merge_acc(acc, w[s_i], o_s)
                res[b, h] = finalize(acc, total, vs, out)
    return res


class _Bf16Scores:
    def __init__(self, sm):
        self.sm = sm

    def prepare(self, qh, h):
        return qh

    def block(self, qh, kb):
        return scores_bf16(mmad_fp32(None, qh, np.ascontiguousarray(kb.T)), self.sm)


class _MsdScores:
    def __init__(self, sm, k_scale, passes):
        self.sm, self.k_scale, self.passes = sm, k_scale, passes

    def prepare(self, qh, h):
        comps, rs = decompose_q(fold_q(qh, self.k_scale[h], self.sm), self.passes)
        return msd_stack(comps), rs

    def block(self, state, kb):
        stacked, rs = state
        return scores_msd(msd_unstack(mmad_int32(None, stacked, np.ascontiguousarray(kb.T)), self.passes), rs)


def _v_of(k_cache, v_cache, dv):
    return (lambda b, h, a, e: v_cache[b, h, a:e]) if v_cache is not None else \
        (lambda b, h, a, e: k_cache[b, h, a:e, :dv])


def attention_native(q, k, v=None, *, q_len, block, n_splits=1, dv, out="bf16", **_):
    """bf16 Q, K, V (V = K[..., :dv] when v is None, MLA): bf16 mmads with fp32 accumulation."""
    q, k, v = _heads(q, k, v, dv)
    vget = _v_of(k, v, dv)
    return _attend(q, k, v, q_len=q_len, block=block, n_splits=n_splits, dv=dv,
                   block_kv=lambda b, h, a, e: (k[b, h, a:e], vget(b, h, a, e)),
                   scores=_Bf16Scores(softmax_scale(k.shape[3])),
                   pv_fn=lambda p, vb: mmad_fp32(None, to_bf16(p), vb), v_scale_of=lambda h: None, out=out)


def attention_dequant(q, kq, ks, vq=None, vs=None, *, q_len, block, n_splits=1, dv, out="bf16", **_):
    """Dequant baseline: every int8 K / V block -> bf16(fp32(q) x s) on the Vector, then as native."""
    q, kq, vq = _heads(q, kq, vq, dv)
    vget = _v_of(kq, vq, dv)
    vsc = (lambda h: vs[h]) if vq is not None else (lambda h: ks[h][:dv])

    def block_kv(b, h, a, e):
        return dequant_int_tile(kq[b, h, a:e], ks[h]), dequant_int_tile(vget(b, h, a, e), vsc(h))

    return _attend(q, kq, vq, q_len=q_len, block=block, n_splits=n_splits, dv=dv, block_kv=block_kv,
                   scores=_Bf16Scores(softmax_scale(kq.shape[3])),
                   pv_fn=lambda p, vb: mmad_fp32(None, to_bf16(p), vb), v_scale_of=lambda h: None, out=out)


def attention_msd(q, kq, ks, vq=None, vs=None, *, q_len, block, n_splits=1, dv, passes=2, out="bf16", **_):
    """MSD-p: K scale (and softmax scale) folded into Q, Q in p int8 passes per row, S from int8 x raw
    int8 K; P in p passes with the fixed scale 127, PV from int8 x raw int8 V; V scale on O's columns."""
    q, kq, vq = _heads(q, kq, vq, dv)
    vget = _v_of(kq, vq, dv)
    vsc = (lambda h: vs[h]) if vq is not None else (lambda h: ks[h][:dv])

    def pv_fn(p, vb):
        pc = msd_stack(decompose_p(p, passes))
        return pv_msd(msd_unstack(mmad_int32(None, pc, vb), passes))

    return _attend(q, kq, vq, q_len=q_len, block=block, n_splits=n_splits, dv=dv,
                   block_kv=lambda b, h, a, e: (kq[b, h, a:e], vget(b, h, a, e)),
                   scores=_MsdScores(softmax_scale(kq.shape[3]), np.asarray(ks, dtype=F32), passes),
                   pv_fn=pv_fn, v_scale_of=lambda h: msd_v_scale(vsc(h)), out=out)


def _fp64_attention(q, k, v, q_len):
    """Exact-input FP64 attention with the causal chunk mask; q (B, H, R, Dk), k (B, H, L, Dk), v (B, H, L, Dv).

    k and v may be callables (b, h) -> that head's (L, D) float64 array, so that a long cache is widened
    to float64 one head at a time instead of whole (a 32k-token cache of a batch would take GBs)."""
    q64 = np.asarray(q, dtype=np.float64)
    b_n, h_n, r = q64.shape[:3]
    k_of = k if callable(k) else (lambda b, h, a=np.asarray(k, dtype=np.float64): a[b, h])
    v_of = v if callable(v) else (lambda b, h, a=np.asarray(v, dtype=np.float64): a[b, h])
    out = None
    for b in range(b_n):
        for h in range(h_n):
            kh, vh = k_of(b, h), v_of(b, h)
            kv_len = kh.shape[0]
            s = np.einsum("rd,ld->rl", q64[b, h], kh) / np.sqrt(kh.shape[1])
            limit = visible_limit(kv_len, q_len, np.arange(r))
            s = np.where(np.arange(kv_len)[None, :] <= limit[:, None], s, -np.inf)
            s = s - s.max(axis=1, keepdims=True)
            p = np.exp(s)
            p /= p.sum(axis=1, keepdims=True)
            o = np.einsum("rl,ld->rd", p, vh)
            if out is None:
                out = np.empty((b_n, h_n, r, o.shape[1]))
            out[b, h] = o
    return out


def attention_fp64(q, kq, ks, vq=None, vs=None, *, q_len, dv, **_):
    """FP64 truth on the dequantized KV (the exact values q x s the int8 codes stand for)."""
    kq = np.asarray(kq)
    ks64 = np.asarray(ks, dtype=np.float64)

    def k_of(b, h):
        return kq[b, h].astype(np.float64) * ks64[h][None, :]
    if vq is None:
        def v_of(b, h):
            return k_of(b, h)[:, :dv]
    else:
        vq_, vs64 = np.asarray(vq), np.asarray(vs, dtype=np.float64)

        def v_of(b, h):
            return vq_[b, h].astype(np.float64) * vs64[h][None, :]
    return _fp64_attention(q, k_of, v_of, q_len)


def attention_fp64_bf16(q, k, v=None, *, q_len, dv, **_):
    """FP64 truth on bf16 K and V (native method)."""
    k = np.asarray(k, dtype=np.float64)
    v = k[..., :dv] if v is None else np.asarray(v, dtype=np.float64)
    return _fp64_attention(q, k, v, q_len)


__all__ = [
    "kv_partition", "visible_limit", "block_needs_mask", "softmax_scale", "exp_f32", "row_sum_f32",
    "scores_bf16", "scores_msd", "mask_scores", "softmax_block", "o_update", "pv_msd", "fold_q", "decompose_q",
    "decompose_p", "msd_v_scale", "merge_weights", "merge_acc", "finalize", "attention_native", "attention_dequant",
    "attention_msd", "attention_fp64", "attention_fp64_bf16",
]
