"""KRA barriers on top of a local energy model (on-lattice EAM here; LAMMPS in test_lammps.py)."""
from __future__ import annotations

import numpy as np
import pytest

from matscale.calculators.base import BarrierModel
from matscale.calculators.lattice_eam import LatticeEAM
from matscale.systems.alloy.kra import KRABarrierModel, kra_barrier
from matscale.systems.alloy.lattice import random_solid_solution

EQUIMOLAR = {"Nb": 1 / 3, "Mo": 1 / 3, "Ta": 1 / 3}
E0 = {"Nb": 0.9, "Mo": 1.3, "Ta": 1.1}


@pytest.fixture(scope="module")
def model():
    return KRABarrierModel(LatticeEAM.from_setfl(), E0)


def test_clamped_kra_keeps_detailed_balance():
    delta = np.linspace(-6.0, 6.0, 2001)
    for e0 in (0.0, 0.3, 1.2):
        fwd, bwd = kra_barrier(e0, delta), kra_barrier(e0, -delta)
        np.testing.assert_allclose(fwd - bwd, delta, atol=1e-12)
        assert np.all(fwd >= 0) and np.all(fwd >= delta - 1e-15)
        inside = np.abs(delta) <= 2 * e0
        np.testing.assert_allclose(fwd[inside], e0 + delta[inside] / 2)


def test_hop_barriers_shape_order_and_values(model):
    lat = random_solid_solution(EQUIMOLAR, 4, n_vacancies=3, rng=np.random.default_rng(0))
    assert isinstance(model, BarrierModel)
    # put a second vacancy next to the first one
    v = int(lat.vacancies[0])
    other = int(lat.vacancies[1])
    nb = lat.neighbors(1)[v]
    lat.species[[other, nb[2]]] = lat.species[[nb[2], other]]
    vacancies = lat.vacancies
    b = model.hop_barriers(lat, vacancies)
    assert b.shape == (len(vacancies), 8)
    row = list(vacancies).index(v)
    assert np.isinf(b[row, 2]) and np.isfinite(b[row, [0, 1, 3, 4, 5, 6, 7]]).all()
    energy = model.energy_model
    for col in (0, 5):
        t = int(nb[col])
        de = energy.swap_delta(lat, v, t)
        e0 = E0[lat.elements[lat.species[t] - 1]]
        assert b[row, col] == pytest.approx(max(e0 + de / 2, de, 0.0), abs=1e-12)


def test_forward_minus_backward_barrier_is_the_energy_change(model):
    lat = random_solid_solution(EQUIMOLAR, 5, n_vacancies=1, rng=np.random.default_rng(8))
    energy = model.energy_model
    for step in range(6):
        v = int(lat.vacancies[0])
        col = step % 8
        t = int(lat.neighbors(1)[v][col])
        fwd = model.hop_barriers(lat, np.array([v]))[0, col]
        e_before = energy.total_energy(lat)
        lat.species[[v, t]] = lat.species[[t, v]]  # the hop
        back_col = int(np.flatnonzero(lat.neighbors(1)[t] == v)[0])
        bwd = model.hop_barriers(lat, np.array([t]))[0, back_col]
        assert fwd - bwd == pytest.approx(energy.total_energy(lat) - e_before, abs=1e-9)


def test_jump_barriers_on_atoms_match_hop_barriers(model):
    lat = random_solid_solution(EQUIMOLAR, 3, n_vacancies=1, rng=np.random.default_rng(2))
    v = int(lat.vacancies[0])
    atoms = lat.to_atoms()
    idx, barriers = model.jump_barriers(atoms, v)
    np.testing.assert_array_equal(idx, lat.neighbors(1)[v])
    np.testing.assert_allclose(barriers, model.hop_barriers(lat, np.array([v]))[0], atol=1e-12)


def test_float_e0_and_errors():
    eam = LatticeEAM.from_setfl()
    lat = random_solid_solution(EQUIMOLAR, 3, n_vacancies=1, rng=np.random.default_rng(2))
    v = lat.vacancies
    b_float = KRABarrierModel(eam, 1.0).hop_barriers(lat, v)
    b_dict = KRABarrierModel(eam, {"Nb": 1.0, "Mo": 1.0, "Ta": 1.0}).hop_barriers(lat, v)
    np.testing.assert_allclose(b_float, b_dict)
    assert KRABarrierModel(eam, 1.0).interaction_range == eam.interaction_range
    with pytest.raises(ValueError, match="no KRA barrier for element 'Ta'"):
        KRABarrierModel(eam, {"Nb": 1.0, "Mo": 1.0}).hop_barriers(lat, v)
    with pytest.raises(ValueError, match=">= 0"):
        KRABarrierModel(eam, -0.1)
    with pytest.raises(ValueError, match="finite"):
        KRABarrierModel(eam, {"Nb": float("nan")})
    with pytest.raises(TypeError, match="LocalEnergyModel"):
        KRABarrierModel(object(), 1.0)
    with pytest.raises(ValueError, match="hold a vacancy"):
        KRABarrierModel(eam, 1.0).hop_barriers(lat, np.array([int(np.flatnonzero(lat.species > 0)[0])]))
    with pytest.raises(ValueError, match="vacancy_index"):
        KRABarrierModel(eam, 1.0).jump_barriers(lat.to_atoms(), 10_000)


def test_kra_accepts_an_ase_calculator(model):
    """KRA over ASE's EAM calculator (whole-cell fallback on this small cell) equals KRA over
    the on-lattice EAM (same setfl tables, different interpolation: ~1e-8 eV)."""
    from ase.calculators.eam import EAM

    from matscale.calculators.ase_local import ASELocalEnergy
    from matscale.potentials import potential_path

    lat = random_solid_solution(EQUIMOLAR, 3, n_vacancies=1, rng=np.random.default_rng(6))
    ase_model = ASELocalEnergy(EAM(potential=str(potential_path("NbMoTa_Zhou04.eam.alloy"))), cutoff=6.3953)
    kra_ase = KRABarrierModel(ase_model, E0)
    assert kra_ase.interaction_range == pytest.approx(2 * 6.3953)
    np.testing.assert_allclose(kra_ase.hop_barriers(lat, lat.vacancies),
                               model.hop_barriers(lat, lat.vacancies), atol=1e-6, rtol=0)
