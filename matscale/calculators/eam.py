"""Zhou–Johnson–Wadley (2004) embedded-atom potentials: parameters, analytic functions, setfl I/O.

Functional form (X.W. Zhou, R.A. Johnson, H.N.G. Wadley, Phys. Rev. B 69, 144113 (2004)),
lengths in Å, energies in eV, densities in the potential's arbitrary units:

* electron density   ρ(r) = f_e exp[−β(r/r_e − 1)] / [1 + (r/r_e − λ)^20]
* pair (same kind)   φ_aa(r) = A exp[−α(r/r_e − 1)] / [1 + (r/r_e − κ)^20]
                               − B exp[−β(r/r_e − 1)] / [1 + (r/r_e − λ)^20]
* pair (mixed)       φ_ab(r) = ½ [ρ_b(r)/ρ_a(r) φ_aa(r) + ρ_a(r)/ρ_b(r) φ_bb(r)]
* embedding          F(ρ), three pieces joined at ρ_n = 0.85 ρ_e and ρ_0 = 1.15 ρ_e:
    ρ < ρ_n:          Σ_{i=0..3} F_ni (ρ/ρ_n − 1)^i
    ρ_n ≤ ρ < ρ_0:    Σ_{i=0..3} F_i (ρ/ρ_e − 1)^i   (F_3 differs below / above ρ_e)
    ρ ≥ ρ_0:          F_e [1 − η ln(ρ/ρ_s)] (ρ/ρ_s)^η

The setfl (LAMMPS ``pair_style eam/alloy``) writer follows the conventions of the NIST/LAMMPS
generator ``Zhou04_create_v2.f``: N_r = N_ρ = 2000, r_cut = √10/2 · max_a(√2 r_e,a), r < 0.5 Å
clamped to 0.5 Å in ρ and φ, ρ_max = max(max ρ(r), 2 max ρ_e, 100), F tabulated on
ρ_k = k Δρ, and the pair columns hold r·φ(r) (eV·Å).

Command line::

    python -m matscale.calculators.eam --elements Nb Mo Ta --out potentials/NbMoTa_Zhou04.eam.alloy
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

__all__ = [
    "ZhouParameters",
    "ZHOU_PARAMETERS",
    "zhou_parameters",
    "SetflPotential",
    "make_zhou_setfl",
    "write_setfl",
    "read_setfl",
    "read_setfl_header",
    "bcc_lattice_sum",
    "main",
]

# Conventions of Zhou04_create_v2.f
N_R = 2000
N_RHO = 2000
R_CLAMP = 0.5  # Å: ρ(r) and φ(r) below this distance are evaluated at 0.5 Å


@dataclass(frozen=True)
class ZhouParameters:
    """One element's Zhou-2004 EAM parameter set (eV, Å; densities in arbitrary units).

    ``source`` records where the numbers come from; ``verified`` is False where they were not
    checked against a primary publication.
    """

    element: str
    atomic_number: int
    mass: float  # g/mol
    r_e: float
    f_e: float
    rho_e: float
    rho_s: float
    alpha: float
    beta: float
    A: float
    B: float
    kappa: float
    lam: float
    F_n: tuple[float, float, float, float]
    F_0: float
    F_1: float
    F_2: float
    F_3_below: float
    F_3_above: float
    eta: float
    F_e: float
    source: str = ""
    verified: bool = True
    notes: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            numbers = value if isinstance(value, tuple) else (value,)
            for v in numbers:
                if isinstance(v, float) and not math.isfinite(v):
                    raise ValueError(f"Zhou parameter {self.element}.{f.name} must be finite, got {v}")
        if self.r_e <= 0 or self.rho_e <= 0 or self.rho_s <= 0 or self.f_e <= 0:
            raise ValueError(f"Zhou parameters of {self.element}: r_e, f_e, rho_e, rho_s must be > 0")
        if self.mass <= 0:
            raise ValueError(f"Zhou parameters of {self.element}: mass must be > 0, got {self.mass}")

    @property
    def bcc_lattice_constant(self) -> float:
        """Cubic BCC lattice constant (Å) whose nearest-neighbour distance is r_e: 2 r_e / √3."""
        return 2.0 * self.r_e / math.sqrt(3.0)

    # -- analytic functions ------------------------------------------------------------------
    def density(self, r: np.ndarray | float) -> np.ndarray:
        """Atomic electron density ρ(r) contributed at distance r (Å)."""
        x = np.asarray(r, dtype=float) / self.r_e
        return self.f_e * np.exp(-self.beta * (x - 1.0)) / (1.0 + (x - self.lam) ** 20)

    def pair(self, r: np.ndarray | float) -> np.ndarray:
        """Same-element pair potential φ_aa(r) in eV."""
        x = np.asarray(r, dtype=float) / self.r_e
        repulsive = self.A * np.exp(-self.alpha * (x - 1.0)) / (1.0 + (x - self.kappa) ** 20)
        attractive = self.B * np.exp(-self.beta * (x - 1.0)) / (1.0 + (x - self.lam) ** 20)
        return repulsive - attractive

    def embedding(self, rho: np.ndarray | float) -> np.ndarray:
        """Embedding energy F(ρ) in eV (three-piece Zhou form, continuous at ρ_n, ρ_e, ρ_0)."""
        rho = np.asarray(rho, dtype=float)
        rho_n = 0.85 * self.rho_e
        rho_0 = 1.15 * self.rho_e
        out = np.empty_like(rho)
        low = rho < rho_n
        dn = rho[low] / rho_n - 1.0
        out[low] = self.F_n[0] + dn * (self.F_n[1] + dn * (self.F_n[2] + dn * self.F_n[3]))
        mid = (~low) & (rho < rho_0)
        de = rho[mid] / self.rho_e - 1.0
        f3 = np.where(rho[mid] < self.rho_e, self.F_3_below, self.F_3_above)
        out[mid] = self.F_0 + de * (self.F_1 + de * (self.F_2 + de * f3))
        high = rho >= rho_0
        ratio = rho[high] / self.rho_s
        out[high] = self.F_e * (1.0 - self.eta * np.log(ratio)) * ratio**self.eta
        return out


_ZHOU_2004 = "X.W. Zhou, R.A. Johnson, H.N.G. Wadley, Phys. Rev. B 69, 144113 (2004)"

ZHOU_PARAMETERS: dict[str, ZhouParameters] = {
    "Mo": ZhouParameters(
        element="Mo", atomic_number=42, mass=95.94, r_e=2.728100, f_e=2.723710,
        rho_e=29.354065, rho_s=29.354065, alpha=8.393531, beta=4.476550, A=0.708787,
        B=1.120373, kappa=0.137640, lam=0.275280,
        F_n=(-3.692913, -0.178812, 0.380450, -3.133650), F_0=-3.71, F_1=0.0, F_2=0.875874,
        F_3_below=0.776222, F_3_above=0.776222, eta=0.790879, F_e=-3.712093,
        source=_ZHOU_2004 + ", as transcribed in LAMMPS tools/eam_database/EAM_code "
        "(identical in GPUMD and mdapy)",
    ),
    "Ta": ZhouParameters(
        element="Ta", atomic_number=73, mass=180.9479, r_e=2.860082, f_e=3.086341,
        rho_e=33.787168, rho_s=33.787168, alpha=8.489528, beta=4.527748, A=0.611679,
        B=1.032101, kappa=0.176977, lam=0.353954,
        F_n=(-5.103845, -0.405524, 1.112997, -3.585325), F_0=-5.14, F_1=0.0, F_2=1.640098,
        F_3_below=0.221375, F_3_above=0.221375, eta=0.848843, F_e=-5.141526,
        source=_ZHOU_2004 + ", as transcribed in LAMMPS tools/eam_database/EAM_code "
        "(identical in GPUMD and mdapy)",
    ),
    "Nb": ZhouParameters(
        element="Nb", atomic_number=41, mass=92.906, r_e=2.858230, f_e=2.889832,
        rho_e=31.744900, rho_s=31.744900, alpha=7.514546, beta=4.500000, A=0.569650,
        B=0.905874, kappa=0.136112, lam=0.388893,
        F_n=(-4.928550, -0.549044, 1.680064, -2.699442), F_0=-4.975703, F_1=0.0, F_2=1.980875,
        F_3_below=-0.765504, F_3_above=-0.765504, eta=0.890133, F_e=-4.975568,
        source="RECOVERED by least-squares fits of the Zhou form to the tabulated Nb functions of "
        "CrMoNbTaVW_Xu2022.eam.alloy (shuozhixu/CMS_2022; Xu, Chavoshi, Su, Comput. Mater. Sci. "
        "202, 110942 (2022)) and HfMoNbTaTiVWZr_Mubassira2025.eam.alloy",
        verified=False,
        notes="Not in PRB 69, 144113 nor in the LAMMPS eam_database; possibly from J. Phys.: "
        "Condens. Matter 25, 209501 (2013) (unverified). Check against a primary source before "
        "release.",
    ),
}


def zhou_parameters(element: str) -> ZhouParameters:
    """The Zhou parameter set of ``element``; unknown element -> one-line ValueError."""
    try:
        return ZHOU_PARAMETERS[element]
    except KeyError:
        raise ValueError(
            f"element {element!r} has no Zhou EAM parameters; known: {sorted(ZHOU_PARAMETERS)}"
        ) from None


# ------------------------------------------------------------------------------------------
# setfl tables
# ------------------------------------------------------------------------------------------
@dataclass
class SetflPotential:
    """Tabulated eam/alloy potential (the content of a setfl file).

    Grids: ρ_k = k·drho (k = 0..nrho−1), r_k = k·dr (k = 0..nr−1), both starting at 0.
    ``embedding[a]`` F_a(ρ_k) in eV; ``density[a]`` ρ_a(r_k); ``r_phi[a, b]`` r·φ_ab(r_k) in eV·Å
    (symmetric). ``cutoff`` in Å.
    """

    elements: tuple[str, ...]
    atomic_numbers: tuple[int, ...]
    masses: tuple[float, ...]
    lattice_constants: tuple[float, ...]
    lattice_types: tuple[str, ...]
    nrho: int
    drho: float
    nr: int
    dr: float
    cutoff: float
    embedding: np.ndarray  # [n_el, nrho]
    density: np.ndarray  # [n_el, nr]
    r_phi: np.ndarray  # [n_el, n_el, nr]
    comments: tuple[str, str, str] = ("", "", "")

    def element_index(self, element: str) -> int:
        """Index of ``element`` in this potential; unknown element -> one-line ValueError."""
        if element not in self.elements:
            raise ValueError(f"element {element!r} is not in the potential; it has {list(self.elements)}")
        return self.elements.index(element)


def _zhou_pair_mixed(pa: ZhouParameters, pb: ZhouParameters, r: np.ndarray) -> np.ndarray:
    if pa is pb:
        return pa.pair(r)
    rho_a, rho_b = pa.density(r), pb.density(r)
    return 0.5 * (rho_b / rho_a * pa.pair(r) + rho_a / rho_b * pb.pair(r))


def make_zhou_setfl(elements: Sequence[str]) -> SetflPotential:
    """Tabulate the Zhou potential of ``elements`` with the Zhou04_create_v2.f conventions."""
    if len(elements) == 0 or len(set(elements)) != len(elements):
        raise ValueError(f"elements must be a non-empty list of distinct symbols, got {list(elements)}")
    params = [zhou_parameters(e) for e in elements]
    cutoff = math.sqrt(10.0) / 2.0 * max(math.sqrt(2.0) * p.r_e for p in params)
    dr = cutoff / (N_R - 1.0)
    r = np.maximum(np.arange(N_R) * dr, R_CLAMP)
    density = np.array([p.density(r) for p in params])
    n = len(params)
    r_phi = np.empty((n, n, N_R))
    for i in range(n):
        for j in range(i + 1):
            r_phi[i, j] = r_phi[j, i] = r * _zhou_pair_mixed(params[i], params[j], r)
    rho_max = max(float(density.max()), 2.0 * max(p.rho_e for p in params), 100.0)
    drho = rho_max / (N_RHO - 1.0)
    rho_grid = np.arange(N_RHO) * drho
    embedding = np.array([p.embedding(rho_grid) for p in params])
    for name, arr in (("density", density), ("pair", r_phi), ("embedding", embedding)):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"tabulated Zhou {name} of {list(elements)} is not finite")
    unverified = [p.element for p in params if not p.verified]
    comments = (
        f"Zhou-Johnson-Wadley EAM ({' '.join(elements)}) written by matscale (Zhou04_create_v2 conventions)",
        "Source: " + _ZHOU_2004,
        ("UNVERIFIED parameters (recovered from a tabulation): " + " ".join(unverified))
        if unverified else "All parameter sets as published",
    )
    return SetflPotential(
        elements=tuple(elements),
        atomic_numbers=tuple(p.atomic_number for p in params),
        masses=tuple(p.mass for p in params),
        lattice_constants=tuple(p.bcc_lattice_constant for p in params),
        lattice_types=tuple("bcc" for _ in params),
        nrho=N_RHO, drho=drho, nr=N_R, dr=dr, cutoff=cutoff,
        embedding=embedding, density=density, r_phi=r_phi, comments=comments,
    )


def _write_block(fh, values: np.ndarray, per_line: int = 5) -> None:
    for start in range(0, len(values), per_line):
        fh.write(" ".join(f"{v:.16e}" for v in values[start:start + per_line]) + "\n")


def write_setfl(potential: SetflPotential, path: str | Path) -> Path:
    """Write ``potential`` as a LAMMPS setfl (eam/alloy) file; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    p = potential
    with path.open("w") as fh:
        for line in p.comments:
            fh.write(line.replace("\n", " ") + "\n")
        fh.write(f"{len(p.elements)} " + " ".join(p.elements) + "\n")
        fh.write(f"{p.nrho} {p.drho:.16e} {p.nr} {p.dr:.16e} {p.cutoff:.16e}\n")
        for a in range(len(p.elements)):
            fh.write(f"{p.atomic_numbers[a]} {p.masses[a]:.6f} {p.lattice_constants[a]:.6f} "
                     f"{p.lattice_types[a]}\n")
            _write_block(fh, p.embedding[a])
            _write_block(fh, p.density[a])
        for i in range(len(p.elements)):
            for j in range(i + 1):
                _write_block(fh, p.r_phi[i, j])
    return path


