"""npusim: a cycle-level discrete-event simulator of an Ascend-style NPU."""

__version__ = "0.1.0"
