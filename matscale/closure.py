"""Patch-additive closure variables: a CNN encoder applied per patch and averaged, plus a decoder.

For a large configuration x of side L split into K = (L/p)**2 non-overlapping p x p patches x_J
(the same partition that partial evolution uses, see :mod:`matscale.systems.base`), the closure
variables are

    ẑ(x) = (1/K) Σ_J E(x_J),

so they are additive over patches *by construction*: when only patch I changes, the global
increment is (1/K)(E(x_I after) − E(x_I before)), i.e. ``K × global increment =
encode_patches(after) − encode_patches(before)`` — the same "patch-share" convention as the
physical observables in :mod:`matscale.partial`.

The decoder maps z = (physical observables, ẑ) back to the full L x L configuration; it exists
only to train the encoder with a reconstruction loss (binary cross-entropy between the predicted
up-probability and (x + 1)/2, as in the paper) and is not used by the SDE.

Normalisation: after training, an affine map ẑ -> (ẑ − shift) / scale ("minmax": shift = min,
scale = max − min; "zscore": shift = mean, scale = std) is computed from the *training*
snapshots only and stored as buffers. It is applied inside :meth:`ClosureModel.encode_patches`,
so the patch average and the patch increments stay exactly consistent (an affine map commutes
with the mean). The physical observables (m, ρ_dw) are left unscaled; both are O(1) already.
The closure variables are dimensionless.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

_WEIGHTS = "closure.pt"
_CONFIG = "closure.json"


@dataclass(frozen=True)
class ClosureArchitecture:
    """Shapes of a closure model: patch side ``p``, box side ``L``, ``d_closure`` closure
    variables, ``d_phys`` physical observables fed to the decoder, encoder ``channels``."""

    p: int
    L: int
    d_closure: int
    d_phys: int
    channels: tuple[int, ...] = (8, 16, 32)
    normalization: str = "minmax"

    def __post_init__(self) -> None:
        if self.p < 2 or self.L % self.p:
            raise ValueError(f"p={self.p} out of range (allowed: >= 2 dividing L={self.L})")
        if self.d_closure < 1:
            raise ValueError(f"d_closure={self.d_closure} out of range (allowed: >= 1)")
        if self.d_phys < 0:
            raise ValueError(f"d_phys={self.d_phys} out of range (allowed: >= 0)")
        if self.normalization not in ("minmax", "zscore"):
            raise ValueError(f"normalization={self.normalization!r} not allowed (allowed: minmax, zscore)")

    @property
    def n_patches(self) -> int:
        return (self.L // self.p) ** 2


def _n_pool_blocks(p: int, max_blocks: int) -> int:
    """Number of conv + 2x2 max-pool blocks for a p x p patch (stop at side >= 2 and even)."""
    n, side = 0, p
    while n < max_blocks and side % 2 == 0 and side // 2 >= 2:
        side //= 2
        n += 1
    return n


class PatchEncoder(nn.Module):
    """E: one p x p spin patch (±1) -> d_closure raw closure values (before normalisation)."""

    def __init__(self, p: int, d_closure: int, channels: tuple[int, ...]) -> None:
        super().__init__()
        n_blocks = _n_pool_blocks(p, len(channels))
        layers: list[nn.Module] = []
        c_in, side = 1, p
        for c_out in channels[:n_blocks]:
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out),
                       nn.LeakyReLU(0.2), nn.MaxPool2d(2)]
            c_in, side = c_out, side // 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c_in * side * side, d_closure)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(patches.unsqueeze(1)).flatten(1))


class ConfigDecoder(nn.Module):
    """Decoder z = (phys, ẑ) -> logits of the up-spin probability on the full L x L box."""

    def __init__(self, d_in: int, L: int, width: int = 32, max_up: int = 3) -> None:
        super().__init__()
        n_up = 0
        while n_up < max_up and L % (2 ** (n_up + 1)) == 0 and L // 2 ** (n_up + 1) >= 4:
            n_up += 1
        self.side0 = L // 2 ** n_up
        self.width = width
        self.stem = nn.Sequential(nn.Linear(d_in, width * self.side0 ** 2), nn.LeakyReLU(0.2))
        layers: list[nn.Module] = []
        c = width
        for _ in range(n_up):
            c_out = max(c // 2, 8)
            layers += [nn.ConvTranspose2d(c, c_out, 3, stride=2, padding=1, output_padding=1),
                       nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2)]
            c = c_out
        layers.append(nn.Conv2d(c, 1, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.stem(z).view(-1, self.width, self.side0, self.side0)
        return self.body(h).squeeze(1)


class ClosureModel(nn.Module):
    """Patch-additive closure encoder + reconstruction decoder.

    ``encode(configs [N, L, L]) -> [N, d_closure]`` (normalised patch average) and
    ``encode_patches(patches [N, p, p]) -> [N, d_closure]`` (normalised per-patch value E).
    Inputs are spin arrays with values ±1 (any integer or float dtype).
    """

    def __init__(self, arch: ClosureArchitecture) -> None:
        super().__init__()
        self.arch = arch
        self.encoder = PatchEncoder(arch.p, arch.d_closure, tuple(arch.channels))
        self.decoder = ConfigDecoder(arch.d_phys + arch.d_closure, arch.L)
        self.register_buffer("latent_shift", torch.zeros(arch.d_closure))
        self.register_buffer("latent_scale", torch.ones(arch.d_closure))
        self.history: dict[str, list[float]] = {"loss": []}

    # -- geometry ---------------------------------------------------------------------------
    def split_patches(self, configs: torch.Tensor) -> torch.Tensor:
        """[N, L, L] -> [N, K, p, p] with patch k at ((k // (L/p)) p, (k % (L/p)) p)."""
        N, L, p = configs.shape[0], self.arch.L, self.arch.p
        q = L // p
        return configs.reshape(N, q, p, q, p).permute(0, 1, 3, 2, 4).reshape(N, q * q, p, p)

    # -- raw (unnormalised) maps used in training -------------------------------------------
    def _raw_patch_codes(self, patches: torch.Tensor) -> torch.Tensor:
        return self.encoder(patches.to(torch.float32))

    def _raw_encode(self, configs: torch.Tensor) -> torch.Tensor:
        patches = self.split_patches(configs.to(torch.float32))
        N, K = patches.shape[:2]
        codes = self._raw_patch_codes(patches.reshape(N * K, self.arch.p, self.arch.p))
        return codes.view(N, K, -1).mean(dim=1)

    # -- public API ---------------------------------------------------------------------------
    @torch.no_grad()
    def encode_patches(self, patches: np.ndarray | torch.Tensor, *, batch_size: int = 4096) -> np.ndarray:
        """Normalised per-patch closure values E(x_J) for patches [N, p, p] -> [N, d_closure]."""
        x = _as_tensor(patches, "patches", (self.arch.p, self.arch.p))
        self.eval()
        out = [(self._raw_patch_codes(x[i:i + batch_size]) - self.latent_shift) / self.latent_scale
               for i in range(0, x.shape[0], batch_size)]
        return _cat(out, self.arch.d_closure)

    @torch.no_grad()
    def encode(self, configs: np.ndarray | torch.Tensor, *, batch_size: int = 256) -> np.ndarray:
        """Normalised closure variables ẑ(x) = mean_J E(x_J) for configs [N, L, L] -> [N, d_closure]."""
        x = _as_tensor(configs, "configs", (self.arch.L, self.arch.L))
        self.eval()
        out = [(self._raw_encode(x[i:i + batch_size]) - self.latent_shift) / self.latent_scale
               for i in range(0, x.shape[0], batch_size)]
        return _cat(out, self.arch.d_closure)

    @torch.no_grad()
    def decode(self, phys: np.ndarray, closure: np.ndarray) -> np.ndarray:
        """Most probable configuration (int8 ±1, [N, L, L]) for normalised closure values."""
        self.eval()
        zc = torch.as_tensor(np.asarray(closure), dtype=torch.float32) * self.latent_scale + self.latent_shift
        z = torch.cat([torch.as_tensor(np.asarray(phys), dtype=torch.float32).reshape(len(zc), -1), zc], 1)
        return np.where(self.decoder(z).numpy() > 0, 1, -1).astype(np.int8)

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
        """Rebuild a model saved by :meth:`save` (``torch.load(weights_only=True)``)."""
        folder = Path(folder)
        record = json.loads((folder / _CONFIG).read_text(encoding="utf-8"))
        arch = record["architecture"]
        arch["channels"] = tuple(arch["channels"])
        model = cls(ClosureArchitecture(**arch))
        model.load_state_dict(torch.load(folder / _WEIGHTS, weights_only=True, map_location="cpu"))
        model.history = record.get("history", {"loss": []})
        model.eval()
        return model


def _as_tensor(x: np.ndarray | torch.Tensor, name: str, trailing: tuple[int, int]) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if t.ndim != 3 or tuple(t.shape[1:]) != trailing:
        raise ValueError(f"{name} must have shape [N, {trailing[0]}, {trailing[1]}], got {tuple(t.shape)}")
    return t.to(torch.float32)


def _cat(chunks: list[torch.Tensor], d: int) -> np.ndarray:
    if not chunks:
        return np.zeros((0, d), dtype=np.float64)
    return torch.cat(chunks).numpy().astype(np.float64)


def train_closure(
    configs: np.ndarray,
    phys: np.ndarray,
    p: int,
    *,
    d_closure: int = 2,
    epochs: int = 10,
    batch_size: int = 256,
    lr: float = 2e-3,
    normalization: str = "minmax",
    channels: tuple[int, ...] = (8, 16, 32),
    seed: int = 0,
    progress: bool = False,
) -> ClosureModel:
    """Train a :class:`ClosureModel` on large training snapshots by BCE reconstruction.

    configs: int8 ±1 [N, L, L] (the upsampled snapshots — never direct large-system data);
    phys: [N, d_phys] physical observables of the same snapshots (fed to the decoder).
    Seeded: same inputs and seed give the same weights (CPU). Normalisation constants come from
    these training snapshots only.
    """
    configs = np.asarray(configs)
    phys = np.asarray(phys, dtype=np.float32).reshape(len(configs), -1)
    if configs.ndim != 3 or configs.shape[1] != configs.shape[2]:
        raise ValueError(f"configs must have shape [N, L, L], got {configs.shape}")
    if len(configs) < 2:
        raise ValueError(f"configs must hold at least 2 snapshots, got {len(configs)}")
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if value < 1:
            raise ValueError(f"{name}={value} out of range (allowed: >= 1)")
    arch = ClosureArchitecture(p=p, L=configs.shape[1], d_closure=d_closure, d_phys=phys.shape[1],
                               channels=tuple(channels), normalization=normalization)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ClosureModel(arch)
        _fit_reconstruction(model, configs, phys, epochs, batch_size, lr, seed, progress)
    _fit_normalization(model, configs)
    model.eval()
    return model


def _fit_reconstruction(model: ClosureModel, configs: np.ndarray, phys: np.ndarray, epochs: int,
                        batch_size: int, lr: float, seed: int, progress: bool) -> None:
    x_all = torch.as_tensor(configs, dtype=torch.float32)
    target_all = (x_all + 1.0) / 2.0
    phys_all = torch.as_tensor(phys)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, amsgrad=True, weight_decay=0.0)
    loss_fn = nn.BCEWithLogitsLoss()
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
            x = x_all[idx]
            z = torch.cat([phys_all[idx], model._raw_encode(x)], dim=1)
            loss = loss_fn(model.decoder(z), target_all[idx])
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
    x = torch.as_tensor(np.asarray(configs), dtype=torch.float32)
    patches = model.split_patches(x)
    N, K = patches.shape[:2]
    per_patch = model.encode_patches(patches.reshape(N * K, model.arch.p, model.arch.p))
    return float(np.max(np.abs(model.encode(configs) - per_patch.reshape(N, K, -1).mean(1))))


__all__ = ["ClosureArchitecture", "ClosureModel", "train_closure", "patch_additivity_defect"]