def read_setfl_header(path: str | Path) -> dict:
    """Elements, grids and cutoff (Å) from the first 5 lines of a setfl file (cheap)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"EAM setfl file not found: {path}")
    with path.open() as fh:
        lines = [fh.readline() for _ in range(5)]
    try:
        el = lines[3].split()
        n_el = int(el[0])
        grid = lines[4].split()
        header = {"elements": tuple(el[1:1 + n_el]), "nrho": int(grid[0]), "drho": float(grid[1]),
                  "nr": int(grid[2]), "dr": float(grid[3]), "cutoff": float(grid[4])}
    except (IndexError, ValueError):
        raise ValueError(f"{path} does not start with a setfl (eam/alloy) header") from None
    if len(header["elements"]) != n_el:
        raise ValueError(f"{path}: header names {len(header['elements'])} elements, expected {n_el}")
    return header


def read_setfl(path: str | Path) -> SetflPotential:
    """Read a setfl (eam/alloy) file. Missing file -> one-line FileNotFoundError;
    malformed content -> one-line ValueError."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"EAM setfl file not found: {path}")
    lines = path.read_text().splitlines()
    if len(lines) < 6:
        raise ValueError(f"{path} is too short to be a setfl (eam/alloy) file")
    comments = (lines[0], lines[1], lines[2])
    tokens = " ".join(lines[3:]).split()
    try:
        n_el = int(tokens[0])
        elements = tuple(tokens[1:1 + n_el])
        pos = 1 + n_el
        nrho, drho, nr, dr, cutoff = (int(tokens[pos]), float(tokens[pos + 1]), int(tokens[pos + 2]),
                                      float(tokens[pos + 3]), float(tokens[pos + 4]))
        pos += 5
        z, masses, alat, lat = [], [], [], []
        embedding = np.empty((n_el, nrho))
        density = np.empty((n_el, nr))
        for a in range(n_el):
            z.append(int(tokens[pos]))
            masses.append(float(tokens[pos + 1]))
            alat.append(float(tokens[pos + 2]))
            lat.append(tokens[pos + 3])
            pos += 4
            embedding[a] = np.asarray(tokens[pos:pos + nrho], dtype=float)
            pos += nrho
            density[a] = np.asarray(tokens[pos:pos + nr], dtype=float)
            pos += nr
        r_phi = np.empty((n_el, n_el, nr))
        for i in range(n_el):
            for j in range(i + 1):
                r_phi[i, j] = r_phi[j, i] = np.asarray(tokens[pos:pos + nr], dtype=float)
                pos += nr
    except (IndexError, ValueError) as exc:
        raise ValueError(f"{path} is not a valid setfl (eam/alloy) file: {exc}") from None
    if pos != len(tokens):
        raise ValueError(f"{path}: {len(tokens) - pos} unexpected trailing values in setfl file")
    for name, arr in (("embedding", embedding), ("density", density), ("r*phi", r_phi)):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{path}: non-finite values in the {name} table")
    return SetflPotential(
        elements=elements, atomic_numbers=tuple(z), masses=tuple(masses),
        lattice_constants=tuple(alat), lattice_types=tuple(lat), nrho=nrho, drho=drho, nr=nr,
        dr=dr, cutoff=cutoff, embedding=embedding, density=density, r_phi=r_phi,
        comments=comments,
    )


