"""Configuration validation: every bad field gives a one-line ConfigError naming it."""
from __future__ import annotations

from pathlib import Path

import pytest

from matscale.config import (ConfigError, config_to_toml, load_config, loads_config, quick_config,
                             write_config)

REPO = Path(__file__).resolve().parents[1]

GOOD = """
[system]
kind = "ising"
L = 16
T = 2.5
h = 0.1

[small]
p = [4, 8]
n_runs = 10
n_sweeps = 5
"""


def _with(extra: str = "", replace: tuple[str, str] | None = None) -> str:
    text = GOOD if replace is None else GOOD.replace(*replace)
    return text + extra


def test_good_config_defaults_and_types():
    cfg = loads_config(GOOD)
    assert cfg.workflow == "pipeline"
    assert cfg.system.L == 16 and cfg.system.T == 2.5 and cfg.system.J == 1.0
    assert cfg.patch_sides == (4, 8)
    assert cfg.n_patches(4) == 16 and cfg.n_patches(8) == 4
    assert cfg.closure.dim == 2  # Ising: (m, rho_dw, closure_1, closure_2)


def test_curie_weiss_defaults_to_no_closure():
    cfg = loads_config(_with(replace=('kind = "ising"', 'kind = "curie_weiss"')))
    assert cfg.closure.dim == 0


@pytest.mark.parametrize("text, field", [
    (_with("\n[train]\nfoo = 1\n"), "train.foo"),
    (_with("bogus = 3\n", replace=("[system]", "bogus = 3\n[system]")), "bogus"),
    (_with(replace=("L = 16", 'L = "16"')), "system.L"),
    (_with(replace=("L = 16", "L = 16.0")), "system.L"),
    (_with(replace=("L = 16", "L = true")), "system.L"),
    (_with(replace=("T = 2.5", "T = 0.0")), "system.T"),
    (_with(replace=("T = 2.5", "T = -1.0")), "system.T"),
    (_with(replace=("T = 2.5", 'T = "hot"')), "system.T"),
    (_with(replace=('kind = "ising"', 'kind = "potts"')), "system.kind"),
    (_with(replace=("p = [4, 8]", "p = [3]")), "small.p"),
    (_with(replace=("L = 16", "L = 24")), "small.p"),  # L/p = 6 or 3: not a power of 2
    (_with(replace=("p = [4, 8]", "p = [4, 4]")), "small.p"),
    (_with(replace=("n_runs = 10", "n_runs = 0")), "small.n_runs"),
    (_with(replace=("n_sweeps = 5", "n_sweeps = -2")), "small.n_sweeps"),
    (_with("\n[upsampling]\nmode = \"blur\"\n"), "upsampling.mode"),
    (_with("\n[upsampling]\nfactor = 1\n"), "upsampling.factor"),
    (_with("\n[partial]\nboundary = \"open\"\n"), "partial.boundary"),
    (_with("\n[partial]\nn_draws = 0\n"), "partial.n_draws"),
    (_with("\n[upsampling]\nrandom_relax = -1.0\n"), "upsampling.random_relax"),
    (_with("\n[train]\ndrift_scheme = \"rk4\"\n"), "train.drift_scheme"),
    (_with("\n[closure]\nnormalization = \"robust\"\n"), "closure.normalization"),
    (_with("\n[train]\nmethod = \"fancy\"\n"), "train.method"),
    (_with("\n[train]\ndiffusion = \"full\"\n"), "train.diffusion"),
    (_with("\n[train]\nhidden = [64, 0]\n"), "train.hidden"),
    (_with("\n[train]\nlr = 0.0\n"), "train.lr"),
    (_with("\n[train]\nvalidation_fraction = 1.0\n"), "train.validation_fraction"),
    (_with("\n[reference]\nmagnetizations = [0.0, 1.5]\n"), "reference.magnetizations[1]"),
    (_with("\n[reference]\ngrid_dt = 0.0\n"), "reference.grid_dt"),
    (_with("\n[reference]\nduration = 1.0\ngrid_dt = 2.0\n"), "reference.grid_dt"),
    (_with("\n[evaluate]\npaper_paths = 500\n"), "evaluate.paper_paths"),
    (_with("\n[partial]\nseed = -3\n"), "partial.seed"),
    (_with("\n[reference]\nseed = -1\n"), "reference.seed"),
    (_with("\n[fit]\npairs = \"x.npz\"\n"), "[fit]"),
    (_with("\n[train]\nseed = 1.5\n"), "train.seed"),
    ("[small]\np = 4\n", "[system]"),
    ("[system]\nkind = \"ising\"\nL = 16\nT = 1.0\n", "[small]"),
    ("[system]\nkind = \"ising\"\nT = 1.0\n[small]\np = 4\n", "system.L"),
    ("workflow = \"magic\"\n", "workflow"),
    ("workflow = \"fit\"\n[fit]\npairs = \"a.csv\"\n", "fit.pairs"),
    ("workflow = \"fit\"\n[fit]\npairs = \"a.npz\"\nloss = \"l2\"\n", "fit.loss"),
    ("workflow = \"fit\"\n[fit]\npairs = \"a.npz\"\nlam = 0.0\n", "fit.lam"),
    ("workflow = \"fit\"\n[fit]\npairs = \"a.npz\"\n[system]\nkind = \"ising\"\nL = 8\nT = 1.0\n", "[system]"),
    ("this is = not toml [", "invalid TOML"),
])
def test_bad_fields_raise_one_line_error_naming_the_field(text, field):
    with pytest.raises(ConfigError) as info:
        loads_config(text)
    message = str(info.value)
    assert field in message
    assert "\n" not in message


