"""Every bad input of matscale.sde gives a one-line error naming the field."""
from __future__ import annotations

import numpy as np
import torch
import pytest

from matscale.sde import fit_sde


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _pairs(n=64, d=2, seed=0):
    rng = np.random.default_rng(seed)
    z0 = rng.standard_normal((n, d))
    dt = rng.uniform(0.01, 0.02, n)
    z1 = z0 - z0 * dt[:, None] + 0.3 * np.sqrt(dt)[:, None] * rng.standard_normal((n, d))
    return z0, z1, dt


FAST = dict(epochs=1, hidden=(8,), progress=False)


def _check_one_line(excinfo, field):
    msg = str(excinfo.value)
    assert "\n" not in msg
    assert msg.startswith(field), msg


@pytest.mark.parametrize("case,field", [
    ("z1_shape", "z1"), ("dt_shape", "dt"), ("params_rows", "params"), ("z0_3d", "z0"),
])
def test_shape_mismatch(case, field):
    z0, z1, dt = _pairs()
    kwargs = {}
    if case == "z1_shape":
        z1 = z1[:, :1]
    elif case == "dt_shape":
        dt = dt[:-3]
    elif case == "params_rows":
        kwargs["params"] = np.ones((len(z0) - 1, 1))
    elif case == "z0_3d":
        z0 = z0[:, :, None]
    with pytest.raises(ValueError) as ei:
        fit_sde(z0, z1, dt, **kwargs, **FAST)
    _check_one_line(ei, field)


@pytest.mark.parametrize("bad", [0.0, -0.01])
def test_nonpositive_dt(bad):
    z0, z1, dt = _pairs()
    dt[5] = bad
    with pytest.raises(ValueError) as ei:
        fit_sde(z0, z1, dt, **FAST)
    _check_one_line(ei, "dt")
    with pytest.raises(ValueError):
        fit_sde(z0, z1, bad, **FAST)  # scalar dt


@pytest.mark.parametrize("field", ["z0", "z1", "dt", "params"])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nan_or_inf_in_data(field, value):
    z0, z1, dt = _pairs()
    data = {"z0": z0, "z1": z1, "dt": dt, "params": np.ones((len(z0), 1))}
    data[field] = data[field].copy()
    data[field].flat[3] = value
    with pytest.raises(ValueError) as ei:
        fit_sde(data["z0"], data["z1"], data["dt"], params=data["params"], **FAST)
    _check_one_line(ei, field)
    assert "NaN" in str(ei.value)


def test_unknown_loss_and_diffusion_list_allowed():
    z0, z1, dt = _pairs()
    with pytest.raises(ValueError) as ei:
        fit_sde(z0, z1, dt, loss="ito", **FAST)
    _check_one_line(ei, "loss")
    assert "em, milstein, partial" in str(ei.value)
    with pytest.raises(ValueError) as ei:
        fit_sde(z0, z1, dt, diffusion="full", **FAST)
    _check_one_line(ei, "diffusion")
    assert "diagonal, cholesky, spd, constant, constant_diagonal" in str(ei.value)


@pytest.mark.parametrize("lam", [0.0, -2.0, float("nan")])
def test_nonpositive_lam(lam):
    z0, z1, dt = _pairs()
    with pytest.raises(ValueError) as ei:
        fit_sde(z0, z1, dt, loss="partial", lam=lam, **FAST)
    _check_one_line(ei, "lam")


def test_lam_with_non_partial_loss():
    z0, z1, dt = _pairs()
    with pytest.raises(ValueError) as ei:
        fit_sde(z0, z1, dt, loss="em", lam=4.0, **FAST)
    _check_one_line(ei, "lam")


@pytest.mark.parametrize("diffusion", ["cholesky", "spd", "constant"])
def test_milstein_needs_diagonal_diffusion(diffusion):
    z0, z1, dt = _pairs()
    with pytest.raises(ValueError) as ei:
        fit_sde(z0, z1, dt, loss="milstein", diffusion=diffusion, **FAST)
    _check_one_line(ei, "diffusion")


def test_params_at_fit_but_not_at_sample_and_vice_versa():
    z0, z1, dt = _pairs()
    with_p = fit_sde(z0, z1, dt, params=np.linspace(1, 2, len(z0))[:, None], **FAST)
    without_p = fit_sde(z0, z1, dt, **FAST)
    for call in (lambda: with_p.sample(z0[0], 3, 0.01, seed=0), lambda: with_p.drift(z0),
                 lambda: with_p.diffusion(z0)):
        with pytest.raises(ValueError) as ei:
            call()
        _check_one_line(ei, "params")
    for call in (lambda: without_p.sample(z0[0], 3, 0.01, params=[1.5], seed=0),
                 lambda: without_p.drift(z0, params=np.ones((len(z0), 1)))):
        with pytest.raises(ValueError) as ei:
            call()
        _check_one_line(ei, "params")
    with pytest.raises(ValueError) as ei:
        with_p.sample(z0[:3], 3, 0.01, params=np.ones((2, 1)), seed=0)  # [M, q] with the wrong M
    _check_one_line(ei, "params")


