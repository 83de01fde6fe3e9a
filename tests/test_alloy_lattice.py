"""BCC lattice geometry, state, ASE / pymatgen / trajectory I/O and input validation."""
from __future__ import annotations

import json

import numpy as np
import pytest

from matscale.potentials import potential_path
from matscale.systems.alloy import io as alloy_io
from matscale.systems.alloy.lattice import (
    NEIGHBOR_OFFSETS,
    SHELL_DISTANCES,
    BCCLattice,
    lattice_from_atoms,
    random_solid_solution,
)

EQUIMOLAR = {"Nb": 1 / 3, "Mo": 1 / 3, "Ta": 1 / 3}


def _min_image_distances(lattice: BCCLattice, site: int) -> np.ndarray:
    diff = lattice.positions - lattice.positions[site]
    box = np.diag(lattice.cell)
    diff -= box * np.round(diff / box)
    return np.linalg.norm(diff, axis=1)


def test_site_order_matches_golden_file():
    record = json.loads(potential_path("nnk/golden_barriers.json").read_text())[0]
    lattice = BCCLattice(int(record["cells_per_side"]))
    v = record["vacancy_site"]
    for jump in record["jumps"]:
        target = lattice.site_index(lattice.doubled_coords[v] + 2 * np.array(jump["offset_in_a"]))
        assert target == jump["neighbor_site"]
    assert list(lattice.neighbors(1)[v]) == [j["neighbor_site"] for j in record["jumps"]]
    # index formula of the contract
    i, j, k, b = 3, 5, 7, 1
    assert np.array_equal(lattice.doubled_coords[2 * ((i * 8 + j) * 8 + k) + b], [2 * i + 1, 2 * j + 1, 2 * k + 1])


@pytest.mark.parametrize("cells", [(3, 4, 5), 4])
def test_neighbour_shells_are_the_bcc_shells(cells):
    lattice = BCCLattice(cells, 3.3)
    n = lattice.n_sites
    assert lattice.doubled_coords.shape == (n, 3)
    assert np.array_equal(lattice.site_index(lattice.doubled_coords), np.arange(n))
    for shell, z in ((1, 8), (2, 6), (3, 12)):
        table = lattice.neighbors(shell)
        assert table.shape == (n, z) and table.dtype == np.int32
        for site in (0, 1, n - 1):
            dist = _min_image_distances(lattice, site)[table[site]]
            assert np.allclose(dist, SHELL_DISTANCES[shell] * 3.3)
        # symmetric relation: j is a neighbour of i iff i is one of j
        pairs = {(i, j) for i in range(n) for j in table[i]}
        assert all((j, i) in pairs for i, j in pairs)
    assert np.array_equal(lattice.neighbor_offsets(1), NEIGHBOR_OFFSETS[1])


def test_sites_within_matches_brute_force():
    lattice = BCCLattice((4, 5, 6))
    for radius in (2.9, 4.6, 7.5):
        got = lattice.sites_within([7, 100], radius)
        want = np.flatnonzero(
            (_min_image_distances(lattice, 7) <= radius + 1e-9) | (_min_image_distances(lattice, 100) <= radius + 1e-9)
        )
        assert np.array_equal(got, want)


def test_patches_partition_the_lattice():
    lattice = BCCLattice((4, 4, 8))
    patches = lattice.patches(2)
    assert patches.shape == (2 * 2 * 4, 16)
    assert np.array_equal(np.sort(patches.ravel()), np.arange(lattice.n_sites))
    wrapped = lattice.patch_sites((3, 3, 7), 2)  # wraps in every direction
    assert len(np.unique(wrapped)) == 16
    with pytest.raises(ValueError, match="size_cells"):
        lattice.patches(3)


