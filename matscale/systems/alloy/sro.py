"""Chemical short-range order on a BCC lattice: Warren–Cowley α and the paper's δ, patch-additive.

Definitions (vacancies excluded everywhere)
------------------------------------------
N_ab^(k): number of *ordered* pairs (i, j) with i an a-atom, j an b-atom and j one of the z_k
shell-k neighbours of i (z = 8, 6, 12 for shells 1, 2, 3). Each unordered bond is counted from
both ends, so N_ab = N_ba. N_a: number of a-atoms; N: number of atoms; c_b = N_b / N.

    Warren–Cowley   α_ab^(k) = 1 − N_ab^(k) / (z_k N_a c_b)          (symmetric in a, b)
    paper's δ       δ_ab     = N_ab^(1) / N_a − z_1 c_b  = Z_ab − 8 c_b

(δ_ab = −8 c_b α_ab^(1); for an equimolar ternary δ = −(8/3) α.) The normaliser uses z_k N_a,
not the number of *atom* neighbours, so that every quantity is linear in the pair counts; with
a vacancy fraction c_v this shifts α by O(c_v).

Patch additivity
----------------
Every ordered pair (i, j) is owned by its first site i. A patch's pair counts N_ab^(p) are the
pairs owned by its sites, so Σ_p N_ab^(p) = N_ab exactly. The patch *share* of a quantity is
its linear form with the patch's counts scaled by the number of patches K and the *global*
normalisers (N, N_a, c_b):

    α_ab^(k)[p] = 1 − K N_ab^(k)(p) / (z_k N_a c_b),     δ_ab[p] = K N_ab^(1)(p) / N_a − 8 c_b,

so the mean of the shares over the K patches equals the global value exactly. Shares are
contributions, not the SRO of the patch seen as an isolated box. Pass ``counts`` (global
species counts) to evaluate shares of a subset of sites with the global normalisation.
"""
from __future__ import annotations

import numpy as np

from matscale.systems.alloy.lattice import NEIGHBOR_OFFSETS, BCCLattice

COORDINATION = {shell: len(NEIGHBOR_OFFSETS[shell]) for shell in NEIGHBOR_OFFSETS}


def pair_labels(elements: tuple[str, ...]) -> list[str]:
    """Labels of the upper-triangle pairs, e.g. ['NbNb', 'NbMo', 'NbTa', 'MoMo', 'MoTa', 'TaTa']."""
    n = len(elements)
    return [elements[a] + elements[b] for a in range(n) for b in range(a, n)]


def _check_shells(shells: tuple[int, ...]) -> tuple[int, ...]:
    shells = tuple(int(s) for s in np.atleast_1d(shells))
    if not shells or any(s not in COORDINATION for s in shells):
        raise ValueError(f"shells must be a non-empty subset of (1, 2, 3), got {shells}")
    return shells


def pair_counts(lattice: BCCLattice, shells: tuple[int, ...] = (1, 2, 3), owners: np.ndarray | None = None) -> np.ndarray:
    """Ordered pair counts N_ab^(k), int64 [n_shells, n_el, n_el] (index a = code − 1); only
    pairs whose first site is in ``owners`` (site indices, default all sites)."""
    shells = _check_shells(shells)
    n_el = lattice.n_elements
    sites = np.arange(lattice.n_sites) if owners is None else np.asarray(owners, dtype=np.int64).ravel()
    species = lattice.species.astype(np.int64)
    out = np.zeros((len(shells), n_el, n_el), dtype=np.int64)
    first = species[sites]
    for k, shell in enumerate(shells):
        second = species[lattice.neighbors(shell)[sites]]
        both = (first[:, None] > 0) & (second > 0)
        code = ((first[:, None] - 1) * n_el + (second - 1))[both]
        out[k] = np.bincount(code, minlength=n_el * n_el).reshape(n_el, n_el)
    return out


def patch_pair_counts(lattice: BCCLattice, size_cells: int, shells: tuple[int, ...] = (1, 2, 3)) -> np.ndarray:
    """Pair counts owned by each of the K cubic patches of ``size_cells`` cells (patch order of
    ``lattice.patches``), int64 [K, n_shells, n_el, n_el]; they sum to :func:`pair_counts`."""
    shells = _check_shells(shells)
    patches = lattice.patches(size_cells)
    n_patches = patches.shape[0]
    n_el = lattice.n_elements
    patch_of_site = np.empty(lattice.n_sites, dtype=np.int64)
    patch_of_site[patches] = np.arange(n_patches)[:, None]
    species = lattice.species.astype(np.int64)
    out = np.zeros((n_patches, len(shells), n_el, n_el), dtype=np.int64)
    for k, shell in enumerate(shells):
        second = species[lattice.neighbors(shell)]
        both = (species[:, None] > 0) & (second > 0)
        code = (patch_of_site[:, None] * n_el * n_el + (species[:, None] - 1) * n_el + (second - 1))[both]
        out[:, k] = np.bincount(code, minlength=n_patches * n_el * n_el).reshape(n_patches, n_el, n_el)
    return out


