"""Hardware configs: schema (with units and help text), presets, and overrides."""

from npusim.config.load import load_config, preset_paths
from npusim.config.schema import HardwareConfig

__all__ = ["HardwareConfig", "load_config", "preset_paths"]
