"""Bring your own potential: an ASE calculator -> cluster-expansion surrogate -> swap MC and KRA kMC.

The "expensive" calculator is ASE's own EAM calculator on the shipped Zhou NbMoTa setfl file
(pure Python), restricted to local clusters by ``ASELocalEnergy`` (its receptive field, the EAM
cutoff, is detected). The surrogate is fitted to it and checked against it on held-out
configurations; then swap MC on the surrogate is compared with swap MC on the exact on-lattice
EAM (``LatticeEAM``, the same potential) through the first-shell Warren-Cowley SRO, and a KRA
vacancy kMC runs on the surrogate.

Usage: python benchmarks/study_surrogate.py [--quick] [--reference lattice]
(``--reference lattice`` labels with ``LatticeEAM`` instead of ASE's EAM: same numbers, faster).
Prints the fit errors, the SRO of both models with standard errors, and the kMC speed.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

EQUIMOLAR = {"Nb": 1 / 3, "Mo": 1 / 3, "Ta": 1 / 3}
E0 = {"Nb": 0.9, "Mo": 1.2, "Ta": 1.1}  # eV, KRA barriers (illustrative)


def first_shell_sro(model, seeds, temperature_K: float, sweeps: int) -> np.ndarray:
    """Mean first-shell α (upper triangle: NbNb NbMo NbTa MoMo MoTa TaTa) per replica of 250
    sites; ``sweeps`` to equilibrate, then 10 snapshots ``sweeps / 10`` apart."""
    from matscale.systems.alloy.lattice import random_solid_solution
    from matscale.systems.alloy.sro import warren_cowley
    from matscale.systems.alloy.swap import SwapMCEnsemble

    iu = np.triu_indices(3)
    out = []
    for seed in seeds:
        lat = random_solid_solution(EQUIMOLAR, 5, n_vacancies=0, rng=seed)
        ensemble = SwapMCEnsemble(lat, model, temperature_K, seed, neighbor_shell=1)
        ensemble.run(sweeps * lat.n_sites)
        snaps = []
        for _ in range(10):
            ensemble.run(max(1, sweeps // 10) * lat.n_sites)
            snaps.append(warren_cowley(lat, (1,))[0][iu])
        out.append(np.mean(snaps, axis=0))
    return np.array(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer configurations and replicas")
    parser.add_argument("--reference", choices=("ase", "lattice"), default="ase",
                        help="label with ASE's EAM calculator (default) or LatticeEAM")
    parser.add_argument("--temperature", type=float, default=1000.0, help="swap-MC / kMC temperature in K")
    args = parser.parse_args()

    from matscale.calculators.ase_local import ASELocalEnergy
    from matscale.calculators.lattice_eam import LatticeEAM
    from matscale.calculators.surrogate import fit_surrogate
    from matscale.potentials import potential_path
    from matscale.systems.alloy.kmc import VacancyKMC
    from matscale.systems.alloy.kra import KRABarrierModel
    from matscale.systems.alloy.lattice import random_solid_solution

    exact = LatticeEAM.from_setfl()
    if args.reference == "ase":
        from ase.calculators.eam import EAM

        reference = ASELocalEnergy(EAM(potential=str(potential_path("NbMoTa_Zhou04.eam.alloy"))))
    else:
        reference = exact
    n_random, n_per_t = (10, 4) if args.quick else (40, 10)
    start = time.perf_counter()
    fit = fit_surrogate(reference, EQUIMOLAR, cells=4, cutoffs=(7.0, 4.0), n_random=n_random,
                        n_per_temperature=n_per_t, temperatures_K=(800.0, 1500.0, 3000.0),
                        vacancies=(0, 1), mc_with="surrogate", rng=1)
    print(f"fit against {type(reference).__name__} in {time.perf_counter() - start:.1f} s "
          f"({fit.metrics['reference_energy_calls']} whole-cell reference energies + ΔE labels)")
    print(fit.summary())
    print(f"  reference ΔE spread: swaps {fit.metrics['swap_spread_meV']:.0f} meV, hops "
          f"{fit.metrics['hop_spread_meV']:.0f} meV (std over the held-out moves)")

    seeds = range(4 if args.quick else 8)
    sweeps = 40 if args.quick else 100
    ref = first_shell_sro(exact, seeds, args.temperature, sweeps)
    ce = first_shell_sro(fit.model, [100 + s for s in seeds], args.temperature, sweeps)
    se = np.sqrt(ref.var(axis=0, ddof=1) / len(ref) + ce.var(axis=0, ddof=1) / len(ce))
    print(f"first-shell Warren-Cowley α at {args.temperature:g} K, {len(seeds)} replicas of 250 sites "
          "(NbNb NbMo NbTa MoMo MoTa TaTa):")
    print("  EAM       ", np.array2string(ref.mean(axis=0), precision=3))
    print("  surrogate ", np.array2string(ce.mean(axis=0), precision=3))
    print("  |Δ| / σ   ", np.array2string(np.abs(ref.mean(axis=0) - ce.mean(axis=0)) / se, precision=2))

    lat = random_solid_solution(EQUIMOLAR, 10, n_vacancies=4, rng=3)
    kmc = VacancyKMC(lat, KRABarrierModel(fit.model, E0), args.temperature)
    kmc.evolve(lat, n_events=100, rng=np.random.default_rng(0))
    n_events = 2000 if args.quick else 20000
    start = time.perf_counter()
    _, elapsed = kmc.evolve(lat, n_events=n_events, rng=np.random.default_rng(1))
    wall = time.perf_counter() - start
    print(f"KRA kMC on the surrogate: {n_events / wall:.0f} events/s (2000 sites, 4 vacancies), "
          f"{elapsed:.3g} s simulated")


if __name__ == "__main__":
    main()
