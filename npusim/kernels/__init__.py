"""Schedule builders, one folder per kernel. Importing this package registers every kernel's tile-level
compute functions and input generators with the datapath, so saved graphs run without their builder."""

from npusim.kernels.gemm import compute as _gemm_compute  # noqa: F401
from npusim.kernels.gemm import compute_mx as _gemm_compute_mx  # noqa: F401
from npusim.kernels.attention import compute as _attention_compute  # noqa: F401
