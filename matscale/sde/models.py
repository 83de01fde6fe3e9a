"""Neural drift and diffusion for dz = mu(z, p) dt + sigma(z, p) dW.

All networks work in *standardised* coordinates: u = (z - z_loc) / z_scale, scaled time
s = t / time_scale and standardised conditioning inputs. The affine maps are buffers computed
from the training pairs, so a saved state_dict carries them and users pass raw physical z.

In these coordinates the model is
    du = mu_u(u, p) ds + sigma_u(u, p) dW_s,
    mu_u    = prior_u + L [u, p] + c + drift_scale * net_mu(u, p)   (per unit scaled time;
              L, c learned, started at the weighted least-squares linear drift of the data)
    sigma_u = diag(diff_scale) @ shape(net_sigma(u, p))     (per sqrt unit scaled time)
and in physical units
    mu(z)    = z_scale * mu_u / time_scale
    sigma(z) = diag(z_scale) @ sigma_u / sqrt(time_scale).

Diffusion parameterisations (``DIFFUSION_KINDS``):
    "diagonal"           sigma = diag(softplus(.) + floor), state dependent
    "cholesky"           sigma lower triangular, positive diagonal (softplus + floor)
    "spd"                sigma_u = D^1/2 expm(A / 2) D^1/2, A symmetric, D = diag(diff_scale):
                         an SPD square root in the standardised frame, Sigma = sigma sigma^T
    "constant"           one learned d x d matrix (may be singular: Langevin-type noise)
    "constant_diagonal"  one learned positive vector
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

DIFFUSION_KINDS = ("diagonal", "cholesky", "spd", "constant", "constant_diagonal")
ACTIVATIONS = ("silu", "relu", "tanh", "softplus", "gelu")

# softplus(_SOFTPLUS_ONE) == 1: networks start near sigma_u = diag(diff_scale)
_SOFTPLUS_ONE = math.log(math.e - 1.0)


def diffusion_output_size(kind: str, dim: int) -> int:
    """Number of raw network outputs the diffusion parameterisation ``kind`` needs."""
    if kind == "diagonal":
        return dim
    if kind in ("cholesky", "spd"):
        return dim * (dim + 1) // 2
    if kind in ("constant", "constant_diagonal"):
        return 0
    raise ValueError(f"diffusion: unknown kind {kind!r}; allowed: {', '.join(DIFFUSION_KINDS)}")


# the same functions, overwriting their input where torch has an in-place form (only without autograd)
_INPLACE_ACTIVATIONS = {"silu": lambda h: F.silu(h, inplace=True), "relu": torch.relu_, "tanh": torch.tanh_,
                        "softplus": F.softplus, "gelu": F.gelu}


def _activation(name: str):
    table = {"silu": F.silu, "relu": F.relu, "tanh": torch.tanh, "softplus": F.softplus, "gelu": F.gelu}
    if name not in table:
        raise ValueError(f"activation: unknown {name!r}; allowed: {', '.join(ACTIVATIONS)}")
    return table[name]


class TwinMLP(nn.Module):
    """Two independent MLPs with equal hidden widths, evaluated together.

    The hidden layers of both networks are stacked into [2, n_in, n_out] weights and run with
    one batched matmul per layer (half the kernel launches of two separate networks, the same
    model). The output layers differ in size and are two plain affine maps.
    ``forward(x) -> (out_a [B, n_out_a], out_b [B, n_out_b])``.
    """

    def __init__(self, n_in: int, hidden: Sequence[int], n_out_a: int, n_out_b: int, activation: str):
        super().__init__()
        self.act = _activation(activation)
        self.activation = activation
        widths = [n_in, *hidden]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for w_in, w_out in zip(widths[:-1], widths[1:]):
            self.weights.append(nn.Parameter(torch.stack([_init_weight(w_in, w_out) for _ in range(2)])))
            self.biases.append(nn.Parameter(torch.stack([_init_bias(w_in, w_out) for _ in range(2)]).unsqueeze(1)))
        self.out_a = nn.Linear(widths[-1], n_out_a)
        self.out_b = nn.Linear(widths[-1], n_out_b)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not torch.is_grad_enabled():
            # rollouts and validation: one network after the other, activations overwritten in
            # place (the smallest working set: 1.25x faster than the stacked layout at 20 000 rows)
            return self._forward_one(0, x, inplace=True), self._forward_one(1, x, inplace=True)
        if not x.requires_grad:
            # training on data: the stacked layout with the hand-written gradient (same values,
            # about half the time of autograd)
            return _TwinMLPTraining.apply(self.activation, x, *self._flat_parameters())
        return self._forward_autograd(x)

    def _forward_one(self, k: int, x: torch.Tensor, *, inplace: bool = False) -> torch.Tensor:
        """Network k (0: out_a, 1: out_b) alone."""
        act = _INPLACE_ACTIVATIONS[self.activation] if inplace else self.act
        h = x
        for w, b in zip(self.weights, self.biases):
            h = act(torch.addmm(b[k, 0], h, w[k]))
        out = self.out_a if k == 0 else self.out_b
        return torch.addmm(out.bias, h, out.weight.t())

    def _flat_parameters(self) -> list[torch.Tensor]:
        flat: list[torch.Tensor] = []
        for w, b in zip(self.weights, self.biases):
            flat += [w, b]
        return [*flat, self.out_a.weight, self.out_a.bias, self.out_b.weight, self.out_b.bias]

    def _forward_autograd(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward through torch's autograd (any input, double backward allowed)."""
        # Shapes chosen for the CPU's matmul kernels (the same model as two plain MLPs): the
        # first layer is one [B, n_in] x [n_in, 2 w] product for both networks (a batched matmul
        # with inner size n_in = d is several times slower); hidden layers are batched matmuls
        # with an in-place bias add (baddbmm would copy the broadcast bias into the output
        # first); the output layers take the two halves of h as views, whose gradients are
        # stacked once instead of scattered into zero-filled copies of h.
        w0, b0 = self.weights[0], self.biases[0]
        n_in, width = w0.shape[1], w0.shape[2]
        h = torch.addmm(b0.reshape(2 * width), x, w0.transpose(0, 1).reshape(n_in, 2 * width))
        h = self.act(h).view(x.shape[0], 2, width).transpose(0, 1)
        for w, b in zip(self.weights[1:], self.biases[1:]):
            h = self.act(torch.bmm(h, w).add_(b))
        h_a, h_b = h.unbind(0)
        return self.out_a(h_a), self.out_b(h_b)

    def forward_a(self, x: torch.Tensor) -> torch.Tensor:
        """The first network alone: ``out_a`` of :meth:`forward`, at half the cost."""
        return self._forward_one(0, x, inplace=not torch.is_grad_enabled())


