"""`npusim run attention` and `npusim compare attention` (registered by npusim.cli.main)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console

from npusim.cli import common
from npusim.kernels.attention.build import build_attention
from npusim.report.compare import render_comparison, run_attention_comparison

BATCH = typer.Option(1, "--batch", help="sequences in the batch")
Q_HEADS = typer.Option(32, "--q-heads", help="query heads")
KV_HEADS = typer.Option(8, "--kv-heads", help="KV heads (q-heads must be a multiple; MLA: 1)")
Q_LEN = typer.Option(1, "--q-len", help="queries per sequence: 1 = decode, up to 256 = a causal prefill chunk")
KV_LEN = typer.Option(4096, "--kv-len", help="cached tokens per sequence (context length, including the chunk)")
HEAD_DIM = typer.Option(128, "--head-dim", help="head dimension (MLA: the latent width, e.g. 512)")
ROPE_DIM = typer.Option(0, "--rope-dim", help="extra rope columns of K (MLA: 64)")
LATENT = typer.Option(False, "--latent", help="MLA: one latent cache of head-dim + rope-dim, V = its first head-dim columns")
KV = typer.Option("int8", "--kv", help="KV cache format: bf16 (method native) | int8 (dequant, msd)")
METHOD = typer.Option("dequant", "--method", help="native (bf16 KV) | dequant | msd")
PASSES = typer.Option(2, "--passes", help="MSD passes (1-4)")
BLOCK = typer.Option(None, "--block", help="KV tokens per block (default: the largest that fits the buffers)")
CORES = typer.Option(None, "--cores", help="AI-core groups to use (default: all)")
KV_SLOTS = typer.Option(None, "--kv-slots", help="KV blocks held in L1 at once, 2 or 3 (default: the model's choice)")
ROWS = typer.Option(None, "--rows-per-item", help="query rows (heads x queries) per work item; each item reads the "
                                                  "whole KV of its head group (default: the model's choice)")
OUT = typer.Option("bf16", "--out", help="output dtype: bf16, or fp32 to see each method's error without the final cast")


def _shape(batch, q_heads, kv_heads, q_len, kv_len, head_dim, rope_dim, latent, block, cores, kv_slots=None,
           rows_per_item=None, out="bf16") -> dict[str, Any]:
    if out not in ("bf16", "fp32"):
        raise common.NpusimError(f"--out {out!r}: choose bf16 or fp32")
    return dict(batch=batch, q_heads=q_heads, kv_heads=kv_heads, q_len=q_len, kv_len=kv_len, head_dim=head_dim,
                rope_dim=rope_dim, latent=latent, block=block, cores=cores, kv_slots=kv_slots,
                rows_per_item=rows_per_item, out=out)


@common.user_errors
def run_attention(
    batch: int = BATCH, q_heads: int = Q_HEADS, kv_heads: int = KV_HEADS, q_len: int = Q_LEN, kv_len: int = KV_LEN,
    head_dim: int = HEAD_DIM, rope_dim: int = ROPE_DIM, latent: bool = LATENT, kv: str = KV, method: str = METHOD,
    passes: int = PASSES, block: Optional[int] = BLOCK, cores: Optional[int] = CORES,
    kv_slots: Optional[int] = KV_SLOTS, rows_per_item: Optional[int] = ROWS, out: str = OUT,
    hw: str = common.HW, overrides: Optional[list[str]] = common.SET, seed: int = common.SEED,
    trace: Optional[Path] = common.TRACE, json_out: bool = common.JSON, no_numerics: bool = common.NO_NUMERICS,
) -> None:
    """Flash attention (decode or a prefill chunk) over a bf16 or int8 KV cache: native, the dequant
    baseline, or MSD. GQA by default; --latent for MLA (e.g. --q-heads 128 --kv-heads 1 --head-dim 512
    --rope-dim 64)."""
    cfg = common.config(hw, overrides)
    if method == "native":
        kv = "bf16"
    graph = build_attention(cfg, kv=kv, method=method, passes=passes,
                            **_shape(batch, q_heads, kv_heads, q_len, kv_len, head_dim, rope_dim, latent, block, cores,
                                     kv_slots, rows_per_item, out))
    common.run_and_report(graph, cfg, seed=seed, trace=trace, json_out=json_out, numerics=not no_numerics)


@common.user_errors
def compare_attention(
    batch: int = BATCH, q_heads: int = Q_HEADS, kv_heads: int = KV_HEADS, q_len: int = Q_LEN, kv_len: int = KV_LEN,
    head_dim: int = HEAD_DIM, rope_dim: int = ROPE_DIM, latent: bool = LATENT, passes: int = PASSES,
    block: Optional[int] = BLOCK, cores: Optional[int] = CORES,
    kv_slots: Optional[int] = KV_SLOTS, rows_per_item: Optional[int] = ROWS, out: str = OUT,
    hw: str = common.HW, overrides: Optional[list[str]] = common.SET, seed: int = common.SEED,
    json_out: bool = common.JSON, no_numerics: bool = common.NO_NUMERICS,
) -> None:
    """One attention shape, native (bf16 KV), dequant and MSD (int8 KV) side by side."""
    cfg = common.config(hw, overrides)
    shape = _shape(batch, q_heads, kv_heads, q_len, kv_len, head_dim, rope_dim, latent, block, cores,
                   kv_slots, rows_per_item, out)
    docs = run_attention_comparison(cfg, shape, passes=passes, seed=seed, numerics=not no_numerics)
    if json_out:
        sys.stdout.write(json.dumps({"rows": docs}, sort_keys=True) + "\n")
        return
    kind = "MLA" if latent else "GQA"
    render_comparison(docs, Console(), f"attention {kind} b{batch} {q_heads}x{kv_heads} heads, q_len {q_len}, "
                                       f"kv_len {kv_len}, d {head_dim}+{rope_dim} on {cfg.meta.name}")
    Console().print("KV-caused HBM bytes (kv_cache + workspace): " + ", ".join(
        f"{d['compare']['method']} {d['compare']['kv_hbm_bytes']:,}" for d in docs), soft_wrap=True)
