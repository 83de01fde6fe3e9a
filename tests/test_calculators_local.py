"""On-lattice EAM (numba) and ASE calculators restricted to local clusters."""
from __future__ import annotations

import numpy as np
import pytest

from matscale.calculators.ase_local import ASELocalEnergy, build_local_cluster
from matscale.calculators.base import LocalEnergyModel
from matscale.calculators.eam import read_setfl
from matscale.calculators.lattice_eam import LatticeEAM, lammps_spline, lammps_spline_eval
from matscale.potentials import potential_path
from matscale.systems.alloy.lattice import BCCLattice, random_solid_solution

EQUIMOLAR = {"Nb": 1 / 3, "Mo": 1 / 3, "Ta": 1 / 3}


@pytest.fixture(scope="module")
def lattice_eam():
    return LatticeEAM.from_setfl()


def _random_pairs(lat, rng, n):
    v = int(lat.vacancies[0])
    hops = [(v, int(t)) for t in lat.neighbors(1)[v]]
    swaps = [tuple(int(x) for x in rng.choice(lat.n_sites, 2, replace=False)) for _ in range(n)]
    return np.array(hops + swaps)


def _whole_cell_delta(model, lat, a, b):
    after = lat.species.copy()
    after[[a, b]] = after[[b, a]]
    return model.total_energy(lat, after) - model.total_energy(lat)


# ---------------------------------------------------------------- on-lattice EAM
def test_lattice_eam_is_a_local_energy_model(lattice_eam):
    assert isinstance(lattice_eam, LocalEnergyModel)
    assert lattice_eam.interaction_range == pytest.approx(2 * 6.3953, abs=1e-3)
    lat = BCCLattice(4)
    np.testing.assert_allclose(lattice_eam.shell_distances(lat),
                               3.24 * np.sqrt([3 / 4, 1, 2, 11 / 4, 3]), rtol=1e-12)