# d act(pre) / d pre applied to an upstream gradient g, from the stored pre- and post-activation
_ACTIVATION_BACKWARD = {
    "silu": lambda g, pre, post: torch.ops.aten.silu_backward(g, pre),
    "relu": lambda g, pre, post: torch.ops.aten.threshold_backward(g, post, 0.0),
    "tanh": lambda g, pre, post: torch.ops.aten.tanh_backward(g, post),
    "softplus": lambda g, pre, post: torch.ops.aten.softplus_backward(g, pre, 1.0, 20.0),
    "gelu": lambda g, pre, post: torch.ops.aten.gelu_backward(g, pre),
}


class _TwinMLPTraining(torch.autograd.Function):
    """TwinMLP forward and its parameter gradients written out by hand (first derivatives only).

    Hand-written because this is the inner loop of every fit: the activations of both networks
    live side by side in one [B, 2 w] tensor per layer, each network's half is a strided view
    that BLAS reads and writes in place (``out=``), and the backward pass is one matmul or
    elementwise kernel per quantity. Through autograd the same model needs a transposed copy of
    every hidden layer, stacked gradients and a graph node per op: about twice the time at
    batch 2000 and width 128 on one CPU thread. Arguments: ``(activation, x, w_0, b_0, ...,
    w_out_a, b_out_a, w_out_b, b_out_b)`` with the shapes of ``TwinMLP``'s parameters.
    """

    @staticmethod
    def forward(ctx, activation: str, x: torch.Tensor, *params: torch.Tensor):
        act = _activation(activation)
        weights, biases = params[:-4:2], params[1:-4:2]
        w_a, b_a, w_b, b_b = params[-4:]
        # activations of both networks stacked as [2, B, width]: contiguous halves for the
        # batched matmuls, the bias sums and the output layers
        pre = x.new_empty(2, x.shape[0], weights[0].shape[2])
        for k in range(2):
            torch.addmm(biases[0][k, 0], x, weights[0][k], out=pre[k])
        pres, posts = [pre], [act(pre)]
        for w, b in zip(weights[1:], biases[1:]):
            pre = torch.bmm(posts[-1], w).add_(b)
            pres.append(pre)
            posts.append(act(pre))
        h = posts[-1]
        out_a = torch.addmm(b_a, h[0], w_a.t())
        out_b = torch.addmm(b_b, h[1], w_b.t())
        ctx.activation = activation
        ctx.n_layers = len(weights)
        ctx.save_for_backward(x, *params, *pres, *posts)
        return out_a, out_b

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_a: torch.Tensor | None, g_b: torch.Tensor | None):
        n = ctx.n_layers
        saved = ctx.saved_tensors
        x, params = saved[0], saved[1:2 * n + 5]
        pres, posts = saved[2 * n + 5:3 * n + 5], saved[3 * n + 5:]
        weights = params[:-4:2]
        w_a, _, w_b, _ = params[-4:]
        act_grad = _ACTIVATION_BACKWARD[ctx.activation]
        h = posts[-1]
        batch = h.shape[1]
        g_a = h.new_zeros(batch, w_a.shape[0]) if g_a is None else g_a
        g_b = h.new_zeros(batch, w_b.shape[0]) if g_b is None else g_b
        grads_out = [g_a.t() @ h[0], g_a.sum(0), g_b.t() @ h[1], g_b.sum(0)]
        grad_h = torch.empty_like(h)
        torch.mm(g_a, w_a, out=grad_h[0])
        torch.mm(g_b, w_b, out=grad_h[1])
        grads_layers: list[torch.Tensor] = []
        grad_x = None
        for k in range(n - 1, -1, -1):
            grad_pre = act_grad(grad_h, pres[k], posts[k])
            grad_b = grad_pre.sum(1, keepdim=True)
            if k == 0:
                grad_w = torch.matmul(x.t(), grad_pre)
                if ctx.needs_input_grad[1]:
                    w0 = weights[0]
                    grad_x = torch.addmm(grad_pre[0] @ w0[0].t(), grad_pre[1], w0[1].t())
            else:
                grad_w = torch.bmm(posts[k - 1].transpose(1, 2), grad_pre)
                grad_h = torch.bmm(grad_pre, weights[k].transpose(1, 2))
            grads_layers = [grad_w, grad_b, *grads_layers]
        return (None, grad_x, *grads_layers, *grads_out)


