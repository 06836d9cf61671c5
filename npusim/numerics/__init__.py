"""Arithmetic the schedules execute: formats, MSD decomposition, references, metrics.

No simpy in here: the simulator calls these functions from op completions, and the references call the
very same primitives on whole tensors, which is what makes bit-exact comparison meaningful.
Module map, rounding rules, per-tile primitives and metric formulas: docs/numerics.md.
"""
