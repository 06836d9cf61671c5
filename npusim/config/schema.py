"""The hardware config schema: every field with its unit and help text, validated strictly.

TOML keys are the human spelling ("bandwidth = \"1.6 TB/s\""); Python attributes carry the unit in their
name (`bandwidth_bytes_per_s`). Unknown keys, missing keys, wrong types, non-positive rates or capacities
and unit-less values are errors that name the field path.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, PositiveFloat, PositiveInt

from npusim.units import parse_bytes, parse_bytes_per_s, parse_hz



def _with_unit(unit: str) -> PlainSerializer:
    # Dumped configs (trace metadata, sweep rows) read back through the same unit parsers.
    return PlainSerializer(lambda v: f"{v:f}".rstrip("0").rstrip(".") + f" {unit}", return_type=str)


Bytes = Annotated[PositiveInt, BeforeValidator(parse_bytes), _with_unit("B")]
BytesPerS = Annotated[PositiveFloat, BeforeValidator(parse_bytes_per_s), _with_unit("B/s")]
Hz = Annotated[PositiveFloat, BeforeValidator(parse_hz), _with_unit("Hz")]
Cycles = Annotated[int, Field(ge=0)]

# Cube operand types a preset may list. Names follow DESIGN.md: k0 (K per fractal step) by type.
CUBE_DTYPES = ("bf16", "fp16", "fp32", "int8", "int4", "fp8", "mxfp8", "mxfp4", "fp4")
VECTOR_OPS = ("copy", "add", "mul", "muls", "adds", "cast", "max", "abs", "round", "sub", "exp", "div",
              "reduce_max", "reduce_sum", "select")


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, populate_by_name=True)


class Chip(_Strict):
    cores: PositiveInt = Field(description="AI-core groups on the chip; each is 1 AIC + `aiv_per_core` AIV")
    aiv_per_core: PositiveInt = Field(description="vector cores (AIV) per AI-core group")
    clock_hz: Hz = Field(alias="clock", description="AI-core clock, e.g. \"1.8 GHz\"; 1 cycle of this clock is the time unit")


class Cube(_Strict):
    fractal_m: PositiveInt = Field(description="rows of the Cube's fractal (elements)")
    fractal_n: PositiveInt = Field(description="columns of the Cube's fractal (elements)")
    k0: dict[str, PositiveInt] = Field(
        description="K elements consumed per fractal step, by operand dtype; a dtype absent here is not supported")
    fp32_cycle_factor: PositiveInt = Field(description="fractal-step multiplier for fp32 operands (cycles per step)")
    start_cycles: Cycles = Field(description="fixed issue cost of one mmad (cycles)")
    mx_block_elements: PositiveInt | None = Field(
        default=None, description="K elements sharing one E8M0 scale for native MX formats; absent = no MX support")


class Vector(_Strict):
    repeat_bytes: PositiveInt = Field(description="bytes processed by one vector repeat (256 B on Ascend)")
    start_cycles: Cycles = Field(description="fixed issue cost of one vector instruction (cycles)")
    cycles_per_repeat: dict[str, PositiveFloat] = Field(
        description="cycles per repeat, by vector op; simple ops ~1, transcendental/reductions more")


class Buffers(_Strict):
    l1_bytes: Bytes = Field(alias="l1", description="AIC L1 buffer capacity, e.g. \"512 KiB\"")
    l0a_bytes: Bytes = Field(alias="l0a", description="Cube operand-A buffer capacity")
    l0b_bytes: Bytes = Field(alias="l0b", description="Cube operand-B buffer capacity")
    l0c_bytes: Bytes = Field(alias="l0c", description="Cube accumulator buffer capacity")
    ub_bytes: Bytes = Field(alias="ub", description="unified buffer capacity of each AIV")


class Hbm(_Strict):
    capacity_bytes: Bytes = Field(alias="capacity", description="HBM capacity, e.g. \"64 GiB\"")
    bandwidth_bytes_per_s: BytesPerS = Field(alias="bandwidth", description="chip-wide HBM bandwidth, e.g. \"1.6 TB/s\"")
    first_byte_cycles: Cycles = Field(description="extra latency of a DMA that touches HBM (cycles)")
    window_cycles: PositiveInt = Field(
        description="granularity at which HBM bandwidth is apportioned among transfers (cycles); "
                    "smaller is finer and slower to simulate")


class L2(_Strict):
    enabled: bool = Field(description="false forces every GM access to HBM (the 'all-HBM' switch)")
    capacity_bytes: Bytes = Field(alias="capacity", description="L2 capacity, e.g. \"192 MiB\"")
    read_rate_bytes_per_cycle: PositiveFloat = Field(description="L2 read rate per core (B/cycle)")
    write_rate_bytes_per_cycle: PositiveFloat = Field(description="L2 write rate per core (B/cycle)")


class Port(_Strict):
    rate_bytes_per_cycle: PositiveFloat = Field(description="port rate cap of this path per core (B/cycle)")
    start_cycles: Cycles = Field(description="fixed start cost of one transfer on this path (cycles)")


class Dma(_Strict):
    gm_to_l1: Port = Field(description="AIC MTE2: GM -> L1")
    gm_to_ub: Port = Field(description="AIV MTE2: GM -> UB")
    ub_to_gm: Port = Field(description="AIV MTE3: UB -> GM")
    l1_to_l0a: Port = Field(description="AIC MTE1: L1 -> L0A")
    l1_to_l0b: Port = Field(description="AIC MTE1: L1 -> L0B")
    l0c_to_gm: Port = Field(description="AIC FIXP: L0C -> GM")
    l0c_to_l1: Port = Field(description="AIC FIXP: L0C -> L1")
    ub_to_l1: Port | None = Field(default=None, description="AIV MTE3: UB -> L1 direct path (absent on 910B)")
    l0c_to_ub: Port | None = Field(default=None, description="AIC FIXP: L0C -> UB direct path (absent on 910B)")


class Sync(_Strict):
    intra_core_flag_cycles: Cycles = Field(description="set_flag/wait_flag latency between pipes of one core (cycles)")
    cross_core_flag_cycles: Cycles = Field(description="AIC<->AIV or core<->core flag latency (cycles)")


class Meta(_Strict):
    name: str = Field(description="preset name")
    description: str = Field(description="what part this models and how faithfully")


class HardwareConfig(_Strict):
    meta: Meta
    chip: Chip
    cube: Cube
    vector: Vector
    buffers: Buffers
    hbm: Hbm
    l2: L2
    dma: Dma
    sync: Sync

    def to_data(self) -> dict:
        """The config as it would be written in TOML (keys and unit strings), loadable again."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    @property
    def hbm_bytes_per_cycle(self) -> float:
        """Chip-wide HBM bandwidth in bytes per AI-core cycle."""
        return self.hbm.bandwidth_bytes_per_s / self.chip.clock_hz

    @property
    def peak_bf16_flops(self) -> float:
        """Chip bf16 peak: cores x fractal MACs per cycle x 2 x clock."""
        macs = self.cube.fractal_m * self.cube.fractal_n * self.cube.k0["bf16"]
        return self.chip.cores * macs * 2 * self.chip.clock_hz