def test_curie_weiss_rejects_a_closure():
    text = _with("\n[closure]\ndim = 2\n", replace=('kind = "ising"', 'kind = "curie_weiss"'))
    with pytest.raises(ConfigError, match="closure.dim"):
        loads_config(text)


def test_toml_round_trip_and_written_copy(tmp_path):
    cfg = loads_config(_with("\n[train]\nmethod = \"both\"\nhidden = [32, 32]\n"))
    again = loads_config(config_to_toml(cfg))
    assert again.to_dict() == cfg.to_dict()
    write_config(cfg, tmp_path)
    assert load_config(tmp_path / "config.toml").to_dict() == cfg.to_dict()
    assert (tmp_path / "config.json").is_file()


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")


SHIPPED = sorted(p.name for p in (REPO / "inputs").glob("*.toml"))


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_inputs_validate(name):
    cfg = load_config(REPO / "inputs" / name)
    if "[quick" in (REPO / "inputs" / name).read_text():  # every preset validates too
        load_config(REPO / "inputs" / name, quick=True)
    if name in ("curie_weiss.toml", "ising.toml"):
        assert cfg.system.L == 64 and cfg.system.h == 0.1
        assert cfg.patch_sides == (8, 16, 32)
    if name in ("ising.toml", "nbmota.toml"):  # both carry a [quick] preset
        quick = load_config(REPO / "inputs" / name, quick=True)
        assert quick.small.n_runs < cfg.small.n_runs


def test_quick_config_is_the_alloy_preset():
    cfg = quick_config()
    assert cfg.workflow == "pipeline" and len(cfg.patch_sides) == 1 and cfg.system.kind == "nbmota"
    assert cfg.to_dict() == load_config(REPO / "inputs" / "nbmota.toml", quick=True).to_dict()


def test_fields_added_later_stay_out_of_stage_records_at_their_default():
    """Run folders made before a field existed stay valid: at its default the field is not part
    of the stage's configuration record; set to anything else, it is."""
    import dataclasses

    from matscale.pipeline.runner import _LATER_FIELDS, stage_config

    cfg = loads_config((REPO / "inputs" / "ising.toml").read_text(), source=REPO / "inputs", quick=True)
    for stage in ("upsample", "fit"):
        record = stage_config(cfg, stage, 16)
        for (section, key) in _LATER_FIELDS:
            assert key not in record.get(section, {}), (stage, section, key)
    seams = dataclasses.replace(cfg, upsampling=dataclasses.replace(cfg.upsampling, relax_region="seams"))
    assert stage_config(seams, "upsample", 16)["upsampling"]["relax_region"] == "seams"
