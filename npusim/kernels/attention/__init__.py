"""Flash attention with a quantized KV cache (DESIGN.md 4.3): native bf16, dequant baseline and MSD."""
