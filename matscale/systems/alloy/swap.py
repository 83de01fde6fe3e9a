"""Canonical swap Monte Carlo on a BCC alloy (icet/mchammer-like ensemble, observers, data container).

A trial picks two atoms of the lattice (vacancies never swap) by a symmetric proposal:
``neighbor_shell = k``: a uniformly random atom a and one of its z_k shell-k neighbours b;
``neighbor_shell = None``: two distinct uniformly random atoms. Trials with equal species or a
vacancy partner are counted and rejected (null moves keep the proposal symmetric). The swap is
accepted with the Metropolis probability min(1, exp(−ΔE / k_B T)), ΔE from the energy model's
``swap_delta`` (eV). This samples the canonical Boltzmann distribution at fixed composition and
fixed vacancy positions.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import matscale
from matscale.systems.alloy.kmc import BOLTZMANN_EV_PER_K
from matscale.systems.alloy.lattice import BCCLattice

_BLOCK = 4096


class SwapMCDataContainer:
    """Observations of a swap MC run plus everything needed to restart it.

    ``observations[tag]`` is a list of arrays, ``observation_steps[tag]`` the trial counts at
    which they were taken. ``metadata`` holds temperature_K, neighbor_shell, energy model name,
    seed (if an int seed was given), units and package version. ``state`` holds the species,
    trial and acceptance counts, the accumulated energy change and the rng state.
    """

    def __init__(self, metadata: dict[str, Any] | None = None) -> None:
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.observations: dict[str, list[np.ndarray]] = {}
        self.observation_steps: dict[str, list[int]] = {}
        self.state: dict[str, Any] = {}

    def append(self, tag: str, step: int, value: Any) -> None:
        self.observations.setdefault(tag, []).append(np.atleast_1d(np.asarray(value, dtype=np.float64)))
        self.observation_steps.setdefault(tag, []).append(int(step))

    @property
    def tags(self) -> list[str]:
        return sorted(self.observations)

    def get(self, tag: str) -> tuple[np.ndarray, np.ndarray]:
        """(steps int64 [M], values float64 [M, D]) of observer ``tag``."""
        if tag not in self.observations:
            raise KeyError(f"no observations with tag {tag!r}; have {self.tags}")
        return np.asarray(self.observation_steps[tag], dtype=np.int64), np.stack(self.observations[tag])

    @property
    def acceptance_ratio(self) -> float:
        trials = self.state.get("n_trials", 0)
        return float(self.state.get("n_accepted", 0) / trials) if trials else 0.0

    # ---------------------------------------------------------------- disk
    def _flat(self) -> dict[str, np.ndarray]:
        arrays: dict[str, np.ndarray] = {}
        for tag in self.tags:
            steps, values = self.get(tag)
            arrays[f"obs/{tag}/steps"] = steps
            arrays[f"obs/{tag}/values"] = values
        if "species" in self.state:
            arrays["state/species"] = np.asarray(self.state["species"], dtype=np.int8)
        return arrays

    def _header(self) -> str:
        state = {k: v for k, v in self.state.items() if k != "species"}
        return json.dumps({"metadata": self.metadata, "state": state, "tags": self.tags})

    def save(self, path: str | Path) -> Path:
        """Write to ``.npz`` or ``.h5``/``.hdf5`` (chosen by suffix)."""
        path = Path(path)
        if path.suffix == ".npz":
            np.savez(path, header=np.array(self._header()), **self._flat())
        elif path.suffix in (".h5", ".hdf5"):
            import h5py

            with h5py.File(path, "w") as f:
                f.attrs["header"] = self._header()
                for key, value in self._flat().items():
                    f.create_dataset(key, data=value, compression="gzip" if value.size > 1024 else None)
        else:
            raise ValueError(f"data container path must end in .npz, .h5 or .hdf5, got {path.name!r}")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "SwapMCDataContainer":
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"data container not found: {path}")
        if path.suffix == ".npz":
            with np.load(path) as f:
                header = json.loads(str(f["header"]))
                arrays = {k: f[k] for k in f.files if k != "header"}
        elif path.suffix in (".h5", ".hdf5"):
            import h5py

            with h5py.File(path, "r") as f:
                header = json.loads(f.attrs["header"])
                arrays = {}
                f.visititems(lambda name, obj: arrays.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
        else:
            raise ValueError(f"data container path must end in .npz, .h5 or .hdf5, got {path.name!r}")
        container = cls(header["metadata"])
        container.state = dict(header["state"])
        if "state/species" in arrays:
            container.state["species"] = arrays["state/species"]
        for tag in header["tags"]:
            steps = arrays[f"obs/{tag}/steps"]
            values = arrays[f"obs/{tag}/values"]
            container.observation_steps[tag] = [int(s) for s in steps]
            container.observations[tag] = [np.asarray(v) for v in values]
        return container


class SwapMCEnsemble:
    """Canonical Metropolis swap ensemble: ``SwapMCEnsemble(lattice, energy_model, T, rng)``.

    Parameters
    ----------
    lattice : the state, modified in place.
    energy_model : a LocalEnergyModel (``swap_delta(lattice, a, b)`` in eV).
    temperature_K : T > 0 in K.
    rng : numpy Generator or int seed.
    neighbor_shell : 1, 2 or 3 to swap shell-k neighbours only, None for any two atoms.
    data_container : a path to restart from (species, rng state, counters and observations are
        restored) or an existing :class:`SwapMCDataContainer` to append to. The container's
        recorded temperature_K, neighbor_shell, energy_model and elements must equal this
        ensemble's (a one-line ValueError names the first that differs), so the observations of
        one container always come from one ensemble.
    """

    def __init__(self, lattice: BCCLattice, energy_model: Any, temperature_K: float, rng: np.random.Generator | int,
                 *, neighbor_shell: int | None = 1, data_container: str | Path | SwapMCDataContainer | None = None) -> None:
        if not isinstance(lattice, BCCLattice):
            raise TypeError(f"lattice must be a BCCLattice, got {type(lattice).__name__}")
        if not hasattr(energy_model, "swap_delta"):
            raise TypeError("energy_model must implement swap_delta(lattice, site_a, site_b)")
        if not np.isfinite(temperature_K) or temperature_K <= 0:
            raise ValueError(f"temperature_K must be a finite temperature > 0 K, got {temperature_K}")
        if neighbor_shell not in (None, 1, 2, 3):
            raise ValueError(f"neighbor_shell must be 1, 2, 3 or None (any pair), got {neighbor_shell!r}")
        seed = None
        if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
            seed = int(rng)
            rng = np.random.default_rng(seed)
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator or an int seed, got {type(rng).__name__}")
        self.lattice = lattice
        self.energy_model = energy_model
        self.temperature_K = float(temperature_K)
        self.rng = rng
        self.neighbor_shell = neighbor_shell
        self.atom_sites = np.flatnonzero(lattice.species > 0).astype(np.int64)
        if self.atom_sites.size < 2:
            raise ValueError("swap MC needs at least two atoms on the lattice")
        self._table = None if neighbor_shell is None else lattice.neighbors(neighbor_shell)
        self._observers: list[tuple[str, Callable[[BCCLattice], Any], int]] = []
        self.n_trials = 0
        self.n_accepted = 0
        self.energy_change = 0.0
        if isinstance(data_container, SwapMCDataContainer):
            self.data_container = data_container
            self._check_restart_metadata()
        elif data_container is not None:
            self.data_container = SwapMCDataContainer.load(data_container)
            self._check_restart_metadata()
            self._restore()
        else:
            self.data_container = SwapMCDataContainer()
        self.data_container.metadata.update(
            temperature_K=self.temperature_K,
            neighbor_shell=neighbor_shell,
            energy_model=type(energy_model).__name__,
            cells=list(lattice.cells),
            lattice_constant_A=lattice.lattice_constant,
            elements=list(lattice.elements),
            units={"energy_change": "eV", "temperature": "K", "steps": "trials"},
            matscale_version=matscale.__version__,
        )
        if seed is not None:
            self.data_container.metadata.setdefault("seed", seed)

    # ---------------------------------------------------------------- observers
    def attach_observer(self, observer: Callable[[BCCLattice], Any], interval: int, tag: str | None = None) -> None:
        """Call ``observer(lattice)`` every ``interval`` trials; store its value under ``tag``
        (default ``observer.tag`` or its class name)."""
        if not callable(observer):
            raise TypeError("observer must be callable: observer(lattice) -> number or array")
        if int(interval) != interval or interval < 1:
            raise ValueError(f"interval must be an integer >= 1 trials, got {interval}")
        tag = tag or getattr(observer, "tag", None) or type(observer).__name__
        self._observers.append((str(tag), observer, int(interval)))

    @property
    def acceptance_ratio(self) -> float:
        return self.n_accepted / self.n_trials if self.n_trials else 0.0

    @property
    def beta(self) -> float:
        return 1.0 / (BOLTZMANN_EV_PER_K * self.temperature_K)

    # ---------------------------------------------------------------- run
    def _propose(self, block: np.ndarray) -> tuple[int, int]:
        n_atoms = self.atom_sites.size
        a = int(self.atom_sites[min(int(block[0] * n_atoms), n_atoms - 1)])
        if self._table is None:
            k = min(int(block[1] * (n_atoms - 1)), n_atoms - 2)
            b_index = k if self.atom_sites[k] < a else k + 1  # uniform over the other atoms
            return a, int(self.atom_sites[b_index])
        z = self._table.shape[1]
        return a, int(self._table[a, min(int(block[1] * z), z - 1)])

    def run(self, n_steps: int) -> SwapMCDataContainer:
        """Perform ``n_steps`` swap trials; returns the data container."""
        if int(n_steps) != n_steps or n_steps < 0:
            raise ValueError(f"n_steps must be an integer >= 0, got {n_steps}")
        species = self.lattice.species
        beta = self.beta
        swap_delta = self.energy_model.swap_delta
        remaining = int(n_steps)
        while remaining > 0:
            # draw exactly the numbers this chunk needs, so run(n1); run(n2) == run(n1 + n2)
            chunk = min(_BLOCK, remaining)
            randoms = self.rng.random(3 * chunk)
            remaining -= chunk
            for pos in range(0, 3 * chunk, 3):
                a, b = self._propose(randoms[pos:pos + 2])
                self.n_trials += 1
                if species[a] != species[b] and species[b] != 0:
                    delta = float(swap_delta(self.lattice, a, b))
                    if delta <= 0.0 or randoms[pos + 2] < np.exp(-beta * delta):
                        species[a], species[b] = species[b], species[a]
                        self.n_accepted += 1
                        self.energy_change += delta
                if self._observers:
                    self._observe()
        self._store_state()
        return self.data_container

    def _observe(self) -> None:
        fired = False
        for tag, observer, interval in self._observers:
            if self.n_trials % interval == 0:
                self.data_container.append(tag, self.n_trials, observer(self.lattice))
                fired = True
        if fired:
            self.data_container.append("energy_change_eV", self.n_trials, self.energy_change)

    def _store_state(self) -> None:
        self.data_container.state.update(
            species=self.lattice.species.copy(),
            n_trials=self.n_trials,
            n_accepted=self.n_accepted,
            energy_change_eV=self.energy_change,
            rng_state=json.dumps(self.rng.bit_generator.state, default=int),
            bit_generator=type(self.rng.bit_generator).__name__,
        )
        self.data_container.metadata["acceptance_ratio"] = self.acceptance_ratio

    def _check_restart_metadata(self) -> None:
        """Refuse a container written by an ensemble with other physics (fields it records)."""
        saved = self.data_container.metadata
        requested = {"temperature_K": self.temperature_K, "neighbor_shell": self.neighbor_shell,
                     "energy_model": type(self.energy_model).__name__, "elements": list(self.lattice.elements)}
        for key, value in requested.items():
            if key not in saved:
                continue
            old = saved[key]
            if key == "temperature_K":
                same = isinstance(old, (int, float)) and math.isclose(float(old), value, rel_tol=1e-12)
            else:
                same = (list(old) if isinstance(old, (list, tuple)) else old) == value
            if not same:
                raise ValueError(f"data_container: {key} differs from the saved run ({old!r} saved, {value!r} "
                                 f"requested); restart with the saved {key} or start a new container")

    def _restore(self) -> None:
        state = self.data_container.state
        species = np.asarray(state["species"], dtype=np.int8)
        if species.shape != self.lattice.species.shape:
            raise ValueError(f"restart species has shape {species.shape}, lattice {self.lattice.species.shape}")
        self.lattice.species[:] = species
        self.atom_sites = np.flatnonzero(self.lattice.species > 0).astype(np.int64)
        self.n_trials = int(state["n_trials"])
        self.n_accepted = int(state["n_accepted"])
        self.energy_change = float(state["energy_change_eV"])
        if type(self.rng.bit_generator).__name__ != state["bit_generator"]:
            raise ValueError(f"restart needs a {state['bit_generator']} generator, got {type(self.rng.bit_generator).__name__}")
        self.rng.bit_generator.state = json.loads(state["rng_state"])
