"""The fitted SDE: evaluate drift / diffusion in physical units, roll out, save and load."""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .integrators import METHODS, integrate
from .models import SDEModel

DriftPrior = Callable[[torch.Tensor, "torch.Tensor | None"], torch.Tensor]
WEIGHTS_FILE = "model.pt"
CONFIG_FILE = "config.json"


def resolve_device(device: str | torch.device | None) -> torch.device:
    """None -> CPU; "cuda" only when available (clear error otherwise)."""
    if device is None:
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: 'cuda' requested but torch.cuda.is_available() is False")
    return dev


def make_generator(seed: int | torch.Generator | None, device: torch.device) -> torch.Generator:
    """A torch.Generator on ``device``: from an int seed, passed through, or fresh OS entropy for None."""
    if isinstance(seed, torch.Generator):
        return seed
    if seed is None:
        seed = int(np.random.SeedSequence().generate_state(1, dtype=np.uint64)[0] >> 1)
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: must be a non-negative int, a torch.Generator or None; got {seed!r}")
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    return gen


class FittedSDE:
    """A fitted dz = mu(z, p) dt + sigma(z, p) dW in the physical units of the training data.

    Attributes: ``config`` (JSON-able dict), ``history`` (per-epoch "train"/"val" NLL in nats per
    pair and "lr"), ``dim`` (d), ``n_params`` (q), ``model`` (the torch module).
    """

    def __init__(self, model: SDEModel, config: dict[str, Any], history: dict[str, list] | None = None,
                 drift_prior: DriftPrior | None = None):
        self.model = model.eval()
        self.config = config
        self.history = history or {"train": [], "val": [], "lr": []}
        self.drift_prior = drift_prior

    def __repr__(self) -> str:
        return (f"FittedSDE(dim={self.dim}, n_params={self.n_params}, diffusion={self.config['diffusion']!r}, "
                f"loss={self.config['loss']!r})")

    @property
    def dim(self) -> int:
        return self.model.dim

    @property
    def n_params(self) -> int:
        return self.model.n_params

    @property
    def device(self) -> torch.device:
        return self.model.z_loc.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.z_loc.dtype

    # ------------------------------------------------------------------ input handling
    def _as_tensor(self, x: Any, name: str, device: torch.device | None = None) -> torch.Tensor:
        t = torch.as_tensor(x.detach() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64))
        return t.to(device=device or self.device, dtype=self.dtype)

    def _states(self, z: Any, device: torch.device | None = None) -> torch.Tensor:
        zt = self._as_tensor(z, "z", device)
        if zt.dim() == 1 and self.dim == 1:
            zt = zt[:, None]
        if zt.dim() != 2 or zt.shape[1] != self.dim:
            raise ValueError(f"z: expected shape [N, {self.dim}], got {list(zt.shape)}")
        return zt

    def _params(self, params: Any, n: int, device: torch.device | None = None) -> torch.Tensor | None:
        q = self.n_params
        if params is None:
            if q > 0:
                raise ValueError(f"params: the SDE was fitted with {q} conditioning inputs; pass params of shape [N, {q}] or [{q}]")
            return None
        if q == 0:
            raise ValueError("params: the SDE was fitted without conditioning inputs; pass params=None")
        pt = self._as_tensor(params, "params", device)
        if pt.dim() == 1:
            pt = pt.view(1, q) if pt.shape[0] == q else pt.view(-1, 1) if q == 1 else pt
        if pt.dim() != 2 or pt.shape[1] != q or pt.shape[0] not in (1, n):
            raise ValueError(f"params: expected shape [{n}, {q}] or [{q}], got {list(pt.shape)}")
        return pt.expand(n, q)

    @staticmethod
    def _output(x: torch.Tensor, like: Any) -> Any:
        return x.detach() if isinstance(like, torch.Tensor) else x.detach().cpu().numpy().astype(np.float64)

    # ------------------------------------------------------------------ coefficients
    def _drift_t(self, z: torch.Tensor, p: torch.Tensor | None) -> torch.Tensor:
        return self._coefficients_t(z, p)[0]

    def _sigma_t(self, z: torch.Tensor, p: torch.Tensor | None, *, diagonal_ok: bool = False) -> torch.Tensor:
        sigma = self._coefficients_t(z, p)[1]
        return torch.diag_embed(sigma) if self.model.diagonal and not diagonal_ok else sigma

    def _coefficients_t(self, z: torch.Tensor, p: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(drift [B, d], sigma [B, d] if diagonal else [B, d, d]) from one network pass."""
        m = self.model
        mu_u, sig_u = m.standardized(m.standardize_state(z), m.standardize_params(p))
        mu = mu_u * m.z_scale / m.time_scale
        if self.drift_prior is not None:
            mu = mu + torch.as_tensor(self.drift_prior(z, p), dtype=z.dtype, device=z.device)
        if m.diagonal:
            return mu, sig_u * m.z_scale / m.time_scale.sqrt()
        return mu, m.z_scale[:, None] * sig_u / m.time_scale.sqrt()

    def drift(self, z: Any, params: Any = None) -> Any:
        """Drift mu(z, p) [N, d] in [z]/[t] (numpy in -> numpy out, torch in -> torch out)."""
        zt = self._states(z)
        with torch.no_grad():
            return self._output(self._drift_t(zt, self._params(params, zt.shape[0])), z)

    def diffusion(self, z: Any, params: Any = None) -> Any:
        """Diffusion matrix sigma(z, p) [N, d, d] in [z]/sqrt([t]), with Sigma = sigma sigma^T."""
        zt = self._states(z)
        with torch.no_grad():
            return self._output(self._sigma_t(zt, self._params(params, zt.shape[0])), z)

    def covariance(self, z: Any, params: Any = None) -> Any:
        """Sigma(z, p) = sigma sigma^T [N, d, d] in [z]^2/[t]."""
        zt = self._states(z)
        with torch.no_grad():
            sig = self._sigma_t(zt, self._params(params, zt.shape[0]))
            return self._output(sig @ sig.transpose(-1, -2), z)

    # ------------------------------------------------------------------ rollout
    def sample(self, z0: Any, n_steps: int, dt: float, *, n_paths: int = 1, params: Any = None,
               seed: int | torch.Generator | None = None, method: str = "em",
               device: str | torch.device | None = None, noise_scale: float = 1.0) -> Any:
        """Roll out ``n_paths`` paths per initial state with step ``dt`` [t].

        z0 [d] -> [n_paths, n_steps + 1, d]; z0 [M, d] -> [M, n_paths, n_steps + 1, d].
        params: [q] (shared) or [M, q]. The result includes z0 at index 0. Same seed -> same paths
        (on the same device). ``method``: "em" or "milstein" (diagonal diffusions only).
        ``noise_scale`` multiplies sigma (e.g. sqrt(n / n') for a system of n' instead of n
        sites when the noise is a sum of independent local contributions).
        """
        if not (isinstance(noise_scale, (int, float)) and np.isfinite(noise_scale) and noise_scale >= 0):
            raise ValueError(f"noise_scale: must be a finite number >= 0, got {noise_scale!r}")
        if method not in METHODS:
            raise ValueError(f"method: unknown {method!r}; allowed: {', '.join(METHODS)}")
        if method == "milstein" and not self.model.diagonal:
            raise ValueError(f"method: 'milstein' needs a diagonal diffusion, this SDE has {self.config['diffusion']!r}")
        if not isinstance(n_steps, (int, np.integer)) or n_steps < 0:
            raise ValueError(f"n_steps: must be an int >= 0, got {n_steps!r}")
        if not isinstance(n_paths, (int, np.integer)) or n_paths < 1:
            raise ValueError(f"n_paths: must be an int >= 1, got {n_paths!r}")
        dt = float(dt)
        if not np.isfinite(dt) or dt <= 0:
            raise ValueError(f"dt: must be a finite number > 0, got {dt}")
        dev = resolve_device(device) if device is not None else self.device
        z_start = self._as_tensor(z0, "z0", dev)
        single = z_start.dim() == 1
        if single:
            z_start = z_start.view(1, -1)
        if z_start.dim() != 2 or z_start.shape[1] != self.dim:
            raise ValueError(f"z0: expected shape [{self.dim}] or [M, {self.dim}], got {list(np.shape(z0))}")
        if not torch.isfinite(z_start).all():
            raise ValueError("z0: contains NaN or inf")
        n_start = z_start.shape[0]
        p = self._params(params, n_start, dev)
        z_flat = z_start.repeat_interleave(n_paths, dim=0)
        p_flat = None if p is None else p.repeat_interleave(n_paths, dim=0)
        model_device = self.device
        if dev != model_device:
            self.model.to(dev)
        try:
            gen = make_generator(seed, dev)
            scale = float(noise_scale)

            def coefficients(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                mu, sigma = self._coefficients_t(z, p_flat)
                return mu, sigma if scale == 1.0 else sigma * scale

            paths = integrate(lambda z: self._drift_t(z, p_flat),
                              lambda z: self._sigma_t(z, p_flat, diagonal_ok=True) * scale,
                              z_flat, int(n_steps), dt, gen, method, coefficients_fn=coefficients)
        finally:
            if dev != model_device:
                self.model.to(model_device)
        paths = paths.view(n_start, n_paths, n_steps + 1, self.dim)
        if single:
            paths = paths[0]
        return paths if isinstance(z0, torch.Tensor) else paths.cpu().numpy().astype(np.float64)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> Path:
        """Save state_dict + JSON config (+ history). ``*.pt`` -> one file; otherwise a directory
        holding ``model.pt`` and ``config.json``. Loadable with torch.load(weights_only=True)."""
        path = Path(path)
        payload = {"state_dict": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
                   "config_json": json.dumps(self.config), "history_json": json.dumps(self.history)}
        if path.suffix == ".pt":
            path.parent.mkdir(parents=True, exist_ok=True)
            _atomic_torch_save(payload, path)
            return path
        path.mkdir(parents=True, exist_ok=True)
        _atomic_torch_save(payload, path / WEIGHTS_FILE)
        (path / CONFIG_FILE).write_text(json.dumps(self.config, indent=2))
        return path


def _atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def build_model(config: dict[str, Any]) -> SDEModel:
    """An untrained SDEModel with the architecture recorded in ``config``."""
    return SDEModel(config["dim"], config["n_params"], diffusion=config["diffusion"],
                    hidden=tuple(config["hidden"]), activation=config["activation"], floor=config["floor"])


def load_sde(path: str | os.PathLike, *, drift_prior: DriftPrior | None = None,
             device: str | torch.device | None = None) -> FittedSDE:
    """Load a FittedSDE written by ``FittedSDE.save`` (a ``.pt`` file or a directory).

    A model fitted with a ``drift_prior`` needs the same callable again (code is never stored).
    """
    path = Path(path)
    file = path / WEIGHTS_FILE if path.is_dir() else path
    if not file.exists():
        raise FileNotFoundError(f"path: no saved SDE at {file}")
    payload = torch.load(file, map_location="cpu", weights_only=True)
    config = json.loads(payload["config_json"])
    if config.get("drift_prior") and drift_prior is None:
        raise ValueError(f"drift_prior: this SDE was fitted with drift prior {config['drift_prior']!r}; pass it to load_sde")
    if not config.get("drift_prior") and drift_prior is not None:
        raise ValueError("drift_prior: this SDE was fitted without a drift prior; pass drift_prior=None")
    model = build_model(config)
    dtype = getattr(torch, config.get("dtype", "float32"))
    model.to(dtype=dtype)
    model.load_state_dict(payload["state_dict"])
    model.to(resolve_device(device))
    return FittedSDE(model, config, json.loads(payload.get("history_json", "null")), drift_prior)
