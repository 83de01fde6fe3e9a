"""Patch-additive closure variables: a CNN encoder applied per patch and averaged, plus a decoder.

States follow the system protocol (:mod:`matscale.systems.base`): ``[*grid, *cell]`` with
``grid_dim`` grid axes of ``L`` cells and a per-cell shape ``cell_shape``. For a large
configuration x split into K = (L/p)**grid_dim non-overlapping patches x_J of side p (the same
partition and row-major numbering that partial evolution uses, see :mod:`matscale.geometry`),
the closure variables are

    ẑ(x) = (1/K) Σ_J E(x_J),

so they are additive over patches *by construction*: when only patch I changes, the global
increment is (1/K)(E(x_I after) − E(x_I before)), i.e. ``K × global increment =
encode_patches(after) − encode_patches(before)`` — the same "patch-share" convention as the
physical observables in :mod:`matscale.partial`.

Site values are categorical: the architecture stores ``site_values``, the site value of each
class (class c <- ``site_values[c]``; ±1 spins: (−1, +1), the alloy: its species codes 0..n),
found from the system's ``site_class_index`` by :func:`system_site_values`. The network sees

* two classes: one channel per site holding 2·class − 1 (for spins: the ±1 spin itself);
  the reconstruction loss is the binary cross-entropy of the predicted class-1 probability
  (for spins: (x + 1)/2 as in the paper);
* more classes: one one-hot channel per class; the loss is the cross-entropy over classes.

The ``cell_shape`` axes are folded into the channel axis (channels = class channels ×
prod(cell_shape)), and the convolutions are 1-, 2- or 3-D following ``grid_dim``.

The decoder maps z = (physical observables, ẑ) back to the full configuration; it exists only to
train the encoder with the reconstruction loss and is not used by the SDE.

Normalisation: after training, an affine map ẑ -> (ẑ − shift) / scale ("minmax": shift = min,
scale = max − min; "zscore": shift = mean, scale = std) is computed from the *training*
snapshots only and stored as buffers. It is applied inside :meth:`ClosureModel.encode_patches`,
so the patch average and the patch increments stay exactly consistent (an affine map commutes
with the mean). The physical observables are left unscaled. The closure variables are
dimensionless.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from matscale.io import read_json, reading

_WEIGHTS = "closure.pt"
_CONFIG = "closure.json"
_SPIN_VALUES = (-1, 1)
_CHUNK = 4096  # states per chunk when mapping site values to classes for training
_MAX_PROBED_BYTES = 2  # system_site_values() asks about every value of integer dtypes up to 16 bits


@dataclass(frozen=True)
class ClosureArchitecture:
    """Shapes of a closure model.

    ``p``: patch side (cells); ``L``: box side (cells); ``d_closure`` closure variables;
    ``d_phys`` physical observables fed to the decoder; encoder ``channels``; ``normalization``
    of the latents; ``grid_dim`` grid axes; ``cell_shape`` per-cell trailing shape;
    ``site_values``: the site value of each class (class c <- ``site_values[c]``). The defaults
    of the last three are a 2-D lattice of ±1 spins (closures saved before they existed).
    Continuous fields (e.g. concentrations of a stochastic PDE) have no classes: ``site_values``
    is empty and ``value_shift``/``value_scale`` (one per component of a cell, from the training
    snapshots) standardise the site values the network sees and reconstructs.
    """

    p: int
    L: int
    d_closure: int
    d_phys: int
    channels: tuple[int, ...] = (8, 16, 32)
    normalization: str = "minmax"
    grid_dim: int = 2
    cell_shape: tuple[int, ...] = ()
    site_values: tuple[int, ...] = _SPIN_VALUES
    value_shift: tuple[float, ...] = ()
    value_scale: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.p < 2 or self.L % self.p:
            raise ValueError(f"p={self.p} out of range (allowed: >= 2 dividing L={self.L})")
        if self.d_closure < 1:
            raise ValueError(f"d_closure={self.d_closure} out of range (allowed: >= 1)")
        if self.d_phys < 0:
            raise ValueError(f"d_phys={self.d_phys} out of range (allowed: >= 0)")
        if self.normalization not in ("minmax", "zscore"):
            raise ValueError(f"normalization={self.normalization!r} not allowed (allowed: minmax, zscore)")
        if self.grid_dim not in _LAYERS:
            raise ValueError(f"grid_dim={self.grid_dim} out of range (allowed: 1, 2, 3)")
        if any(n < 1 for n in self.cell_shape):
            raise ValueError(f"cell_shape={self.cell_shape} out of range (allowed: positive sides)")
        if self.continuous:
            n_components = math.prod(self.cell_shape)
            if len(self.value_shift) != n_components or len(self.value_scale) != n_components \
                    or any(not v > 0 for v in self.value_scale):
                raise ValueError(f"value_shift/value_scale of a continuous closure need one entry per cell "
                                 f"component ({n_components}), scales > 0; got {self.value_shift}, {self.value_scale}")
        elif len(self.site_values) < 2 or len(set(self.site_values)) != len(self.site_values):
            raise ValueError(f"site_values={self.site_values} not allowed (allowed: >= 2 distinct values, "
                             "or none for continuous fields)")

    @property
    def n_patches(self) -> int:
        """K = (L / p) ** grid_dim."""
        return (self.L // self.p) ** self.grid_dim

    @property
    def continuous(self) -> bool:
        """True for continuous site values (no classes)."""
        return len(self.site_values) == 0

    @property
    def n_classes(self) -> int:
        """Number of site classes (0 for continuous fields)."""
        return len(self.site_values)

    @property
    def channels_per_site(self) -> int:
        """Input (and output) channels per site: 1 for two classes or a continuous value, else
        one per class."""
        return 1 if self.n_classes in (0, 2) else self.n_classes

    @property
    def site_channels(self) -> int:
        """Channels of the network input and of the decoder output: per site × sites per cell."""
        return self.channels_per_site * math.prod(self.cell_shape)

    @property
    def patch_shape(self) -> tuple[int, ...]:
        """Shape of one patch ``(p, ..., p, *cell)``."""
        return (self.p,) * self.grid_dim + tuple(self.cell_shape)

    @property
    def box_shape(self) -> tuple[int, ...]:
        """Shape of one configuration ``(L, ..., L, *cell)``."""
        return (self.L,) * self.grid_dim + tuple(self.cell_shape)


class _Layers(NamedTuple):
    conv: type[nn.Module]
    batch_norm: type[nn.Module]
    max_pool: type[nn.Module]
    conv_transpose: type[nn.Module]


_LAYERS: dict[int, _Layers] = {
    1: _Layers(nn.Conv1d, nn.BatchNorm1d, nn.MaxPool1d, nn.ConvTranspose1d),
    2: _Layers(nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.ConvTranspose2d),
    3: _Layers(nn.Conv3d, nn.BatchNorm3d, nn.MaxPool3d, nn.ConvTranspose3d),
}


def _n_pool_blocks(p: int, max_blocks: int) -> int:
    """Number of conv + max-pool-by-2 blocks for a patch of side p (stop at side >= 2 and even)."""
    n, side = 0, p
    while n < max_blocks and side % 2 == 0 and side // 2 >= 2:
        side //= 2
        n += 1
    return n


class PatchEncoder(nn.Module):
    """E: site features of one patch ``[N, in_channels, p, ..., p]`` -> d_closure raw closure
    values (before normalisation)."""

    def __init__(self, p: int, d_closure: int, channels: tuple[int, ...], *, in_channels: int = 1,
                 grid_dim: int = 2) -> None:
        super().__init__()
        kind = _LAYERS[grid_dim]
        n_blocks = _n_pool_blocks(p, len(channels))
        layers: list[nn.Module] = []
        c_in, side = in_channels, p
        for c_out in channels[:n_blocks]:
            layers += [kind.conv(c_in, c_out, 3, padding=1), kind.batch_norm(c_out),
                       nn.LeakyReLU(0.2), kind.max_pool(2)]
            c_in, side = c_out, side // 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c_in * side ** grid_dim, d_closure)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(features).flatten(1))


class ConfigDecoder(nn.Module):
    """Decoder z = (phys, ẑ) -> site logits ``[N, out_channels, L, ..., L]`` on the full box."""

    def __init__(self, d_in: int, L: int, width: int = 32, max_up: int = 3, *, out_channels: int = 1,
                 grid_dim: int = 2) -> None:
        super().__init__()
        kind = _LAYERS[grid_dim]
        n_up = 0
        while n_up < max_up and L % (2 ** (n_up + 1)) == 0 and L // 2 ** (n_up + 1) >= 4:
            n_up += 1
        self.side0 = L // 2 ** n_up
        self.width = width
        self.grid_dim = grid_dim
        self.stem = nn.Sequential(nn.Linear(d_in, width * self.side0 ** grid_dim), nn.LeakyReLU(0.2))
        layers: list[nn.Module] = []
        c = width
        for _ in range(n_up):
            c_out = max(c // 2, 8)
            layers += [kind.conv_transpose(c, c_out, 3, stride=2, padding=1, output_padding=1),
                       kind.batch_norm(c_out), nn.LeakyReLU(0.2)]
            c = c_out
        layers.append(kind.conv(c, out_channels, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.stem(z).view(-1, self.width, *(self.side0,) * self.grid_dim)
        return self.body(h)


class ClosureModel(nn.Module):
    """Patch-additive closure encoder + reconstruction decoder.

    ``encode(configs [N, L, ..., L, *cell]) -> [N, d_closure]`` (normalised patch average) and
    ``encode_patches(patches [N, p, ..., p, *cell]) -> [N, d_closure]`` (normalised per-patch
    value E). Inputs hold site values from ``arch.site_values`` (any integer or float dtype).
    """

    def __init__(self, arch: ClosureArchitecture) -> None:
        super().__init__()
        self.arch = arch
        self.encoder = PatchEncoder(arch.p, arch.d_closure, tuple(arch.channels),
                                    in_channels=arch.site_channels, grid_dim=arch.grid_dim)
        self.decoder = ConfigDecoder(arch.d_phys + arch.d_closure, arch.L,
                                     out_channels=arch.site_channels, grid_dim=arch.grid_dim)
        self.register_buffer("latent_shift", torch.zeros(arch.d_closure))
        self.register_buffer("latent_scale", torch.ones(arch.d_closure))
        values = torch.as_tensor(arch.site_values, dtype=torch.int64)
        self._sorted_values, self._class_of_sorted = torch.sort(values)  # not state: from arch
        self._value_shift = torch.as_tensor(arch.value_shift, dtype=torch.float32)
        self._value_scale = torch.as_tensor(arch.value_scale, dtype=torch.float32)
        self.history: dict[str, list[float]] = {"loss": []}

    # -- site values <-> classes ------------------------------------------------------------
    def site_classes(self, values: torch.Tensor) -> torch.Tensor:
        """Class indices (int64, same shape) of site values; ValueError for an unknown value.
        Continuous fields: the standardised values (float32, same shape)."""
        if self.arch.continuous:
            x = values.to(torch.float32)
            shape = (1,) * (x.ndim - len(self.arch.cell_shape)) + tuple(self.arch.cell_shape)
            return (x - self._value_shift.reshape(shape)) / self._value_scale.reshape(shape)
        v = values.to(torch.int64)
        if values.is_floating_point() and not torch.equal(v.to(values.dtype), values):
            raise ValueError(f"site values must be integers from {self.arch.site_values}")
        pos = torch.searchsorted(self._sorted_values, v.contiguous()).clamp_(max=self.arch.n_classes - 1)
        known = self._sorted_values[pos] == v
        if not bool(known.all()):
            raise ValueError(f"site value {int(v[~known][0])} is not one of {self.arch.site_values}")
        return self._class_of_sorted[pos]

    def _site_features(self, classes: torch.Tensor) -> torch.Tensor:
        """Classes ``[B, *grid, *cell]`` -> network input ``[B, site_channels, *grid]``
        (2·class − 1 for two classes, else one-hot; cell axes folded into the channels)."""
        g, n_cell = self.arch.grid_dim, len(self.arch.cell_shape)
        grid_axes, cell_axes = list(range(1, 1 + g)), list(range(1 + g, 1 + g + n_cell))
        if self.arch.continuous:
            x = classes.to(torch.float32)
            order = [0, *cell_axes, *grid_axes]
        elif self.arch.n_classes == 2:
            x = classes.to(torch.float32) * 2.0 - 1.0
            order = [0, *cell_axes, *grid_axes]
        else:
            x = F.one_hot(classes.long(), self.arch.n_classes).to(torch.float32)
            order = [0, 1 + g + n_cell, *cell_axes, *grid_axes]
        return x.permute(order).reshape(classes.shape[0], -1, *classes.shape[1:1 + g])

    # -- geometry ---------------------------------------------------------------------------
    def split_patches(self, configs: torch.Tensor) -> torch.Tensor:
        """[N, L, ..., L, *cell] -> [N, K, p, ..., p, *cell], patch k at origin
        ``np.unravel_index(k, (L/p,) * grid_dim) * p`` (row-major, :mod:`matscale.geometry`)."""
        N, g, p = configs.shape[0], self.arch.grid_dim, self.arch.p
        q = self.arch.L // p
        cell = tuple(configs.shape[1 + g:])
        blocks = configs.reshape(N, *[n for _ in range(g) for n in (q, p)], *cell)
        order = [0, *range(1, 2 * g, 2), *range(2, 2 * g + 1, 2), *range(1 + 2 * g, blocks.ndim)]
        return blocks.permute(order).reshape(N, q ** g, *(p,) * g, *cell)

    # -- raw (unnormalised) maps used in training -------------------------------------------
    def _raw_patch_codes(self, classes: torch.Tensor) -> torch.Tensor:
        """Raw codes ``[B, d_closure]`` of patch classes ``[B, p, ..., p, *cell]``."""
        return self.encoder(self._site_features(classes))

    def _raw_encode(self, classes: torch.Tensor) -> torch.Tensor:
        """Raw patch-averaged codes ``[N, d_closure]`` of configuration classes."""
        patches = self.split_patches(classes)
        N, K = patches.shape[:2]
        codes = self._raw_patch_codes(patches.reshape(N * K, *self.arch.patch_shape))
        return codes.view(N, K, -1).mean(dim=1)

    def _logits(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder logits: ``[N, *cell, *grid]`` (class 1) for two classes, else
        ``[N, n_classes, *cell, *grid]``."""
        a = self.arch
        head = () if a.n_classes in (0, 2) else (a.n_classes,)
        return self.decoder(z).reshape(len(z), *head, *a.cell_shape, *(a.L,) * a.grid_dim)

    def _reconstruction_loss(self, z: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """BCE (two classes) or cross-entropy over classes, mean over sites, of the decoded z
        against the configuration classes ``[N, *grid, *cell]``."""
        g, n_cell = self.arch.grid_dim, len(self.arch.cell_shape)
        target = classes.permute(0, *range(1 + g, 1 + g + n_cell), *range(1, 1 + g))
        logits = self._logits(z)
        if self.arch.continuous:  # mean squared error of the standardised values
            return F.mse_loss(logits, target.to(torch.float32))
        if self.arch.n_classes == 2:
            return F.binary_cross_entropy_with_logits(logits, target.to(torch.float32))
        return F.cross_entropy(logits, target.long())

    # -- public API ---------------------------------------------------------------------------
    @torch.no_grad()
    def encode_patches(self, patches: np.ndarray | torch.Tensor, *, batch_size: int = 4096) -> np.ndarray:
        """Normalised per-patch closure values E(x_J) for patches [N, p, ..., p, *cell] -> [N, d_closure]."""
        x = _as_tensor(patches, "patches", self.arch.patch_shape)
        self.eval()
        out = [(self._raw_patch_codes(self.site_classes(x[i:i + batch_size])) - self.latent_shift)
               / self.latent_scale for i in range(0, x.shape[0], batch_size)]
        return _cat(out, self.arch.d_closure)

    @torch.no_grad()
    def encode(self, configs: np.ndarray | torch.Tensor, *, batch_size: int = 256) -> np.ndarray:
        """Normalised closure variables ẑ(x) = mean_J E(x_J) for configs [N, L, ..., L, *cell]
        -> [N, d_closure]."""
        x = _as_tensor(configs, "configs", self.arch.box_shape)
        self.eval()
        out = [(self._raw_encode(self.site_classes(x[i:i + batch_size])) - self.latent_shift)
               / self.latent_scale for i in range(0, x.shape[0], batch_size)]
        return _cat(out, self.arch.d_closure)

    @torch.no_grad()
    def decode(self, phys: np.ndarray, closure: np.ndarray) -> np.ndarray:
        """Most probable configuration [N, L, ..., L, *cell] (site values; int8 when they fit)
        for normalised closure values; for continuous fields the reconstructed values (float)."""
        self.eval()
        zc = torch.as_tensor(np.asarray(closure), dtype=torch.float32) * self.latent_scale + self.latent_shift
        z = torch.cat([torch.as_tensor(np.asarray(phys), dtype=torch.float32).reshape(len(zc), -1), zc], 1)
        logits = self._logits(z).numpy()
        g, n_cell = self.arch.grid_dim, len(self.arch.cell_shape)
        if self.arch.continuous:  # the reconstructed field, in site units
            out = logits.transpose(0, *range(1 + n_cell, 1 + n_cell + g), *range(1, 1 + n_cell))
            return out * np.asarray(self.arch.value_scale) + np.asarray(self.arch.value_shift)
        classes = (logits > 0).astype(np.int64) if self.arch.n_classes == 2 else logits.argmax(axis=1)
        classes = classes.transpose(0, *range(1 + n_cell, 1 + n_cell + g), *range(1, 1 + n_cell))
        values = np.asarray(self.arch.site_values)
        fits = values.min() >= np.iinfo(np.int8).min and values.max() <= np.iinfo(np.int8).max
        return values.astype(np.int8 if fits else np.int64)[classes]

    # -- persistence --------------------------------------------------------------------------
    def save(self, folder: str | Path) -> None:
        """Write ``closure.pt`` (state_dict) and ``closure.json`` (architecture + history)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(self.state_dict(), folder / _WEIGHTS)
        record = {"architecture": asdict(self.arch), "history": self.history}
        (folder / _CONFIG).write_text(json.dumps(record, indent=2), encoding="utf-8")

    @classmethod
    def load(cls, folder: str | Path) -> "ClosureModel":
        """Rebuild a model saved by :meth:`save` (``torch.load(weights_only=True)``); closures
        saved without ``grid_dim``/``cell_shape``/``site_values`` are 2-D ±1 spin closures."""
        folder = Path(folder)
        record = read_json(folder / _CONFIG)
        arch = dict(record["architecture"])
        for key in ("channels", "cell_shape", "site_values", "value_shift", "value_scale"):
            if key in arch:
                arch[key] = tuple(arch[key])
        model = cls(ClosureArchitecture(**arch))
        with reading(folder / _WEIGHTS):  # damaged weights: one line naming the file
            model.load_state_dict(torch.load(folder / _WEIGHTS, weights_only=True, map_location="cpu"))
        model.history = record.get("history", {"loss": []})
        model.eval()
        return model


def _as_tensor(x: np.ndarray | torch.Tensor, name: str, trailing: tuple[int, ...]) -> torch.Tensor:
    """``x`` as a tensor of shape ``[N, *trailing]`` (its own dtype; one-line ValueError)."""
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if t.ndim != 1 + len(trailing) or tuple(t.shape[1:]) != tuple(trailing):
        raise ValueError(f"{name} must have shape [N, {', '.join(map(str, trailing))}], got {tuple(t.shape)}")
    return t


def _cat(chunks: list[torch.Tensor], d: int) -> np.ndarray:
    if not chunks:
        return np.zeros((0, d), dtype=np.float64)
    return torch.cat(chunks).numpy().astype(np.float64)


def system_site_values(system: Any) -> tuple[int, ...]:
    """The site value of each class of ``system`` (class c <- value c), for :func:`train_closure`.

    A system with floating-point states and no site classes holds continuous fields: ``()``.
    Otherwise uses the optional site-class capability of the protocol (:mod:`matscale.systems.base`):
    ``site_class_index`` is asked about every value of the (integer, at most 16-bit) state dtype;
    the values it rejects with ValueError are no site values, and every class must come from
    exactly one value.
    """
    name = type(system).__name__
    if np.dtype(system.state_dtype).kind == "f" and getattr(system, "site_classes", None) is None:
        return ()  # continuous fields: no classes
    if not isinstance(getattr(system, "site_classes", None), (int, np.integer)) \
            or not callable(getattr(system, "site_class_index", None)):
        raise TypeError(f"system {name} lacks site_classes/site_class_index, which the closure needs")
    dtype = np.dtype(system.state_dtype)
    if dtype.kind not in "iu" or dtype.itemsize > _MAX_PROBED_BYTES:
        raise TypeError(f"system {name}: the closure needs integer site values of at most 16 bits, got {dtype}")
    info = np.iinfo(dtype)
    found: dict[int, list[int]] = {}
    for value in range(int(info.min), int(info.max) + 1):
        try:
            cls = int(system.site_class_index(np.array([value], dtype=dtype))[0])
        except ValueError:
            continue
        found.setdefault(cls, []).append(value)
    n = int(system.site_classes)
    if sorted(found) != list(range(n)) or any(len(v) != 1 for v in found.values()):
        raise ValueError(f"system {name}: site_class_index must map exactly one value to each class "
                         f"0..{n - 1} (and reject the others), got {found}")
    return tuple(found[c][0] for c in range(n))


def train_closure(
    configs: np.ndarray,
    phys: np.ndarray,
    p: int,
    *,
    grid_dim: int = 2,
    site_values: Sequence[int] = _SPIN_VALUES,  # () for continuous fields
    d_closure: int = 2,
    epochs: int = 10,
    batch_size: int = 256,
    lr: float = 2e-3,
    normalization: str = "minmax",
    channels: tuple[int, ...] = (8, 16, 32),
    seed: int = 0,
    progress: bool = False,
) -> ClosureModel:
    """Train a :class:`ClosureModel` on large training snapshots by reconstruction.

    configs: states [N, L, ..., L, *cell] with ``grid_dim`` grid axes (the upsampled snapshots —
    never direct large-system data), holding the ``site_values`` (the site value of each class,
    :func:`system_site_values`; default ±1 spins); the cell shape is the shape after the
    grid axes. phys: [N, d_phys] physical observables of the same snapshots (fed to the decoder).
    Seeded: same inputs and seed give the same weights (CPU). Normalisation constants come from
    these training snapshots only.
    """
    configs = np.asarray(configs)
    phys = np.asarray(phys, dtype=np.float32).reshape(len(configs), -1)
    grid = configs.shape[1:1 + grid_dim]
    if grid_dim not in _LAYERS:
        raise ValueError(f"grid_dim={grid_dim} out of range (allowed: 1, 2, 3)")
    if len(grid) != grid_dim or len(set(grid)) != 1:
        raise ValueError(f"configs must have shape [N, L, ..., L, *cell] with {grid_dim} grid axes, "
                         f"got {configs.shape}")
    if len(configs) < 2:
        raise ValueError(f"configs must hold at least 2 snapshots, got {len(configs)}")
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if value < 1:
            raise ValueError(f"{name}={value} out of range (allowed: >= 1)")
    cell_shape = tuple(configs.shape[1 + grid_dim:])
    shift, scale = _value_standardisation(configs, grid_dim) if len(site_values) == 0 else ((), ())
    arch = ClosureArchitecture(p=p, L=grid[0], d_closure=d_closure, d_phys=phys.shape[1],
                               channels=tuple(channels), normalization=normalization, grid_dim=grid_dim,
                               cell_shape=cell_shape, site_values=tuple(int(v) for v in site_values),
                               value_shift=shift, value_scale=scale)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ClosureModel(arch)
        _fit_reconstruction(model, configs, phys, epochs, batch_size, lr, seed, progress)
    _fit_normalization(model, configs)
    model.eval()
    return model


def _value_standardisation(configs: np.ndarray, grid_dim: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std of every cell component of continuous training snapshots."""
    values = np.asarray(configs, dtype=np.float64)
    flat = values.reshape(-1, *values.shape[1 + grid_dim:]).reshape(-1, max(1, math.prod(values.shape[1 + grid_dim:])))
    mean, std = flat.mean(axis=0), flat.std(axis=0)
    std = np.where(std > 1e-12, std, 1.0)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def _compact_classes(model: ClosureModel, configs: np.ndarray) -> torch.Tensor:
    """Classes of all training configs, stored as uint8 (int64 beyond 256 classes), chunk by chunk;
    standardised float32 values for continuous fields."""
    if model.arch.continuous:
        x = torch.as_tensor(configs)
        return torch.cat([model.site_classes(x[i:i + _CHUNK]) for i in range(0, len(x), _CHUNK)])
    dtype = torch.uint8 if model.arch.n_classes <= 256 else torch.int64
    x = torch.as_tensor(configs)
    return torch.cat([model.site_classes(x[i:i + _CHUNK]).to(dtype) for i in range(0, len(x), _CHUNK)])


def _fit_reconstruction(model: ClosureModel, configs: np.ndarray, phys: np.ndarray, epochs: int,
                        batch_size: int, lr: float, seed: int, progress: bool) -> None:
    classes_all = _compact_classes(model, configs)
    phys_all = torch.as_tensor(phys)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, amsgrad=True, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    n = len(configs)
    iterator: Any = range(epochs)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc="closure", unit="epoch")
    for _ in iterator:
        model.train()
        order = torch.randperm(n, generator=gen)
        total, count = 0.0, 0
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            if len(idx) < 2:  # BatchNorm needs two samples
                continue
            classes = classes_all[idx]
            z = torch.cat([phys_all[idx], model._raw_encode(classes)], dim=1)
            loss = model._reconstruction_loss(z, classes)
            if not torch.isfinite(loss):
                raise FloatingPointError("closure training loss became NaN/inf; lower closure.lr")
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        model.history["loss"].append(total / max(count, 1))


