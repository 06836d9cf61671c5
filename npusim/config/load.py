"""Loading hardware configs: presets by name, user files, and `--set path=value` overrides."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

from pydantic import ValidationError

from npusim.config.schema import HardwareConfig
from npusim.errors import ConfigError


def data_dir(name: str) -> Path:
    """Folder of shipped data (`configs` or `workloads`): inside the wheel, or the source checkout."""
    packaged = Path(str(resources.files("npusim"))) / "_data" / name
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / name


def preset_paths() -> dict[str, Path]:
    return {p.stem: p for p in sorted(data_dir("configs").glob("*.toml"))}


def parse_override(text: str) -> tuple[list[str], Any]:
    """'hbm.bandwidth=3.2 TB/s' -> (['hbm', 'bandwidth'], '3.2 TB/s').

    The value is read as a TOML value when it is one (numbers, booleans, inline tables, quoted strings)
    and as a bare string otherwise, so `--set l2.enabled=false` is a boolean and
    `--set hbm.bandwidth="3.2 TB/s"` a string, as a shell user would expect.
    """
    key, sep, raw = text.partition("=")
    path = [part.strip() for part in key.split(".")]
    if not sep or not all(path):
        raise ConfigError(f"--set {text!r}: expected PATH=VALUE, e.g. --set hbm.bandwidth=\"3.2 TB/s\"")
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return path, value


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for i, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"--set {text!r}: {'.'.join(path[: i + 1])} is a value, not a section")
            node = child
        node[path[-1]] = value
    return data


def _format_validation_error(source: str, err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"])
        msg = e["msg"]
        if e["type"] == "missing":
            msg = "missing required field"
        elif e["type"] == "extra_forbidden":
            msg = "unknown field (typo?)"
        elif e["type"] == "value_error":
            msg = str(e.get("ctx", {}).get("error", msg))
        lines.append(f"  {loc}: {msg}")
    return f"invalid hardware config {source}:\n" + "\n".join(lines)


def load_config(hw: str | Path, overrides: Iterable[str] = ()) -> HardwareConfig:
    """Load a preset by name (e.g. '910b') or a TOML file path, apply overrides, validate."""
    presets = preset_paths()
    path = presets.get(str(hw)) if isinstance(hw, str) else None
    if path is None:
        path = Path(hw)
        if not path.is_file():
            raise ConfigError(
                f"no preset or file named {str(hw)!r} (presets: {', '.join(presets) or 'none'})")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    data = apply_overrides(data, overrides)
    try:
        return HardwareConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(str(path), exc)) from None