def test_random_solid_solution_exact_counts_and_reproducible():
    a = random_solid_solution(EQUIMOLAR, 8, n_vacancies=1, rng=np.random.default_rng(3))
    b = random_solid_solution(EQUIMOLAR, 8, n_vacancies=1, rng=np.random.default_rng(3))
    assert np.array_equal(a.species, b.species)
    assert a.species_counts().tolist() == [341, 341, 341] and len(a.vacancies) == 1
    # largest remainder rounding: 1024 atoms -> 342, 341, 341 (tie to the first element)
    c = random_solid_solution(EQUIMOLAR, 8, n_vacancies=0, rng=1)
    assert c.species_counts().tolist() == [342, 341, 341]
    d = random_solid_solution({"Mo": 0.5, "Ta": 0.5}, 2, n_vacancies=0, rng=1)
    assert d.elements == ("Nb", "Mo", "Ta") and d.species_counts().tolist() == [0, 8, 8]
    assert d.composition() == {"Nb": 0.0, "Mo": 0.5, "Ta": 0.5}


def test_bad_input_one_line_errors():
    with pytest.raises(ValueError, match="unknown element 'Xx'") as err:
        random_solid_solution({"Nb": 0.5, "Xx": 0.5}, 2, rng=0)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="sum to 1"):
        random_solid_solution({"Nb": 0.5, "Mo": 0.4}, 2, rng=0)
    with pytest.raises(ValueError, match="n_vacancies"):
        random_solid_solution(EQUIMOLAR, 2, n_vacancies=16, rng=0)
    with pytest.raises(ValueError, match="unknown element"):
        BCCLattice(2, elements=("Nb", "Qq"))
    with pytest.raises(ValueError, match="species codes"):
        BCCLattice(2, species=np.full(16, 4))
    with pytest.raises(TypeError, match="rng"):
        random_solid_solution(EQUIMOLAR, 2)


def test_non_bcc_atoms_rejected():
    from ase.build import bulk

    fcc = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    with pytest.raises(ValueError, match="not a BCC"):
        BCCLattice.from_atoms(fcc)
    bcc = bulk("Mo", "bcc", a=3.15, cubic=True).repeat(2)
    bcc.pbc = (True, True, False)
    with pytest.raises(ValueError, match="periodic"):
        BCCLattice.from_atoms(bcc)
    bcc.pbc = True
    bcc[0].symbol = "W"
    with pytest.raises(ValueError, match="unknown element 'W'"):
        BCCLattice.from_atoms(bcc, elements=("Nb", "Mo", "Ta"))


def test_atoms_round_trip_with_vacancies_and_shuffled_order():
    lattice = random_solid_solution(EQUIMOLAR, (2, 3, 4), n_vacancies=2, rng=5)
    atoms = lattice.to_atoms()
    assert atoms.get_chemical_symbols().count("X") == 2 and all(atoms.pbc)
    back = BCCLattice.from_atoms(atoms)
    assert np.array_equal(back.species, lattice.species) and back.cells == (2, 3, 4)
    assert back.lattice_constant == pytest.approx(3.24)
    order = np.random.default_rng(0).permutation(len(atoms))
    shuffled, site_of_atom = lattice_from_atoms(atoms[order])
    assert np.array_equal(shuffled.species[site_of_atom], lattice.species[order])


def test_trajectory_and_pymatgen_io(tmp_path):
    frames = [random_solid_solution(EQUIMOLAR, 2, n_vacancies=1, rng=s) for s in range(3)]
    xyz = alloy_io.write_extxyz(tmp_path / "traj.extxyz", frames, times_s=[0.0, 1e-9, 2e-9])
    back = alloy_io.read_extxyz(xyz)
    assert all(np.array_equal(f.species, b.species) for f, b in zip(frames, back))
    dump = alloy_io.write_lammps_dump(tmp_path / "traj.dump", frames, steps=[0, 10, 20])
    back = alloy_io.read_lammps_dump(dump, cells=2)
    assert all(np.array_equal(f.species, b.species) for f, b in zip(frames, back))
    pytest.importorskip("pymatgen")
    structure = alloy_io.to_structure(frames[0])
    assert len(structure) == frames[0].n_sites - 1
    again = alloy_io.from_structure(structure, cells=2)
    # the origin is fixed by the first atom, so compare up to that shift
    shift = frames[0].doubled_coords[np.flatnonzero(frames[0].species)[0]]
    moved = frames[0].site_index(again.doubled_coords + shift)
    assert np.array_equal(again.species, frames[0].species[moved])