# ------------------------------------------------------------------------------------------
# analytic BCC lattice sum (used to check lattice constants and cohesive energies)
# ------------------------------------------------------------------------------------------
def bcc_shell_distances(lattice_constant: float, cutoff: float) -> tuple[np.ndarray, np.ndarray]:
    """Distances (Å) and multiplicities of the BCC neighbour shells closer than ``cutoff``."""
    n = int(math.ceil(2.0 * cutoff / lattice_constant)) + 1
    g = np.arange(-n, n + 1)
    d = np.stack(np.meshgrid(g, g, g, indexing="ij"), axis=-1).reshape(-1, 3)
    same_parity = (d % 2 == d[:, :1] % 2).all(axis=1)
    d = d[same_parity & (np.abs(d).sum(axis=1) > 0)]
    dist = np.sqrt((d.astype(float) ** 2).sum(axis=1)) * lattice_constant / 2.0
    dist = dist[dist < cutoff]
    key = np.round(dist, 9)
    shells, counts = np.unique(key, return_counts=True)
    return shells, counts


def bcc_lattice_sum(params: ZhouParameters, lattice_constant: float, cutoff: float | None = None) -> float:
    """Energy per atom (eV) of the perfect pure BCC crystal from the analytic Zhou functions
    (no tabulation). ``cutoff`` defaults to the setfl cutoff √10/2·√2·r_e."""
    if cutoff is None:
        cutoff = math.sqrt(10.0) / 2.0 * math.sqrt(2.0) * params.r_e
    r, m = bcc_shell_distances(lattice_constant, cutoff)
    rho = float((m * params.density(r)).sum())
    return float(params.embedding(np.array([rho]))[0] + 0.5 * (m * params.pair(r)).sum())


def main(argv: Iterable[str] | None = None) -> None:
    """CLI: write a Zhou eam/alloy file for the given elements."""
    parser = argparse.ArgumentParser(description="Write a Zhou-2004 EAM setfl (eam/alloy) file.")
    parser.add_argument("--elements", nargs="+", required=True, help="element symbols, e.g. Nb Mo Ta")
    parser.add_argument("--out", required=True, help="output path, e.g. potentials/NbMoTa_Zhou04.eam.alloy")
    args = parser.parse_args(None if argv is None else list(argv))
    path = write_setfl(make_zhou_setfl(args.elements), args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
