"""LLM layer workloads (workloads/*.toml): the GEMMs of one transformer layer, with token counts per phase.

Each file names the published model config its shapes come from. Validated at load with the same
strictness as hardware configs: unknown keys and wrong types name their place in the file.
"""

from __future__ import annotations

import tomllib
from math import ceil
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, model_validator

from npusim.config.load import data_dir
from npusim.errors import NpusimError


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class WorkloadMeta(_Strict):
    name: str = Field(description="model name")
    source: str = Field(description="the published config the shapes come from")
    layers: PositiveInt = Field(description="transformer layers in the model")
    notes: str = Field(default="", description="modelling assumptions")


class GemmShape(_Strict):
    name: str = Field(description="projection name, e.g. qkv_proj")
    k: PositiveInt = Field(description="input features")
    n: PositiveInt = Field(description="output features")
    count: PositiveInt = Field(default=1, description="how many such GEMMs run per layer")
    m_fraction: float = Field(default=1.0, gt=0, le=1,
                              description="share of the phase's tokens this GEMM sees (e.g. a routed expert)")
    layers: PositiveInt | None = Field(default=None, description="layers that have this GEMM (default: all)")
    first_layer: int = Field(default=0, ge=0, description="index of the first layer that has it (0-based)")

    def m_for(self, tokens: int) -> int:
        return max(1, ceil(tokens * self.m_fraction))

    def in_layer(self, layer: int, total: int) -> bool:
        return _in_layer(self, layer, total)


class AttentionShape(_Strict):
    name: str = Field(description="e.g. gqa_decode")
    q_heads: PositiveInt = Field(description="query heads")
    kv_heads: PositiveInt = Field(description="KV heads (1 for MLA)")
    head_dim: PositiveInt = Field(description="head dimension (MLA: the latent width)")
    rope_dim: int = Field(default=0, ge=0, description="extra rope columns of K (MLA)")
    latent: bool = Field(default=False, description="MLA: one latent cache shared by K and V")
    contexts: list[PositiveInt] = Field(min_length=1, description="context lengths (cached tokens) to study")
    layers: PositiveInt | None = Field(default=None, description="layers that have it (default: all)")
    first_layer: int = Field(default=0, ge=0, description="index of the first layer that has it (0-based)")

    def in_layer(self, layer: int, total: int) -> bool:
        return _in_layer(self, layer, total)


def _in_layer(part: GemmShape | AttentionShape, layer: int, total: int) -> bool:
    return part.first_layer <= layer < part.first_layer + (part.layers or total - part.first_layer)


class Workload(_Strict):
    workload: WorkloadMeta
    phases: dict[str, PositiveInt] = Field(description="phase name -> tokens (M) per GEMM")
    gemm: list[GemmShape] = Field(min_length=1)
    attention: list[AttentionShape] = Field(
        default=[], description="attention of one layer; in a decode phase (tokens <= 256) the batch is the "
                                "phase's token count and each sequence has one query")

    @model_validator(mode="after")
    def _layers_fit(self) -> "Workload":
        total = self.workload.layers
        for part in (*self.gemm, *self.attention):
            last = part.first_layer + (part.layers or total - part.first_layer)
            if part.first_layer >= total or last > total:
                raise ValueError(f"{part.name}: layers {part.first_layer}..{last - 1} are outside the model's "
                                 f"{total} layers (0..{total - 1})")
        return self

    def tokens(self, phase: str | None) -> tuple[str, int]:
        if phase is None:
            phase = next(iter(self.phases))
        if phase not in self.phases:
            raise NpusimError(f"workload {self.workload.name}: no phase {phase!r} (phases: {', '.join(self.phases)})")
        return phase, self.phases[phase]


def workload_paths() -> dict[str, Path]:
    return {p.stem: p for p in sorted(data_dir("workloads").glob("*.toml"))}


def load_workload(name_or_path: str | Path) -> Workload:
    path = workload_paths().get(str(name_or_path)) or Path(name_or_path)
    if not path.is_file():
        raise NpusimError(f"no workload named or at {str(name_or_path)!r} (shipped: {', '.join(workload_paths())})")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise NpusimError(f"{path}: not a readable TOML workload ({exc})") from None
    try:
        return Workload.model_validate(data)
    except ValidationError as exc:
        lines = [f"  {'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:12]]
        raise NpusimError(f"invalid workload {path}:\n" + "\n".join(lines)) from None
