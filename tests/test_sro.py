"""Warren–Cowley α and the paper's δ: known orders, random limit, patch additivity."""
from __future__ import annotations

import numpy as np
import pytest

from matscale.systems.alloy.lattice import BCCLattice, random_solid_solution
from matscale.systems.alloy.sro import (
    pair_counts,
    pair_labels,
    patch_pair_counts,
    sro_delta,
    sro_delta_patch_shares,
    warren_cowley,
    warren_cowley_dict,
    warren_cowley_patch_shares,
)


def _b2_lattice(cells: int = 4) -> BCCLattice:
    """Mo on corners, Ta on body centres (perfect B2), no Nb."""
    lattice = BCCLattice(cells, elements=("Mo", "Ta"))
    lattice.species[:] = 1 + (np.arange(lattice.n_sites) % 2)
    return lattice


def test_perfect_b2_order():
    alpha = warren_cowley(_b2_lattice())
    # shell 1: every neighbour is unlike (P(Ta|Mo) = 1, c = 1/2) -> α_MoTa = 1 - 1/0.5 = -1, α_MoMo = 1
    assert np.allclose(alpha[0], [[1, -1], [-1, 1]])
    # shells 2 and 3 connect the same sublattice -> the opposite sign
    assert np.allclose(alpha[1], [[-1, 1], [1, -1]]) and np.allclose(alpha[2], [[-1, 1], [1, -1]])
    delta = sro_delta(_b2_lattice())
    assert pair_labels(("Mo", "Ta")) == ["MoMo", "MoTa", "TaTa"]
    assert np.allclose(delta, [-4, 4, -4])  # Z_MoTa = 8, 8 c = 4


def test_random_solution_is_disordered_within_statistics():
    lattice = random_solid_solution({"Nb": 1 / 3, "Mo": 1 / 3, "Ta": 1 / 3}, 16, n_vacancies=0, rng=11)
    alpha = warren_cowley(lattice)
    # α_ab = 1 - N_ab / E[N_ab]; N_ab ~ z N c² = 12.1e3 (shell 1) pairs, counted twice ->
    # σ(α) ≈ sqrt(2 / (z N c²)) ≤ 0.013 for shell 2 (z = 6); 5σ bound
    assert np.max(np.abs(alpha)) < 0.065
    assert np.allclose(alpha, np.swapaxes(alpha, 1, 2))
    d = warren_cowley_dict(lattice)
    assert d[(1, "MoTa")] == pytest.approx(alpha[0, 1, 2])


def test_delta_is_the_first_shell_alpha_alias():
    lattice = random_solid_solution({"Nb": 0.2, "Mo": 0.5, "Ta": 0.3}, 6, n_vacancies=3, rng=2)
    counts = lattice.species_counts()
    c = counts / counts.sum()
    alpha = warren_cowley(lattice, (1,))[0]
    rows, cols = np.triu_indices(3)
    assert np.allclose(sro_delta(lattice), (-8 * c[None, :] * alpha)[rows, cols])
    pairs = pair_counts(lattice, (1, 2, 3))
    assert np.array_equal(pairs, np.swapaxes(pairs, 1, 2))
    # vacancies excluded: every atom has 8 first neighbours minus its vacancy neighbours
    n_vacancy_bonds = np.sum(lattice.species[lattice.neighbors(1)[lattice.vacancies]] > 0)
    assert pairs[0].sum() == 8 * counts.sum() - n_vacancy_bonds


@pytest.mark.parametrize("size", [1, 2, 3])
def test_patch_shares_average_to_global_value(size):
    lattice = random_solid_solution({"Nb": 1 / 3, "Mo": 1 / 3, "Ta": 1 / 3}, 6, n_vacancies=2, rng=size)
    per_patch = patch_pair_counts(lattice, size)
    assert np.array_equal(per_patch.sum(axis=0), pair_counts(lattice))
    shares = warren_cowley_patch_shares(lattice, size)
    assert shares.shape[0] == (6 // size) ** 3
    assert np.allclose(shares.mean(axis=0), warren_cowley(lattice), atol=1e-12)
    assert np.allclose(sro_delta_patch_shares(lattice, size).mean(axis=0), sro_delta(lattice), atol=1e-12)
    patch = lattice.patches(size)[0]
    assert np.array_equal(pair_counts(lattice, owners=patch), per_patch[0])


def test_errors():
    lattice = _b2_lattice()
    with pytest.raises(ValueError, match="shells"):
        warren_cowley(lattice, (4,))
    lattice.species[lattice.species == 2] = 1
    with pytest.raises(ValueError, match="at least one atom"):
        warren_cowley(lattice)
