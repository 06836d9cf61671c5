"""Tile-level numerics of the attention schedules, registered for the datapath, and the references.

Every function is a thin call into npusim.numerics.attention, the primitives the whole-tensor references
are composed of: that is what makes the simulated output bit-exact against the reference.
"""

from __future__ import annotations

import numpy as np

from npusim.graph.ops import Op, Tensor
from npusim.hw.datapath import Datapath, Inputs, register, register_init
from npusim.numerics import attention as att
from npusim.numerics.cube import to_bf16
from npusim.numerics.dtypes import np_dtype
from npusim.numerics.intq import quantize_weights_int
from npusim.numerics.msd import msd_stack
from npusim.sim.references import register_reference

register_reference("attention_native", att.attention_native)
register_reference("attention_dequant", att.attention_dequant)
register_reference("attention_msd", att.attention_msd)
register_reference("attention_fp64", att.attention_fp64)
register_reference("attention_fp64_bf16", att.attention_fp64_bf16)


@register_init("attn_kv")
def _init_kv(t: Tensor, spec: dict, inputs: Inputs) -> np.ndarray:
    """The KV cache from float K, V ~ N(0, 1) with a few outlier channels (x4): bf16 for the native method,
    or int8 codes with per-(kv-head, channel) scales over all batches and positions.

    Only the form a graph asks for is made (bf16, or codes and scales), from K's or V's own float stream,
    and the float tensor is dropped as soon as it is converted: a 32k-token cache of a batch is GBs."""
    b, h, l, dk, dv, latent = (spec[k] for k in ("b", "h", "l", "dk", "dv", "latent"))
    part = spec["part"]  # k_bf16 | v_bf16 | kq | ks | vq | vs
    which, fmt = part[0], ("bf16" if part.endswith("_bf16") else "int8")
    key = ("attn_kv", b, h, l, dk, dv, latent, which, fmt)
    if key not in inputs.cache:
        d = dk if which == "k" else dv
        x = inputs.random(f"{which}_float", (b, h, l, d), {"kind": "normal", "std": 1.0})
        x[..., ::17] *= np.float32(4.0)  # outlier channels: what per-channel scales are for
        if fmt == "bf16":
            parts = {part: to_bf16(x)}
        else:
            q = np.empty(x.shape, np.int8)
            s = np.empty((h, d), np.float32)
            for hh in range(h):
                qw = quantize_weights_int(x[:, hh].reshape(b * l, d), bits=8)
                q[:, hh] = qw.q.reshape(b, l, d)
                s[hh] = qw.scale
            parts = {which + "q": q, which + "s": s}
        del x
        inputs.cache[key] = parts
    return inputs.cache[key][part].astype(np_dtype(t.dtype), copy=False)


@register("attn_copy_t")
def _copy_t(dp: Datapath, op: Op, spec: dict) -> dict:
    """L1 -> L0B with transpose: a (tokens x Dk) K block's columns as the (k x tokens) B operand."""
    src = dp.read_slot(op, op.reads[0])
    sub = tuple(slice(a, b) for a, b in spec["sub"])
    return {op.writes[0]: np.ascontiguousarray(src[sub].T)}


@register("attn_q_msd")
def _q_msd(dp: Datapath, op: Op, spec: dict) -> dict:
    """reads [q rows (r, Dk) bf16, k scale (Dk,), (row scales)] -> writes [passes (p, r, Dk) int8, the AIV's
    row scales with rows row_off.. of this chunk filled in]."""
    q = dp.read_slot(op, op.reads[0])
    ks = dp.read_slot(op, op.reads[1])
    comps, rs = att.decompose_q(att.fold_q(q, ks, np.float32(spec["sm"])), spec["passes"])
    off = spec.get("row_off", 0)
    full = np.zeros(spec.get("rows", rs.shape[0]), np.float32) if off == 0 else dp.read_slot(op, op.reads[2]).copy()
    full[off:off + rs.shape[0]] = rs
    return {op.writes[0]: comps, op.writes[1]: full}


@register("attn_vs_msd")
def _vs_msd(dp: Datapath, op: Op, spec: dict) -> dict:
    """reads [V channel scales (Dv,)] -> writes [the same x 1/127] (P's fixed scale folded in)."""
    return {op.writes[0]: att.msd_v_scale(dp.read_slot(op, op.reads[0]))}