def test_sample_argument_errors():
    z0, z1, dt = _pairs()
    sde = fit_sde(z0, z1, dt, **FAST)
    cases = [(dict(dt=0.0), "dt"), (dict(method="rk4"), "method"), (dict(method="milstein"), "method"),
             (dict(n_paths=0), "n_paths"), (dict(z0=np.zeros(3)), "z0"), (dict(z0=[np.nan, 0.0]), "z0")]
    for overrides, field in cases:
        args = dict(z0=z0[0], n_steps=3, dt=0.01, seed=0) | overrides
        with pytest.raises(ValueError) as ei:
            sde.sample(args.pop("z0"), args.pop("n_steps"), args.pop("dt"), **args)
        _check_one_line(ei, field)


def test_other_options():
    z0, z1, dt = _pairs()
    for kwargs, field in [(dict(epochs=0), "epochs"), (dict(batch_size=0), "batch_size"), (dict(lr=-1.0), "lr"),
                          (dict(validation_fraction=1.0), "validation_fraction"), (dict(hidden=()), "hidden"),
                          (dict(activation="swish"), "activation"), (dict(schedule="step"), "schedule"),
                          (dict(dtype="float16"), "dtype")]:
        with pytest.raises(ValueError) as ei:
            fit_sde(z0, z1, dt, **(FAST | kwargs))
        _check_one_line(ei, field)
    with pytest.raises(TypeError) as ei:
        fit_sde(z0, z1, dt, drift_prior="linear", **FAST)
    _check_one_line(ei, "drift_prior")
    with pytest.raises(ValueError) as ei:
        fit_sde(z0, z1, dt, drift_prior=lambda z, p: z[:, :1], **FAST)
    _check_one_line(ei, "drift_prior")


@pytest.mark.parametrize("option,first,second", [
    ("drift_scheme", "euler", "heun"), ("floor", 1e-4, 1e-3), ("jitter", 1e-6, 1e-5)])
def test_resume_refuses_a_checkpoint_with_other_options(tmp_path, option, first, second):
    z0, z1, dt = _pairs(n=200)
    fit_sde(z0, z1, dt, checkpoint_dir=tmp_path, **FAST, **{option: first})
    resumed = fit_sde(z0, z1, dt, checkpoint_dir=tmp_path, **(FAST | {"epochs": 2}), **{option: first})
    assert len(resumed.history["train"]) == 2  # the same options resume
    with pytest.raises(ValueError) as ei:
        fit_sde(z0, z1, dt, checkpoint_dir=tmp_path, **(FAST | {"epochs": 2}), **{option: second})
    _check_one_line(ei, "checkpoint_dir")
    assert f"different {option} " in str(ei.value)


def test_resume_refuses_a_checkpoint_with_another_drift_prior(tmp_path):
    z0, z1, dt = _pairs(n=200)

    def prior(z, p):
        return -z

    fit_sde(z0, z1, dt, checkpoint_dir=tmp_path, drift_prior=prior, **FAST)
    resumed = fit_sde(z0, z1, dt, checkpoint_dir=tmp_path, drift_prior=prior, **(FAST | {"epochs": 2}))
    assert len(resumed.history["train"]) == 2

    def prior(z, p):  # noqa: F811 -- same name, other values: caught by the values' fingerprint
        return -2.0 * z

    for other in (prior, None):
        with pytest.raises(ValueError) as ei:
            fit_sde(z0, z1, dt, checkpoint_dir=tmp_path, drift_prior=other, **(FAST | {"epochs": 2}))
        _check_one_line(ei, "checkpoint_dir")
        assert "different drift_prior" in str(ei.value)


def test_one_dimensional_z_with_a_scalar_step_is_said_out_loud():
    """A 1-D z0 of N values with one scalar dt is read as N pairs of a 1-D state, with a warning
    that says so and how to be explicit; [N, 1], or per-pair steps, are unambiguous (no warning)."""
    import warnings

    rng = np.random.default_rng(0)
    z0 = rng.normal(size=200)
    z1 = z0 - 0.01 * z0 + 0.1 * rng.normal(size=200)
    with pytest.warns(UserWarning, match=r"z0 is 1-D \(shape \[200\]\).*z0\[:, None\]"):
        fit_sde(z0, z1, 0.01, epochs=1, hidden=(4,), progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit_sde(z0[:, None], z1[:, None], 0.01, epochs=1, hidden=(4,), progress=False)
        fit_sde(z0, z1, np.full(200, 0.01), epochs=1, hidden=(4,), progress=False)


def test_fit_uses_one_cpu_thread_by_default_and_restores_the_setting():
    """The thread trap: torch's default thread count made fits up to 10x slower on a shared
    machine; the default fit runs on one thread and leaves torch's setting as it was."""
    rng = np.random.default_rng(0)
    z0 = rng.normal(size=(300, 1))
    z1 = z0 + 0.1 * rng.normal(size=(300, 1))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    seen = []
    try:
        fit_sde(z0, z1, 0.01, epochs=2, hidden=(4,), progress=False,
                callback=lambda epoch, model, history: seen.append(torch.get_num_threads()))
        assert seen and set(seen) == {1}
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
