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


# ---------------------------------------------------------------- receptive field (message passing)
from ase.calculators.calculator import Calculator, all_changes  # noqa: E402


class TwoLayerMessagePassing(Calculator):
    """A small two-layer message-passing energy on ASE's neighbour list (a real computation):

        h_i = Σ_{j: r_ij < r_c} w[Z_j] f(r_ij),      f(r) = (1 − (r/r_c)²)²
        e_i = ε[Z_i] + u[Z_i] Σ_{j: r_ij < r_c} f(r_ij) tanh(h_j)

    e_i depends on every atom within 2 r_c of i (two layers × r_c), like a 2-layer MLIP. It has
    no entry for the vacancy symbol 'X' (Z = 0) and fails on it, like CHGNet. It records every
    requested property list, and ``dtype`` sets the precision of its outputs."""

    implemented_properties = ["energy", "energies"]

    W = {41: 0.6, 42: 1.4, 73: 1.0}
    EPS = {41: -7.0, 42: -6.0, 73: -8.0}
    U = {41: -0.8, 42: -1.3, 73: -0.5}

    def __init__(self, cutoff: float = 3.5, dtype=np.float64, **kwargs):
        super().__init__(**kwargs)
        self.cutoff = cutoff
        self.n_layers = 2
        self.dtype = dtype
        self.requested: list[list[str]] = []

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        from ase.neighborlist import neighbor_list

        super().calculate(atoms, properties, system_changes)
        self.requested.append(list(properties))
        z = self.atoms.numbers
        w = np.array([self.W[int(k)] for k in z])
        i, j, d = neighbor_list("ijd", self.atoms, self.cutoff)
        f = (1.0 - (d / self.cutoff) ** 2) ** 2
        h = np.bincount(i, weights=w[j] * f, minlength=len(z))
        e = (np.array([self.EPS[int(k)] for k in z])
             + np.array([self.U[int(k)] for k in z]) * np.bincount(i, weights=f * np.tanh(h[j]), minlength=len(z)))
        self.results["energies"] = e.astype(self.dtype)
        self.results["energy"] = self.dtype(e.astype(self.dtype).sum(dtype=self.dtype))


class BatchedMessagePassing(TwoLayerMessagePassing):
    """The same model with a ``batch_energies`` hook (one call for many structures)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.batch_calls = 0

    def batch_energies(self, structures):
        self.batch_calls += 1
        out = []
        for atoms in structures:
            self.calculate(atoms, ["energies"], all_changes)
            out.append(self.results["energies"].copy())
        return out


class TaskMessagePassing(TwoLayerMessagePassing):
    """The same model with CHGNet's extra ``task`` argument of ``calculate``."""

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes, task="efsm"):
        self.tasks = [*getattr(self, "tasks", []), task]
        super().calculate(atoms, properties, system_changes)


def _mp_lattice(cells, seed, n_vacancies=1):
    return random_solid_solution(EQUIMOLAR, cells, n_vacancies=n_vacancies, rng=np.random.default_rng(seed))


def _hops_and_swaps(lat, seed, n_swaps=2):
    rng = np.random.default_rng(seed)
    hops = [(int(v), int(t)) for v in lat.vacancies for t in lat.neighbors(1)[v]]
    swaps = [tuple(int(x) for x in rng.choice(np.flatnonzero(lat.species > 0), 2, replace=False))
             for _ in range(n_swaps)]
    return np.array(hops + swaps)


def test_receptive_field_is_detected_from_layers_and_cutoff():
    from ase.calculators.emt import EMT
    from ase.calculators.lj import LennardJones

    model = ASELocalEnergy(TwoLayerMessagePassing(cutoff=3.5))
    assert model.receptive_field == pytest.approx(7.0) and model.cutoff == pytest.approx(3.5)
    assert model.interaction_range == pytest.approx(14.0)
    assert ASELocalEnergy(EMT(), cutoff=6.0).receptive_field == pytest.approx(6.0)
    assert ASELocalEnergy(LennardJones(sigma=2.0)).receptive_field == pytest.approx(6.0)
    eam = ASELocalEnergy(EAM_CALC())
    assert eam.receptive_field == pytest.approx(6.3953, abs=1e-3)


