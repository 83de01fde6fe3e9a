"""Local-cluster energy differences of lattice swaps, for any ASE calculator (EAM to MLIPs).

Receptive field
---------------
The energy e_i a calculator assigns to atom i depends on the atoms within its *receptive field*
R of i: R = r_c for a local potential (EAM, EMT, pair potentials); R = L · r_c for a
message-passing network with L interaction layers of graph cutoff r_c (CHGNet: 4 × 6 Å; MACE,
NequIP, SevenNet: layers × r_max), because every layer passes information one cutoff further.
A swap of the species on sites a and b of a periodic :class:`BCCLattice` changes e_i only for
atoms within R of (a periodic copy of) a or b: those atoms form the *core*. Their energies depend
on everything within R of them, so a non-periodic cluster of the sites within ``2 R`` (+ margin)
of a and b contains every environment needed:

    ΔE = Σ_{sites i in core, each site once} [e_i(after) − e_i(before)]      (float64)

Sizing the cluster with the bare cutoff r_c of a message-passing model is wrong (core atoms
whose energies change through the second and later layers are left out, and the environments
of the kept ones are truncated). ``receptive_field`` is taken from the argument, else detected
from known calculators (ASE's EMT/EAM/LJ/Morse/LAMMPS: the cutoff; CHGNet: ``n_conv`` ×
``atom_graph_cutoff``; any calculator or ``.model`` exposing a cutoff (``cutoff``/``r_max``)
and a layer count (``n_conv``/``num_interactions``/``n_layers``...)), else refused with a
one-line message saying what to pass. A species change then alters the swap ΔE of pairs up to
``interaction_range = 2 R`` away (kMC uses this to keep cached barriers of other vacancies).

Periodic copies are handled exactly: the cluster is built from unwrapped positions, every copy of
a and b is swapped, and a site that appears more than once in the core is counted once. When the
cluster would hold at least as many sites as the periodic cell, the whole cell is evaluated
instead (still exact; the core is then the periodic sites within R of a or b).

Calls: only energies are requested (``calculator.calculate(atoms, ["energies"] or ["energy"])``,
plus ``task="e"`` for calculators whose ``calculate`` has a ``task`` argument, like CHGNet's, so
no forces or stress are computed). The unchanged state is evaluated once per group of pairs
sharing their first site (once per call in whole-cell mode), and the end states of all pairs of a
call are evaluated together: in one ``batch_energies(list_of_atoms)`` call when the calculator (or
the ``batch_energies`` argument) offers one, else one call each. Per-atom energies are converted
to float64 before the differences are summed over the core, so float32 totals never quantise ΔE.
Without per-atom energies the total cluster energy difference is used (exact when the cluster
holds no periodic copy of a or b other than the central ones), or the whole-cell difference.

Vacancies (species code 0) are empty sites: they are left out of every structure handed to the
calculator (no 'X' atoms ever reach it).
Units: eV, Å.
"""
from __future__ import annotations

import inspect
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from ase.calculators.calculator import Calculator

    from matscale.systems.alloy.lattice import BCCLattice

__all__ = ["LocalCluster", "build_local_cluster", "lattice_atoms", "ASELocalEnergy", "check_pairs",
           "detect_receptive_field"]

_MARGIN = 0.3  # Å added to the core radius and to the buffer (rounding safety on ideal lattices)
_VACUUM = 5.0  # Å of extra vacuum around a cluster beyond the interaction cutoff (both sides)

_STENCIL_CACHE: dict[int, np.ndarray] = {}

# ASE calculators whose atomic energies depend on neighbours within one cutoff only
_LOCAL_CALCULATORS = ("EMT", "EAM", "LennardJones", "MorsePotential", "LAMMPSlib", "LAMMPS")
_CUTOFF_ATTRS = ("cutoff", "r_max", "rc", "r_cut", "cutoff_radius")
_LAYER_ATTRS = ("n_conv", "num_interactions", "n_interactions", "num_layers", "n_layers",
                "num_message_passing", "num_convolutions")