class MLP(nn.Module):
    """Plain MLP n_in -> hidden... -> n_out (used when the diffusion is constant)."""

    def __init__(self, n_in: int, hidden: Sequence[int], n_out: int, activation: str):
        super().__init__()
        self.act = _activation(activation)
        widths = [n_in, *hidden]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.out = nn.Linear(widths[-1], n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = self.act(layer(x))
        return self.out(x)


def _init_weight(n_in: int, n_out: int) -> torch.Tensor:
    """Kaiming-uniform [n_in, n_out] weight, the nn.Linear default, stored transposed."""
    bound = 1.0 / math.sqrt(n_in)
    return torch.empty(n_in, n_out).uniform_(-bound, bound)


def _init_bias(n_in: int, n_out: int) -> torch.Tensor:
    bound = 1.0 / math.sqrt(n_in)
    return torch.empty(n_out).uniform_(-bound, bound)


class SDEModel(nn.Module):
    """Drift and diffusion networks plus the standardisation buffers.

    Parameters
    ----------
    dim: state dimension d.
    n_params: number of conditioning inputs q (0 for none).
    diffusion: one of ``DIFFUSION_KINDS``.
    hidden: hidden widths of each network.
    activation: hidden activation name.
    floor: lower bound of diagonal sigma entries, relative to ``diff_scale`` (dimensionless).
    """

    def __init__(self, dim: int, n_params: int = 0, *, diffusion: str = "cholesky",
                 hidden: Sequence[int] = (64, 64, 64), activation: str = "silu", floor: float = 1e-4):
        super().__init__()
        n_sigma = diffusion_output_size(diffusion, dim)
        self.dim, self.n_params, self.kind, self.floor = dim, n_params, diffusion, float(floor)
        self.register_buffer("z_loc", torch.zeros(dim))
        self.register_buffer("z_scale", torch.ones(dim))
        self.register_buffer("p_loc", torch.zeros(n_params))
        self.register_buffer("p_scale", torch.ones(n_params))
        self.register_buffer("time_scale", torch.ones(()))
        self.register_buffer("drift_scale", torch.ones(dim))
        self.register_buffer("diff_scale", torch.ones(dim))
        n_in = dim + n_params
        # linear part of the drift (standardised frame), started at the weighted least-squares fit
        self.drift_linear = nn.Parameter(torch.zeros(n_in, dim))
        self.drift_offset = nn.Parameter(torch.zeros(dim))
        if n_sigma > 0:
            self.net = TwinMLP(n_in, hidden, dim, n_sigma, activation)
            self.drift_net = None
        else:
            self.net = None
            self.drift_net = MLP(n_in, hidden, dim, activation)
        if diffusion == "constant":
            self.sigma_const = nn.Parameter(torch.eye(dim))
        elif diffusion == "constant_diagonal":
            self.sigma_const = nn.Parameter(torch.zeros(dim))  # log of sigma_u / diff_scale
        else:
            self.sigma_const = None
        rows, cols = torch.tril_indices(dim, dim)
        self.register_buffer("tril_rows", rows, persistent=False)
        self.register_buffer("tril_cols", cols, persistent=False)
        self.register_buffer("diag_entries", (rows == cols).nonzero().squeeze(1), persistent=False)
        self.register_buffer("off_entries", (rows != cols).nonzero().squeeze(1), persistent=False)
        self._placements: dict[tuple[torch.dtype, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}
        self._start_diffusion_near_identity()

    @property
    def diagonal(self) -> bool:
        """True when sigma is diagonal (then ``standardized`` returns its diagonal [B, d])."""
        return self.kind in ("diagonal", "constant_diagonal")

    def _start_diffusion_near_identity(self) -> None:
        if self.net is None:
            return
        with torch.no_grad():
            self.net.out_b.weight.mul_(0.1)
            self.net.out_b.bias.zero_()
            if self.kind == "diagonal":
                self.net.out_b.bias.fill_(_SOFTPLUS_ONE)
            elif self.kind == "cholesky":
                diag_positions = (self.tril_rows == self.tril_cols).nonzero().squeeze(1)
                self.net.out_b.bias[diag_positions] = _SOFTPLUS_ONE

    # ---------------------------------------------------------------- standardised frame
    def inputs(self, u: torch.Tensor, p_std: torch.Tensor | None) -> torch.Tensor:
        return u if p_std is None or self.n_params == 0 else torch.cat([u, p_std], dim=-1)

    def standardized(self, u: torch.Tensor, p_std: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Network drift (without prior) and sigma in standardised units.

        Returns ``(mu_net_u [B, d], sigma_u)`` with sigma_u of shape [B, d] (its diagonal) when
        ``self.diagonal`` else [B, d, d].
        """
        x = self.inputs(u, p_std)
        if self.net is not None:
            raw_mu, raw_sigma = self.net(x)
        else:
            raw_mu, raw_sigma = self.drift_net(x), None
        mu = raw_mu * self.drift_scale + x @ self.drift_linear + self.drift_offset
        return mu, self._sigma_from_raw(raw_sigma, u.shape[0])

    def standardized_drift(self, u: torch.Tensor, p_std: torch.Tensor | None = None) -> torch.Tensor:
        """The network drift of :meth:`standardized` without evaluating the diffusion."""
        x = self.inputs(u, p_std)
        raw_mu = self.net.forward_a(x) if self.net is not None else self.drift_net(x)
        return raw_mu * self.drift_scale + x @ self.drift_linear + self.drift_offset

    def _sigma_from_raw(self, raw: torch.Tensor | None, batch: int) -> torch.Tensor:
        d, scale = self.dim, self.diff_scale
        if self.kind == "diagonal":
            return (F.softplus(raw) + self.floor) * scale
        if self.kind == "constant_diagonal":
            return (torch.exp(self.sigma_const) * scale).expand(batch, d)
        if self.kind == "constant":
            return (scale[:, None] * self.sigma_const).expand(batch, d, d)
        if self.kind == "cholesky":
            # raw -> d x d lower triangle by two small matmuls with 0/1 placement matrices
            # (cheaper than scatter + tril + diag_embed on [B, d, d]); the diagonal is positive.
            # (the softplus of the strictly lower entries is computed and multiplied by zero rows:
            # cheaper than gathering columns, and exact)
            place_off, place_diag = self._placement(raw)
            full = torch.addmm(raw @ place_off, F.softplus(raw) + self.floor, place_diag)
            return full.view(batch, d, d) * scale[:, None]
        full = raw.new_zeros(batch, d, d)
        full[:, self.tril_rows, self.tril_cols] = raw
        # "spd": sigma = expm(A/2), A symmetric, in units of diff_scale on both sides
        sym = full + torch.tril(full, diagonal=-1).transpose(-1, -2)
        root = torch.linalg.matrix_exp(0.5 * sym)
        half = scale.sqrt()
        return half[:, None] * root * half[None, :]

    def _placement(self, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """0/1 matrices [d (d + 1) / 2, d * d] that put the strictly lower (first) and the diagonal
        (second) entries of the network output in their row-major places; the rows of the other
        kind are zero (cached per dtype and device)."""
        key = (raw.dtype, raw.device)
        if key not in self._placements:
            d = self.dim
            flat = (self.tril_rows * d + self.tril_cols).to(raw.device)
            place = torch.zeros(flat.numel(), d * d, dtype=raw.dtype, device=raw.device)
            place[torch.arange(flat.numel(), device=raw.device), flat] = 1.0
            on_diag = (self.tril_rows == self.tril_cols).to(raw.device)
            self._placements[key] = (place * ~on_diag[:, None], place * on_diag[:, None])
        return self._placements[key]

    # ---------------------------------------------------------------- physical frame
    def standardize_state(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self.z_loc) / self.z_scale

    def standardize_params(self, p: torch.Tensor | None) -> torch.Tensor | None:
        return None if p is None or self.n_params == 0 else (p - self.p_loc) / self.p_scale

    def physical_drift_net(self, z: torch.Tensor, p: torch.Tensor | None) -> torch.Tensor:
        """Network part of the drift in physical units [z]/[t] (the prior is added by the caller)."""
        mu_u, _ = self.standardized(self.standardize_state(z), self.standardize_params(p))
        return mu_u * self.z_scale / self.time_scale

    def physical(self, z: torch.Tensor, p: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(network drift [B, d] in [z]/[t], full sigma [B, d, d] in [z]/sqrt([t]))."""
        mu_u, sig_u = self.standardized(self.standardize_state(z), self.standardize_params(p))
        mu = mu_u * self.z_scale / self.time_scale
        if self.diagonal:
            sig_u = torch.diag_embed(sig_u)
        sigma = self.z_scale[:, None] * sig_u / self.time_scale.sqrt()
        return mu, sigma