def test_lammps_spline_reproduces_grid_values():
    pot = read_setfl(potential_path("NbMoTa_Zhou04.eam.alloy"))
    spl = lammps_spline(pot.density[1], pot.dr)
    k = np.arange(200, 1900, 97)
    np.testing.assert_allclose(lammps_spline_eval(spl, k * pot.dr, pot.dr), pot.density[1][k], rtol=1e-12)
    f = lammps_spline(pot.embedding[0], pot.drho)
    k = np.arange(1, 1990, 101)
    np.testing.assert_allclose(lammps_spline_eval(f, k * pot.drho, pot.drho, embedding=True),
                               pot.embedding[0][k], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cells", [(1, 2, 3), (2, 2, 2), (5, 5, 5)])
def test_lattice_eam_swap_delta_equals_total_energy_difference(lattice_eam, cells):
    """Includes boxes with self-images (1 cell along x) and repeated neighbours."""
    rng = np.random.default_rng(42)
    lat = random_solid_solution(EQUIMOLAR, cells, n_vacancies=2, rng=rng)
    pairs = _random_pairs(lat, rng, 10)
    ref = np.array([_whole_cell_delta(lattice_eam, lat, a, b) for a, b in pairs])
    np.testing.assert_allclose(lattice_eam.swap_deltas(lat, pairs), ref, atol=1e-9, rtol=0)
    for (a, b), r in zip(pairs[:4], ref[:4]):
        assert lattice_eam.swap_delta(lat, a, b) == pytest.approx(r, abs=1e-9)
    # forward and backward swaps cancel
    a, b = pairs[0]
    d = lattice_eam.swap_delta(lat, a, b)
    lat.species[[a, b]] = lat.species[[b, a]]
    assert lattice_eam.swap_delta(lat, a, b) == pytest.approx(-d, abs=1e-12)


def test_lattice_eam_follows_in_place_species_changes(lattice_eam):
    """No notification needed: modify lattice.species in place, the next ΔE is exact."""
    rng = np.random.default_rng(5)
    lat = random_solid_solution(EQUIMOLAR, 4, n_vacancies=1, rng=rng)
    for _ in range(30):
        a, b = (int(x) for x in rng.choice(lat.n_sites, 2, replace=False))
        d = lattice_eam.swap_delta(lat, a, b)
        assert d == pytest.approx(_whole_cell_delta(lattice_eam, lat, a, b), abs=1e-9)
        lat.species[[a, b]] = lat.species[[b, a]]


def test_lattice_eam_cache_survives_other_lattices_and_new_arrays(lattice_eam, monkeypatch):
    """Two lattices of one geometry used in turn, a replaced species array, many changes at once,
    and the periodic from-scratch rebuild: every ΔE stays exact."""
    import matscale.calculators.lattice_eam as module

    monkeypatch.setattr(module, "_REBUILD_AFTER", 25)
    rng = np.random.default_rng(17)
    lat1 = random_solid_solution(EQUIMOLAR, (3, 4, 5), n_vacancies=1, rng=rng)
    lat2 = random_solid_solution(EQUIMOLAR, (3, 4, 5), n_vacancies=3, rng=rng)
    for step in range(12):
        lat = (lat1, lat2)[step % 2]
        if step == 6:
            lat.species = rng.permutation(lat.species)  # a new array object
        if step % 3 == 0:
            lat.species[:] = rng.permutation(lat.species)  # many sites change at once
        pairs = np.array([tuple(int(x) for x in rng.choice(lat.n_sites, 2, replace=False)) for _ in range(4)])
        ref = np.array([_whole_cell_delta(lattice_eam, lat, a, b) for a, b in pairs])
        np.testing.assert_allclose(lattice_eam.swap_deltas(lat, pairs), ref, atol=1e-9, rtol=0)
        a, b = pairs[0]
        assert lattice_eam.swap_delta(lat, a, b) == pytest.approx(ref[0], abs=1e-9)
        lat.species[[a, b]] = lat.species[[b, a]]


def test_lattice_eam_errors(lattice_eam):
    lat = BCCLattice(2, 3.3, ("Nb", "W"))
    with pytest.raises(ValueError, match="'W'"):
        lattice_eam.swap_delta(lat, 0, 1)
    lat = BCCLattice(2)
    with pytest.raises(ValueError, match="site indices"):
        lattice_eam.swap_delta(lat, 0, 16)
    with pytest.raises(ValueError, match=r"\[M, 2\]"):
        lattice_eam.swap_deltas(lat, np.zeros((3, 3), dtype=int))
    with pytest.raises(FileNotFoundError):
        LatticeEAM.from_setfl("missing.eam.alloy")


# ---------------------------------------------------------------- ASE calculators, local cluster
CUAGAU = {"Cu": 0.4, "Ag": 0.3, "Au": 0.3}
EMT_CUTOFF = 6.0  # ASE EMT neighbour-list radius is rc + 0.5 = 5.88 Å for Cu/Ag/Au


def _emt_lattice(cells, seed):
    return random_solid_solution(CUAGAU, cells, lattice_constant=3.4, n_vacancies=2,
                                 rng=np.random.default_rng(seed), elements=("Cu", "Ag", "Au"))


@pytest.mark.parametrize("cells,per_atom", [((3, 3, 3), None), ((7, 7, 7), None), ((7, 7, 7), False),
                                            ((3, 3, 3), False)])
def test_ase_local_equals_whole_cell_with_emt(cells, per_atom):
    """Per-atom path (general) and total-energy path (7^3: cluster free of periodic copies;
    3^3: falls back to the whole cell)."""
    from ase.calculators.emt import EMT

    lat = _emt_lattice(cells, 9)
    model = ASELocalEnergy(EMT(), cutoff=EMT_CUTOFF, per_atom=per_atom)
    assert isinstance(model, LocalEnergyModel)
    rng = np.random.default_rng(1)
    v = int(lat.vacancies[0])
    pairs = np.array([(v, int(t)) for t in lat.neighbors(1)[v][:2]]
                     + [tuple(int(x) for x in rng.choice(lat.n_sites, 2, replace=False)) for _ in range(2)])
    local = model.swap_deltas(lat, pairs)
    whole = np.array([model.swap_delta_whole_cell(lat, a, b) for a, b in pairs])
    np.testing.assert_allclose(local, whole, atol=1e-8, rtol=0)
    assert np.max(np.abs(whole)) > 1e-3


def test_local_cluster_is_smaller_than_a_large_cell():
    lat = _emt_lattice((7, 7, 7), 2)
    cluster = build_local_cluster(lat, np.array([[0, 1]]), EMT_CUTOFF)
    assert len(cluster.sites) < lat.n_sites
    assert not cluster.has_foreign_copy[0]
    small = build_local_cluster(_emt_lattice((3, 3, 3), 2), np.array([[0, 1]]), EMT_CUTOFF)
    assert small.has_foreign_copy[0]


def test_ase_eam_local_delta_equals_lattice_eam(lattice_eam):
    """ASE's pure-Python EAM on the shipped setfl file against the numba on-lattice EAM."""
    from ase.calculators.eam import EAM

    lat = random_solid_solution(EQUIMOLAR, 3, n_vacancies=1, rng=np.random.default_rng(4))
    model = ASELocalEnergy(EAM(potential=str(potential_path("NbMoTa_Zhou04.eam.alloy"))), cutoff=6.3953)
    v = int(lat.vacancies[0])
    pairs = np.array([(v, int(lat.neighbors(1)[v][0])), (3, 40)])
    # ASE (scipy splines) vs LAMMPS-style interpolation on the same table: ~1e-8 eV per atom
    np.testing.assert_allclose(model.swap_deltas(lat, pairs), lattice_eam.swap_deltas(lat, pairs),
                               atol=1e-6, rtol=0)


def test_ase_local_errors():
    from ase.calculators.eam import EAM
    from ase.calculators.emt import EMT

    with pytest.raises(ValueError, match="cutoff"):
        ASELocalEnergy(EMT(), cutoff=0.0)
    with pytest.raises(TypeError, match="ASE calculator"):
        ASELocalEnergy(object(), cutoff=5.0)
    with pytest.raises(ValueError, match="per_atom"):
        ASELocalEnergy(EAM(potential=str(potential_path("NbMoTa_Zhou04.eam.alloy"))), cutoff=6.4, per_atom=True)
    lat = _emt_lattice((2, 2, 2), 0)
    with pytest.raises(ValueError, match="different sites"):
        ASELocalEnergy(EMT(), cutoff=6.0).swap_deltas(lat, np.array([[1, 1]]))