def EAM_CALC():
    from ase.calculators.eam import EAM

    return EAM(potential=str(potential_path("NbMoTa_Zhou04.eam.alloy")))


def test_unknown_receptive_field_is_refused_with_what_to_pass():
    from ase.calculators.emt import EMT

    class Anonymous(TwoLayerMessagePassing):
        def __init__(self):
            super().__init__()
            del self.n_layers

    with pytest.raises(ValueError, match=r"receptive_field=<message-passing layers × cutoff>"):
        ASELocalEnergy(Anonymous())
    with pytest.raises(ValueError, match="receptive_field"):
        ASELocalEnergy(EMT())  # EMT is local but says nothing about its cutoff
    with pytest.raises(ValueError, match="must be >= cutoff"):
        ASELocalEnergy(TwoLayerMessagePassing(), cutoff=3.5, receptive_field=2.0)
    # an explicit receptive field is accepted for any calculator
    assert ASELocalEnergy(Anonymous(), receptive_field=7.0).interaction_range == pytest.approx(14.0)


@pytest.mark.parametrize("cells", [(8, 8, 8), (4, 4, 4)])
def test_message_passing_local_delta_needs_the_receptive_field(cells):
    """8³ (1024 sites): a local cluster of radius 2·R; 4³: the whole cell (the cluster would be
    larger). With R = 2 r_c every ΔE equals the whole-cell ΔE to round-off; with the bare cutoff
    r_c the cluster misses atoms whose energies change through the second layer."""
    lat = _mp_lattice(cells, 3)
    pairs = _hops_and_swaps(lat, 4)
    model = ASELocalEnergy(TwoLayerMessagePassing(cutoff=3.5))
    whole = np.array([model.swap_delta_whole_cell(lat, a, b) for a, b in pairs])
    assert np.max(np.abs(whole)) > 0.05
    np.testing.assert_allclose(model.swap_deltas(lat, pairs), whole, atol=1e-9, rtol=0)
    if cells == (8, 8, 8):
        bare = ASELocalEnergy(TwoLayerMessagePassing(cutoff=3.5), receptive_field=3.5)
        error = np.abs(bare.swap_deltas(lat, pairs) - whole)
        assert error.max() > 1e-3  # meV-level errors, as the bare-cutoff cluster of a real MLIP


def test_vacancies_never_reach_the_calculator_and_only_energies_are_requested():
    """Two vacancies: every hop works although the model has no 'X'; every call asks for
    per-atom energies only (and task='e' where calculate() takes a task, as CHGNet's)."""
    lat = _mp_lattice((8, 8, 8), 5, n_vacancies=2)
    calc = TaskMessagePassing(cutoff=3.5)
    model = ASELocalEnergy(calc)
    pairs = _hops_and_swaps(lat, 6, n_swaps=0)
    delta = model.swap_deltas(lat, pairs)
    assert np.isfinite(delta).all()
    assert {tuple(p) for p in calc.requested} == {("energies",)}
    assert set(calc.tasks) == {"e"}
    with pytest.raises(KeyError):  # the model itself cannot take a vacancy
        calc.get_potential_energy(lat.to_atoms())