@register("attn_softmax")
def _softmax(dp: Datapath, op: Op, spec: dict) -> dict:
    """reads [S partials (pp, r, n), (row scale), (m, l)] -> writes [P for the Cube, m, l, (alpha)]."""
    msd = spec["method"] == "msd"
    vals = [dp.read_slot(op, s) for s in op.reads]
    s_in = vals.pop(0)
    if msd:
        s = att.scores_msd(np.asarray(s_in), vals.pop(0))
    else:
        s = att.scores_bf16(np.asarray(s_in)[0], np.float32(spec["sm"]))
    if spec["mask"]:
        rows = spec["row0"] + np.arange(s.shape[0])
        s = att.mask_scores(s, att.visible_limit(spec["kv_len"], spec["q_len"], rows), spec["col0"])
    m_old, l_old = (None, None) if spec["first"] else (vals[0], vals[1])
    p, m, l, alpha = att.softmax_block(s, m_old, l_old)
    pout = att.decompose_p(p, spec["passes"]) if msd else to_bf16(p)[None]
    out = {op.writes[0]: pout, op.writes[1]: m, op.writes[2]: l}
    if alpha is not None:
        out[op.writes[3]] = alpha
    return out


@register("attn_o_update")
def _o_update(dp: Datapath, op: Op, spec: dict) -> dict:
    """reads [PV partials (pp, r, nc), (O, alpha)] -> writes [O] with columns cols updated."""
    pv_in = np.asarray(dp.read_slot(op, op.reads[0]))
    pv = att.pv_msd(pv_in) if spec["method"] == "msd" else pv_in[0].astype(np.float32)
    c0, c1 = spec["cols"]
    if spec["first"]:
        cur = dp.slots.get(op.writes[0])
        o = np.zeros((pv.shape[0], spec["dv"]), np.float32) if cur is None or cur.shape != (pv.shape[0], spec["dv"]) \
            else cur.copy()
        o[:, c0:c1] = att.o_update(None, None, pv)
    else:
        o = dp.read_slot(op, op.reads[1]).copy()
        alpha = dp.read_slot(op, op.reads[2])
        o[:, c0:c1] = att.o_update(o[:, c0:c1], alpha, pv)
    return {op.writes[0]: o}


@register("attn_finalize")
def _finalize(dp: Datapath, op: Op, spec: dict) -> dict:
    """reads [O or merged acc (r, Dv | nc), l, (v scale (Dv,))] -> writes [bf16 output columns cols]."""
    o = dp.read_slot(op, op.reads[0])
    l = dp.read_slot(op, op.reads[1])
    c0, c1 = spec["cols"]
    if spec.get("acc_cols"):
        o = o[:, : c1 - c0]  # a merge accumulator holds just this column chunk
    else:
        o = o[:, c0:c1]
    vs = dp.read_slot(op, op.reads[2])[c0:c1] if len(op.reads) > 2 else None
    return {op.writes[0]: att.finalize(o, l, vs, spec.get("out", "bf16"))}


@register("attn_merge_w")
def _merge_w(dp: Datapath, op: Op, spec: dict) -> dict:
    """reads [m of every part (S, r), l of every part (S, r)] -> writes [weights (S, r), L (r,)]."""
    ms = np.asarray(dp.read_slot(op, op.reads[0])).reshape(spec["parts"], -1)
    ls = np.asarray(dp.read_slot(op, op.reads[1])).reshape(spec["parts"], -1)
    w, total = att.merge_weights(ms, ls)
    return {op.writes[0]: w, op.writes[1]: total}


@register("attn_merge_acc")
def _merge_acc(dp: Datapath, op: Op, spec: dict) -> dict:
    """reads [part O columns (r, nc), weights, (acc)] -> writes [acc + w_s x O_s]."""
    o = np.asarray(dp.read_slot(op, op.reads[0]))
    o = o.reshape(-1, o.shape[-1])
    w = dp.read_slot(op, op.reads[1])[spec["part"]]
    acc = None if spec["first"] else dp.read_slot(op, op.reads[2])
    return {op.writes[0]: att.merge_acc(acc, w, o)}


def stack_passes(x: np.ndarray) -> np.ndarray:
    return msd_stack(x)