def _doubled_stencil(radius_doubled: int) -> np.ndarray:
    """All BCC lattice vectors in doubled coordinates (all even or all odd) with |d| ≤ radius."""
    stencil = _STENCIL_CACHE.get(radius_doubled)
    if stencil is None:
        g = np.arange(-radius_doubled, radius_doubled + 1)
        d = np.stack(np.meshgrid(g, g, g, indexing="ij"), axis=-1).reshape(-1, 3)
        same_parity = (d % 2 == d[:, :1] % 2).all(axis=1)
        inside = (d.astype(np.int64) ** 2).sum(axis=1) <= radius_doubled**2
        stencil = d[same_parity & inside].astype(np.int64)
        _STENCIL_CACHE[radius_doubled] = stencil
    return stencil


@dataclass
class LocalCluster:
    """Unwrapped copies of lattice sites around some centre sites.

    ``sites`` [n] lattice site index of each copy; ``positions`` [n, 3] Å (unwrapped, relative to
    the first centre); ``doubled`` [n, 3] unwrapped doubled coordinates; ``core`` [n_pairs, n]
    bool: copy within the core radius of a pair's two central sites.
    """

    sites: np.ndarray
    positions: np.ndarray
    doubled: np.ndarray
    core: np.ndarray
    has_foreign_copy: np.ndarray  # [n_pairs] a non-central copy of a pair site lies in the cluster

    def species(self, lattice_species: np.ndarray, pair: tuple[int, int] | None = None) -> np.ndarray:
        """Species code of every copy, optionally after exchanging the pair's two sites."""
        s = lattice_species[self.sites].copy()
        if pair is not None:
            a, b = pair
            s[self.sites == a] = lattice_species[b]
            s[self.sites == b] = lattice_species[a]
        return s

    def core_site_mask(self, k: int) -> np.ndarray:
        """Copies of pair ``k``'s core, each lattice site once (first copy kept)."""
        idx = np.flatnonzero(self.core[k])
        _, first = np.unique(self.sites[idx], return_index=True)
        mask = np.zeros(len(self.sites), dtype=bool)
        mask[idx[first]] = True
        return mask