@torch.no_grad()
def _fit_normalization(model: ClosureModel, configs: np.ndarray) -> None:
    model.eval()
    model.latent_shift.zero_()
    model.latent_scale.fill_(1.0)
    raw = torch.as_tensor(model.encode(configs), dtype=torch.float32)
    if model.arch.normalization == "minmax":
        shift, scale = raw.min(0).values, raw.max(0).values - raw.min(0).values
    else:
        shift, scale = raw.mean(0), raw.std(0)
    scale = torch.where(scale > 1e-12, scale, torch.ones_like(scale))
    model.latent_shift.copy_(shift)
    model.latent_scale.copy_(scale)


def patch_additivity_defect(model: ClosureModel, configs: np.ndarray) -> float:
    """max |encode(x) − mean_J encode_patches(x_J)| — zero up to float rounding by construction."""
    patches = model.split_patches(torch.as_tensor(np.asarray(configs)))
    N, K = patches.shape[:2]
    per_patch = model.encode_patches(patches.reshape(N * K, *model.arch.patch_shape))
    return float(np.max(np.abs(model.encode(configs) - per_patch.reshape(N, K, -1).mean(1))))


__all__ = ["ClosureArchitecture", "ClosureModel", "train_closure", "system_site_values",
           "patch_additivity_defect"]