def _normalisers(lattice: BCCLattice, counts: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(N_a int [n_el], c_b float [n_el]) from the given or the lattice's species counts."""
    n_a = lattice.species_counts() if counts is None else np.asarray(counts, dtype=np.int64)
    if n_a.shape != (lattice.n_elements,):
        raise ValueError(f"counts must have shape ({lattice.n_elements},), got {n_a.shape}")
    if np.any(n_a <= 0):
        raise ValueError(f"every element needs at least one atom for SRO normalisation, counts {n_a.tolist()}")
    return n_a, n_a / n_a.sum()


def alpha_from_counts(pairs: np.ndarray, shells: tuple[int, ...], n_a: np.ndarray, c_b: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """α [..., n_shells, n_el, n_el] = 1 − scale · N_ab / (z_k N_a c_b) (scale = K for shares)."""
    z = np.array([COORDINATION[s] for s in _check_shells(shells)], dtype=np.float64)
    denominator = z[:, None, None] * n_a[:, None] * c_b[None, :]
    return 1.0 - scale * pairs / denominator


def delta_from_counts(first_shell_pairs: np.ndarray, n_a: np.ndarray, c_b: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """δ upper-triangle components [..., n_el (n_el + 1) / 2] from first-shell pair counts."""
    full = scale * first_shell_pairs / n_a[:, None] - COORDINATION[1] * c_b[None, :]
    rows, cols = np.triu_indices(len(n_a))
    return full[..., rows, cols]


def warren_cowley(lattice: BCCLattice, shells: tuple[int, ...] = (1, 2, 3), counts: np.ndarray | None = None) -> np.ndarray:
    """Warren–Cowley α_ab^(k), float64 [n_shells, n_el, n_el] (symmetric in a, b)."""
    shells = _check_shells(shells)
    n_a, c_b = _normalisers(lattice, counts)
    return alpha_from_counts(pair_counts(lattice, shells), shells, n_a, c_b)


def warren_cowley_dict(lattice: BCCLattice, shells: tuple[int, ...] = (1, 2, 3)) -> dict[tuple[int, str], float]:
    """α as a dict {(shell, 'MoTa'): value} over the upper-triangle pairs."""
    shells = _check_shells(shells)
    alpha = warren_cowley(lattice, shells)
    n = lattice.n_elements
    return {
        (shell, lattice.elements[a] + lattice.elements[b]): float(alpha[k, a, b])
        for k, shell in enumerate(shells)
        for a in range(n)
        for b in range(a, n)
    }


def sro_delta(lattice: BCCLattice, counts: np.ndarray | None = None) -> np.ndarray:
    """The paper's δ_ab = Z_ab − 8 c_b, float64 [6] for (NbNb, NbMo, NbTa, MoMo, MoTa, TaTa)
    (generally the upper triangle in element order, see :func:`pair_labels`)."""
    n_a, c_b = _normalisers(lattice, counts)
    return delta_from_counts(pair_counts(lattice, (1,))[0], n_a, c_b)


def warren_cowley_patch_shares(lattice: BCCLattice, size_cells: int, shells: tuple[int, ...] = (1, 2, 3),
                               counts: np.ndarray | None = None) -> np.ndarray:
    """Per-patch α shares [K, n_shells, n_el, n_el]; their mean over patches is the global α."""
    shells = _check_shells(shells)
    n_a, c_b = _normalisers(lattice, counts)
    per_patch = patch_pair_counts(lattice, size_cells, shells)
    return alpha_from_counts(per_patch, shells, n_a, c_b, scale=float(per_patch.shape[0]))


def sro_delta_patch_shares(lattice: BCCLattice, size_cells: int, counts: np.ndarray | None = None) -> np.ndarray:
    """Per-patch δ shares [K, 6]; their mean over patches is :func:`sro_delta`."""
    n_a, c_b = _normalisers(lattice, counts)
    per_patch = patch_pair_counts(lattice, size_cells, (1,))[:, 0]
    return delta_from_counts(per_patch, n_a, c_b, scale=float(per_patch.shape[0]))


class WarrenCowleyObserver:
    """Observer for :class:`~matscale.systems.alloy.swap.SwapMCEnsemble`: the upper-triangle α
    per shell, flattened to [n_shells * n_el (n_el + 1) / 2] (shell-major)."""

    def __init__(self, shells: tuple[int, ...] = (1, 2, 3), tag: str = "warren_cowley") -> None:
        self.shells = _check_shells(shells)
        self.tag = tag

    def __call__(self, lattice: BCCLattice) -> np.ndarray:
        alpha = warren_cowley(lattice, self.shells)
        rows, cols = np.triu_indices(lattice.n_elements)
        return alpha[:, rows, cols].ravel()


class DeltaObserver:
    """Observer returning :func:`sro_delta` (6 components for Nb–Mo–Ta)."""

    def __init__(self, tag: str = "sro_delta") -> None:
        self.tag = tag

    def __call__(self, lattice: BCCLattice) -> np.ndarray:
        return sro_delta(lattice)