def build_local_cluster(lattice: "BCCLattice", pairs: np.ndarray, cutoff: float,
                        margin: float = _MARGIN) -> LocalCluster:
    """Cluster of all site copies within ``2·cutoff + 2·margin`` of any site of ``pairs`` [M, 2];
    core of pair k: copies within ``cutoff + margin`` of its two central sites. ``cutoff`` (Å) is
    the receptive field R of the energy model (the cutoff itself for a local potential)."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    half_a = lattice.lattice_constant / 2.0
    core_r = (cutoff + margin) / half_a  # in doubled units
    cluster_r = (2.0 * cutoff + 2.0 * margin) / half_a
    stencil = _doubled_stencil(int(math.floor(cluster_r)))
    stencil = stencil[(stencil**2).sum(axis=1) <= cluster_r**2]
    centres = np.unique(pairs.ravel())
    dc_all = np.asarray(lattice.doubled_coords, dtype=np.int64)
    origin = dc_all[pairs[0, 0]]
    # unwrapped doubled coordinates of the central copies: nearest image to the first centre
    dims = 2 * np.asarray(lattice.cells, dtype=np.int64)
    rel = dc_all[centres] - origin
    rel -= dims * np.round(rel / dims).astype(np.int64)
    central = {int(c): origin + r for c, r in zip(centres, rel)}
    copies = np.unique(np.concatenate([central[c] + stencil for c in central]), axis=0)
    sites = np.asarray(lattice.site_index(copies), dtype=np.int64)
    core = np.zeros((len(pairs), len(copies)), dtype=bool)
    foreign = np.zeros(len(pairs), dtype=bool)
    for k, (a, b) in enumerate(pairs):
        for s in (int(a), int(b)):
            d2 = ((copies - central[s]) ** 2).sum(axis=1)
            core[k] |= d2 <= core_r**2
            foreign[k] |= bool(np.any((sites == s) & (d2 > 0)))
    positions = (copies - origin) * half_a
    return LocalCluster(sites=sites, positions=positions, doubled=copies, core=core,
                        has_foreign_copy=foreign)


def cluster_size(lattice: "BCCLattice", radius: float, margin: float = _MARGIN) -> int:
    """Number of BCC sites within ``2·radius + 2·margin`` of one site (the one-site cluster)."""
    half_a = lattice.lattice_constant / 2.0
    cluster_r = (2.0 * radius + 2.0 * margin) / half_a
    stencil = _doubled_stencil(int(math.floor(cluster_r)))
    return int(((stencil**2).sum(axis=1) <= cluster_r**2).sum())


def check_pairs(lattice: "BCCLattice", pairs: np.ndarray) -> np.ndarray:
    """Validate swap pairs: int64 array [M, 2] of distinct in-range site indices."""
    arr = np.asarray(pairs)
    if arr.ndim == 1 and arr.size == 2:
        arr = arr.reshape(1, 2)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"pairs must have shape [M, 2], got {arr.shape}")
    if arr.size == 0:
        return arr.astype(np.int64)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"pairs must be integer site indices, got dtype {arr.dtype}")
    if arr.dtype != np.int64 or not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr, dtype=np.int64)
    n = lattice.n_sites
    if arr.min() < 0 or arr.max() >= n:
        raise ValueError(f"pair site indices must lie in [0, {n - 1}]")
    if (arr[:, 0] == arr[:, 1]).any():
        raise ValueError("a swap pair must name two different sites")
    return arr


def lattice_atoms(lattice: "BCCLattice", species: np.ndarray | None = None):
    """Periodic ase.Atoms of the occupied sites (vacancies left out)."""
    from ase import Atoms

    s = lattice.species if species is None else species
    occ = s > 0
    symbols = [lattice.elements[c - 1] for c in s[occ]]
    return Atoms(symbols=symbols, positions=lattice.positions[occ], cell=lattice.cell, pbc=True)


# ------------------------------------------------------------------------------------------
# receptive field of a calculator
# ------------------------------------------------------------------------------------------
_BLOCK_NAME = re.compile(r"^(\d+_(convolution|interaction)|(convolution|interaction)_?\d+)$", re.IGNORECASE)


def _message_passing_blocks(objects: Sequence[Any]) -> float | None:
    """Number of message-passing blocks of a torch model that names them but has no layer
    count: direct children called ``*_convolution`` / ``interaction_*`` (SevenNet, NequIP-style
    sequential models) or a ``ModuleList`` called ``interactions`` (MACE)."""
    for obj in objects:
        blocks = getattr(obj, "interactions", None)
        if blocks is not None and hasattr(blocks, "__len__") and hasattr(blocks, "named_children"):
            return float(len(blocks)) if len(blocks) else None
        children = getattr(obj, "named_children", None)
        if callable(children):
            count = sum(1 for name, _ in children() if _BLOCK_NAME.search(name))
            if count:
                return float(count)
    return None


def _first_number(objects: Sequence[Any], names: Sequence[str]) -> float | None:
    for obj in objects:
        for name in names:
            value = getattr(obj, name, None)
            if value is None or isinstance(value, bool):
                continue
            try:
                number = float(value)  # python numbers, numpy and torch scalars
            except (TypeError, ValueError):
                continue
            if math.isfinite(number) and number > 0:
                return number
    return None


def _local_cutoff(calculator: Any) -> float | None:
    """The interaction cutoff (Å) a local ASE calculator exposes itself, if any."""
    name = type(calculator).__name__
    if name == "EAM":
        return _first_number([calculator], ["cutoff"])
    if name in ("LennardJones", "MorsePotential"):
        params = getattr(calculator, "parameters", {})
        rc = params.get("rc")
        if rc is None and name == "LennardJones":
            rc = 3.0 * float(params.get("sigma", 1.0))
        return None if rc is None else float(rc)
    return None


def detect_receptive_field(calculator: Any, cutoff: float | None = None) -> tuple[float, float] | None:
    """(receptive field R, interaction cutoff r_c) in Å of a known calculator, or None.

    Local ASE calculators (EMT, EAM, LennardJones, MorsePotential, LAMMPSlib, LAMMPS): R = r_c
    (``cutoff`` when given, else the calculator's own). Message-passing models: R = layers × r_c
    from CHGNet's ``model.n_conv`` and ``model.graph_converter.atom_graph_cutoff``, or from any
    calculator / ``.model`` / ``.models[0]`` exposing a cutoff (``cutoff``, ``r_max``, ``rc``...)
    and a layer count (``n_conv``, ``num_interactions``, ``n_layers``...)."""
    name = type(calculator).__name__
    if name in _LOCAL_CALCULATORS:
        rc = cutoff if cutoff is not None else _local_cutoff(calculator)
        return None if rc is None else (float(rc), float(rc))
    model = getattr(calculator, "model", None)
    models = getattr(calculator, "models", None)
    holders = [calculator]
    if model is not None:
        holders.append(model)
        converter = getattr(model, "graph_converter", None)  # CHGNet
        if converter is not None:
            holders.append(converter)
    if isinstance(models, (list, tuple)) and models:
        holders.append(models[0])
    layers = _first_number(holders, _LAYER_ATTRS) or _message_passing_blocks(holders)
    rc = _first_number(holders, ("atom_graph_cutoff", *_CUTOFF_ATTRS))
    if layers is None or rc is None:
        return None
    if cutoff is not None:
        rc = float(cutoff)
    return layers * rc, rc


def _refusal(calculator: Any) -> str:
    return (f"ASELocalEnergy: the receptive field of {type(calculator).__name__} is unknown: pass "
            "receptive_field=<message-passing layers × cutoff> Å (receptive_field=cutoff for a local "
            "potential such as EAM)")


# ------------------------------------------------------------------------------------------
class ASELocalEnergy:
    """Swap energy changes from any ASE calculator, evaluated on the local cluster.

    ``calculator``: an ASE calculator (used as is; one instance is reused).
    ``cutoff`` (Å): the potential's interaction (graph) cutoff r_c. Optional when
    ``receptive_field`` is given or the calculator exposes it.
    ``receptive_field`` (Å): distance R within which an atom's energy depends on the others
    (module docstring): the cutoff for a local potential, layers × cutoff for message passing.
    Default: detected (:func:`detect_receptive_field`), else a one-line ValueError. A smaller
    value trades exactness for speed; check it with :meth:`swap_delta_whole_cell`.
    ``per_atom``: use per-atom energies (default: when the calculator implements 'energies' and
    has not switched them off, e.g. CHGNet needs ``return_site_energies=True``); with False the
    total cluster energy is used, or the whole cell when periodic copies of the swapped sites fall
    inside the cluster.
    ``batch_energies``: optional ``f(list_of_atoms) -> list`` of per-atom energy arrays (or of
    total energies when ``per_atom`` is False), used instead of one calculator call per
    structure; default the calculator's own ``batch_energies`` method when it has one.
    The cluster is core (R + margin) plus a buffer of R + margin around the swapped sites.
    Implements :class:`matscale.calculators.base.LocalEnergyModel` with
    ``interaction_range = 2 R`` (a species change at x changes the energies of atoms within R of
    x, which the swaps of pairs up to 2 R away also change).
    """

    def __init__(self, calculator: "Calculator", cutoff: float | None = None, margin: float = _MARGIN,
                 per_atom: bool | None = None, *, receptive_field: float | None = None,
                 batch_energies: Callable[[list], Sequence[Any]] | None = None) -> None:
        if not hasattr(calculator, "get_potential_energy") or not hasattr(calculator, "calculate"):
            raise TypeError("calculator must be an ASE calculator (with get_potential_energy and calculate)")
        for label, value in (("cutoff", cutoff), ("receptive_field", receptive_field)):
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{label} must be a finite positive distance in Å, got {value!r}")
        if not (margin >= 0):
            raise ValueError(f"margin must be >= 0 Å, got {margin!r}")
        if receptive_field is None:
            detected = detect_receptive_field(calculator, cutoff)
            if detected is None:
                raise ValueError(_refusal(calculator))
            receptive_field, cutoff = detected
        elif cutoff is not None and receptive_field < cutoff:
            raise ValueError(f"receptive_field={receptive_field} Å must be >= cutoff={cutoff} Å "
                             "(layers × cutoff for a message-passing model)")
        self.calculator = calculator
        self.receptive_field = float(receptive_field)
        self.cutoff = float(cutoff) if cutoff is not None else self.receptive_field
        self.margin = float(margin)
        self.interaction_range = 2.0 * self.receptive_field
        props = getattr(calculator, "implemented_properties", ())
        site_energies_off = getattr(calculator, "return_site_energies", None) is False  # CHGNet
        if per_atom:
            if "energies" not in props:
                raise ValueError("per_atom=True needs a calculator with 'energies' in implemented_properties")
            if site_energies_off:
                raise ValueError(f"per_atom=True: construct {type(calculator).__name__} with "
                                 "return_site_energies=True (it computes no per-atom energies otherwise)")
        self.per_atom = ("energies" in props and not site_energies_off) if per_atom is None else bool(per_atom)
        try:
            takes_task = "task" in inspect.signature(calculator.calculate).parameters
        except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
            takes_task = False
        self._calc_kwargs = {"task": "e"} if takes_task else {}  # CHGNet: energy only
        if batch_energies is None:
            batch_energies = getattr(calculator, "batch_energies", None)
        if batch_energies is not None and not callable(batch_energies):
            raise TypeError("batch_energies must be callable: f(list_of_atoms) -> list of energies")
        self.batch_energies = batch_energies
        self.n_calls = 0  # calculator / batch invocations so far
        self.n_structures = 0  # structures evaluated so far

    # -- energies of explicit structures -------------------------------------------------------
    def _cluster_atoms(self, lattice: "BCCLattice", cluster: LocalCluster, species: np.ndarray):
        """Non-periodic ase.Atoms of the occupied copies (in a box with ≥ 2 (r_c + 5 Å) of
        vacuum, for calculators that treat every cell as periodic) and the occupied mask."""
        from ase import Atoms

        occ = species > 0
        pos = cluster.positions[occ]
        pad = self.cutoff + _VACUUM
        span = pos.max(axis=0) - pos.min(axis=0) + 2.0 * pad
        atoms = Atoms(symbols=[lattice.elements[c - 1] for c in species[occ]],
                      positions=pos - pos.min(axis=0) + pad, cell=np.diag(span), pbc=False)
        return atoms, occ

    def _one(self, atoms) -> Any:
        from ase.calculators.calculator import all_changes

        prop = "energies" if self.per_atom else "energy"
        self.calculator.calculate(atoms, [prop], all_changes, **self._calc_kwargs)
        results = self.calculator.results
        if prop not in results:
            hint = (" (construct it with return_site_energies=True)"
                    if hasattr(self.calculator, "return_site_energies") else "")
            raise RuntimeError(f"{type(self.calculator).__name__} returned no {prop!r}{hint}; "
                               "or pass per_atom=False to use total energies")
        return results[prop]

    def evaluate(self, structures: list) -> list:
        """Energies of ``structures`` (ase.Atoms): float64 per-atom arrays when ``per_atom``, else
        float totals (eV). One batched call when a ``batch_energies`` hook exists, else one
        calculator call per structure; only energies are requested."""
        if not structures:
            return []
        if self.batch_energies is not None:
            raw = list(self.batch_energies(structures))
            self.n_calls += 1
            if len(raw) != len(structures):
                raise RuntimeError(f"batch_energies returned {len(raw)} results for {len(structures)} structures")
        else:
            raw = []
            for atoms in structures:
                raw.append(self._one(atoms))
                self.n_calls += 1
        self.n_structures += len(structures)
        out = []
        for atoms, value in zip(structures, raw):
            arr = np.asarray(value, dtype=np.float64)
            if self.per_atom:
                if arr.shape != (len(atoms),):
                    raise RuntimeError(f"per-atom energies have shape {arr.shape}, expected ({len(atoms)},)")
                out.append(arr)
            else:
                out.append(float(arr.sum()) if arr.ndim else float(arr))
        return out

    def cell_energy(self, lattice: "BCCLattice", species: np.ndarray | None = None) -> float:
        """Energy (eV) of the whole periodic lattice (vacancies left out); the float64 sum of the
        per-atom energies when ``per_atom``."""
        value = self.evaluate([lattice_atoms(lattice, species)])[0]
        return float(np.sum(value))

    def swap_delta_whole_cell(self, lattice: "BCCLattice", site_a: int, site_b: int) -> float:
        """Reference ΔE (eV) from two whole-cell evaluations."""
        after = lattice.species.copy()
        after[[site_a, site_b]] = after[[site_b, site_a]]
        return self.cell_energy(lattice, after) - self.cell_energy(lattice)

    # -- LocalEnergyModel ----------------------------------------------------------------------
    def swap_delta(self, lattice: "BCCLattice", site_a: int, site_b: int) -> float:
        """E(after exchanging the species on site_a and site_b) − E(before), in eV."""
        return float(self.swap_deltas(lattice, np.array([[site_a, site_b]]))[0])

    def swap_deltas(self, lattice: "BCCLattice", pairs: np.ndarray) -> np.ndarray:
        """ΔE [M] (eV) of independent swaps [M, 2], each on the unchanged current lattice. Pairs
        sharing their first site (e.g. the 8 hops of one vacancy) share one cluster and one
        'before' evaluation; all structures of the call go to :meth:`evaluate` together."""
        pairs = check_pairs(lattice, pairs)
        out = np.zeros(len(pairs))
        species = lattice.species
        todo = np.flatnonzero(species[pairs[:, 0]] != species[pairs[:, 1]]) if len(pairs) else []
        if len(todo) == 0:
            return out
        plan = _Plan()
        whole_cell = cluster_size(lattice, self.receptive_field, self.margin) >= lattice.n_sites
        order = todo[np.argsort(pairs[todo, 0], kind="stable")]
        bounds = np.flatnonzero(np.diff(pairs[order, 0])) + 1
        for group in np.split(order, bounds):
            if whole_cell:
                self._plan_whole_cell(lattice, pairs, group, plan)
            else:
                self._plan_cluster(lattice, pairs, group, plan)
        energies = self.evaluate(plan.structures)
        for idx, before, after, combine in plan.jobs:
            out[idx] = combine(energies[before], energies[after])
        return out

    def _plan_cluster(self, lattice: "BCCLattice", pairs: np.ndarray, group: np.ndarray,
                      plan: "_Plan") -> None:
        species = lattice.species
        cluster = build_local_cluster(lattice, pairs[group], self.receptive_field, self.margin)
        before_species = cluster.species(species)
        atoms, occ_before = self._cluster_atoms(lattice, cluster, before_species)
        before = None
        for k, idx in enumerate(group):
            a, b = (int(v) for v in pairs[idx])
            if not self.per_atom and cluster.has_foreign_copy[k]:
                self._plan_whole_cell(lattice, pairs, np.array([idx]), plan)
                continue
            if before is None:
                before = plan.add(atoms)
            after_atoms, occ_after = self._cluster_atoms(lattice, cluster, cluster.species(species, (a, b)))
            if self.per_atom:
                combine = _core_sum(cluster.core_site_mask(k), occ_before, occ_after)
            else:
                combine = _difference
            plan.jobs.append((idx, before, plan.add(after_atoms), combine))

    def _plan_whole_cell(self, lattice: "BCCLattice", pairs: np.ndarray, group: np.ndarray,
                         plan: "_Plan") -> None:
        species = lattice.species
        if plan.cell_before is None:
            plan.cell_before = plan.add(lattice_atoms(lattice, species))
        occ_before = species > 0
        for idx in group:
            a, b = (int(v) for v in pairs[idx])
            after = species.copy()
            after[[a, b]] = after[[b, a]]
            if self.per_atom:
                core = np.zeros(lattice.n_sites, dtype=bool)
                core[lattice.sites_within(np.array([a, b]), self.receptive_field + self.margin)] = True
                combine = _core_sum(core, occ_before, after > 0)
            else:
                combine = _difference
            plan.jobs.append((idx, plan.cell_before, plan.add(lattice_atoms(lattice, after)), combine))


class _Plan:
    """Structures to evaluate and how each pair's ΔE is formed from their energies."""

    def __init__(self) -> None:
        self.structures: list = []
        self.jobs: list[tuple[int, int, int, Callable[[Any, Any], float]]] = []
        self.cell_before: int | None = None

    def add(self, atoms) -> int:
        self.structures.append(atoms)
        return len(self.structures) - 1


def _difference(before: float, after: float) -> float:
    return float(after) - float(before)


def _core_sum(core: np.ndarray, occ_before: np.ndarray,
              occ_after: np.ndarray) -> Callable[[np.ndarray, np.ndarray], float]:
    """ΔE = Σ_core [e_i(after) − e_i(before)] in float64, per-atom energies mapped to sites."""
    def combine(e_before: np.ndarray, e_after: np.ndarray) -> float:
        site_before = np.zeros(len(core))
        site_after = np.zeros(len(core))
        site_before[occ_before] = e_before
        site_after[occ_after] = e_after
        return float((site_after[core] - site_before[core]).sum())
    return combine


def grouped_swap_deltas(lattice: "BCCLattice", pairs: np.ndarray,
                        group_fn: Callable[["BCCLattice", np.ndarray], np.ndarray]) -> np.ndarray:
    """Apply ``group_fn(lattice, pairs_of_group)`` to the pairs grouped by their first site."""
    out = np.empty(len(pairs))
    if len(pairs) == 0:
        return out
    order = np.argsort(pairs[:, 0], kind="stable")
    firsts = pairs[order, 0]
    bounds = np.flatnonzero(np.diff(firsts)) + 1
    for group in np.split(order, bounds):
        out[group] = group_fn(lattice, pairs[group])
    return out