def test_before_state_is_evaluated_once_per_group_and_batched():
    """2 vacancies × 8 hops: 2 'before' clusters + 16 end states; one batch call with the hook."""
    lat = _mp_lattice((8, 8, 8), 7, n_vacancies=2)
    pairs = _hops_and_swaps(lat, 8, n_swaps=0)
    n_hops = int((lat.species[pairs[:, 1]] > 0).sum())
    plain = ASELocalEnergy(TwoLayerMessagePassing(cutoff=3.5))
    reference = plain.swap_deltas(lat, pairs)
    assert plain.n_structures == 2 + n_hops and plain.n_calls == 2 + n_hops
    calc = BatchedMessagePassing(cutoff=3.5)
    batched = ASELocalEnergy(calc)
    np.testing.assert_allclose(batched.swap_deltas(lat, pairs), reference, atol=1e-12, rtol=0)
    assert calc.batch_calls == 1 and batched.n_calls == 1 and batched.n_structures == 2 + n_hops
    # whole-cell mode: the unchanged cell once per call, whatever the number of groups
    small = _mp_lattice((4, 4, 4), 7, n_vacancies=2)
    cell_model = ASELocalEnergy(TwoLayerMessagePassing(cutoff=3.5))
    small_pairs = _hops_and_swaps(small, 9, n_swaps=3)
    cell_model.swap_deltas(small, small_pairs)
    n_moves = int((small.species[small_pairs[:, 0]] != small.species[small_pairs[:, 1]]).sum())
    assert cell_model.n_structures == 1 + n_moves


def test_float32_site_energies_give_float64_deltas():
    """A float32 model: ΔE summed in float64 over the changed region matches the float64 model to
    ~1e-6 eV (float32 site energies ~7 eV carry ~5e-7 eV each), while the difference of the
    float32 totals of the 1024-atom cell (~7000 eV, spacing 4.9e-4 eV) is quantised."""
    lat = _mp_lattice((8, 8, 8), 11)
    pairs = _hops_and_swaps(lat, 12)
    exact = ASELocalEnergy(TwoLayerMessagePassing(cutoff=3.5)).swap_deltas(lat, pairs)
    single = ASELocalEnergy(TwoLayerMessagePassing(cutoff=3.5, dtype=np.float32)).swap_deltas(lat, pairs)
    np.testing.assert_allclose(single, exact, atol=2e-5, rtol=0)
    totals = ASELocalEnergy(TwoLayerMessagePassing(cutoff=3.5, dtype=np.float32), per_atom=False)
    coarse = np.array([totals.swap_delta_whole_cell(lat, a, b) for a, b in pairs])
    assert np.max(np.abs(coarse - exact)) > 5 * np.max(np.abs(single - exact))


def test_site_energies_switched_off_is_explained():
    """CHGNet-like: 'energies' listed but only computed on request; auto mode uses totals, an
    explicit per_atom=True names the option to set."""

    class SiteEnergiesOff(TwoLayerMessagePassing):
        return_site_energies = False

    model = ASELocalEnergy(SiteEnergiesOff())
    assert model.per_atom is False
    with pytest.raises(ValueError, match="return_site_energies=True"):
        ASELocalEnergy(SiteEnergiesOff(), per_atom=True)


def test_receptive_field_from_named_message_passing_blocks():
    """Models without a layer-count attribute: the blocks are counted by name (SevenNet's
    '0_convolution', ..., NequIP-style 'interaction_0', ..., MACE's ModuleList 'interactions');
    self-interaction layers inside a block do not count."""
    import torch
    from ase.calculators.calculator import Calculator

    from matscale.calculators.ase_local import detect_receptive_field

    class Blocks(torch.nn.Module):
        def __init__(self, names):
            super().__init__()
            for name in names:
                self.add_module(name, torch.nn.Linear(2, 2))

    class Calc(Calculator):
        implemented_properties = ["energy", "energies"]

        def __init__(self, model, cutoff):
            super().__init__()
            self.model, self.cutoff = model, cutoff

    sevenn_like = Blocks([f"{i}_{part}" for i in range(5)
                          for part in ("self_interaction_1", "convolution", "self_interaction_2")])
    assert detect_receptive_field(Calc(sevenn_like, 5.0)) == (25.0, 5.0)
    mace_like = torch.nn.Module()
    mace_like.interactions = torch.nn.ModuleList([torch.nn.Linear(2, 2) for _ in range(2)])
    assert detect_receptive_field(Calc(mace_like, 6.0)) == (12.0, 6.0)
    assert detect_receptive_field(Calc(Blocks(["embedding", "readout"]), 5.0)) is None
