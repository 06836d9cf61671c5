import pytest

from npusim.config import load_config, preset_paths
from npusim.config.load import parse_override
from npusim.errors import ConfigError
from npusim.units import UnitError, parse_bytes, parse_bytes_per_s, parse_hz


def test_presets_ship_and_load():
    assert {"910b", "950"} <= set(preset_paths())
    c = load_config("910b")
    assert c.chip.cores == 24 and c.chip.clock_hz == 1.8e9
    assert c.buffers.l0c_bytes == 128 * 1024 and c.buffers.ub_bytes == 192 * 1024
    assert c.dma.ub_to_l1 is None and c.dma.l0c_to_ub is None
    assert round(c.peak_bf16_flops / 1e12, 1) == 353.9
    c = load_config("950")
    assert c.chip.cores == 32 and c.dma.ub_to_l1 is not None and c.cube.mx_block_elements == 32
    assert round(c.peak_bf16_flops / 1e12) == 433


def test_every_value_in_a_preset_has_a_source_comment():
    for path in preset_paths().values():
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            s = line.strip()
            if "=" in s and not s.startswith("#") and not s.startswith("["):
                key = s.split("=")[0].strip()
                if key in ("name", "description"):
                    continue
                # a value line carries its source on the line, or in the comment block directly above it
                prev = path.read_text().splitlines()[lineno - 2].strip()
                assert "#" in s or prev.startswith("#"), f"{path.name}:{lineno} has no source comment"


@pytest.mark.parametrize("text, expected", [("192 KiB", 196608), ("64 GiB", 64 * 2**30), ("128 GB", 128e9),
                                            ("1 B", 1)])
def test_parse_bytes(text, expected):
    assert parse_bytes(text) == expected


def test_parse_rates():
    assert parse_bytes_per_s("1.6 TB/s") == 1.6e12
    assert parse_hz("1.65 GHz") == 1.65e9


@pytest.mark.parametrize("bad", [1600, "1600", "1.6 T", "1e9 B/s", "-1 TB/s", True, "1.6 TB"])
def test_unitless_or_malformed_bandwidth_is_refused(bad):
    with pytest.raises(UnitError):
        parse_bytes_per_s(bad)


@pytest.mark.parametrize("override, field", [
    ("hbm.bandwith=\"1 TB/s\"", "hbm.bandwith"),
    ("hbm.bandwidth=\"-1 TB/s\"", "hbm.bandwidth"),
    ("hbm.bandwidth=\"0 TB/s\"", "hbm.bandwidth"),
    ("hbm.bandwidth=1600", "hbm.bandwidth"),
    ("chip.cores=0", "chip.cores"),
    ("chip.cores=\"24\"", "chip.cores"),
    ("dma.gm_to_l1.rate_bytes_per_cycle=0", "dma.gm_to_l1.rate_bytes_per_cycle"),
    ("buffers.ub=\"-5 KiB\"", "buffers.ub"),
    ("l2.enabled=3", "l2.enabled"),
])
def test_bad_values_name_the_field(override, field):
    with pytest.raises(ConfigError) as e:
        load_config("910b", [override])
    assert field in str(e.value)


def test_missing_key_is_named(tmp_path):
    text = (preset_paths()["910b"]).read_text().replace("ub = \"192 KiB\"", "")
    p = tmp_path / "x.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=r"buffers\.ub: missing"):
        load_config(str(p))


def test_overrides_parse_as_toml_values():
    assert parse_override("l2.enabled=false") == (["l2", "enabled"], False)
    assert parse_override("hbm.bandwidth=3.2 TB/s") == (["hbm", "bandwidth"], "3.2 TB/s")
    assert parse_override("chip.cores=8") == (["chip", "cores"], 8)
    c = load_config("910b", ["hbm.bandwidth=3.2 TB/s", "l2.enabled=false",
                             "dma.ub_to_l1={rate_bytes_per_cycle = 128, start_cycles = 100}"])
    assert c.hbm.bandwidth_bytes_per_s == 3.2e12 and not c.l2.enabled and c.dma.ub_to_l1.rate_bytes_per_cycle == 128
    with pytest.raises(ConfigError, match="PATH=VALUE"):
        parse_override("nonsense")


def test_not_a_preset_or_file():
    with pytest.raises(ConfigError, match="no preset or file named"):
        load_config("9100")
