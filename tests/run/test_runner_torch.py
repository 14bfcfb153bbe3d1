"""The torch space's runner: any nn.Module trained from explicit noise (runners/torch_space.py)
and its initial laws (runners/torch_model.py), checked against PyTorch itself."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from ibdb.core.errors import SpecError
from ibdb.data.task import load_task
from ibdb.runners.mlp import MLPRunner
from ibdb.runners.torch_model import build_module, parameter_laws
from ibdb.runners.torch_space import MATMUL, ONE_AT_A_TIME, VMAP, TorchRunner
from ibdb.spec.sources import Task
from ibdb.spec.spaces import parse_space

CPU = torch.device("cpu")
HERE = __name__  # factories below are named as "tests.run.test_runner_torch:..." by module


@pytest.fixture(scope="module")
def digits():
    task = Task.model_validate({"name": "d", "source": {"kind": "digits"}, "n_train": 60,
                                "n_test": 80, "eps": [0.5]})
    return load_task(task, spec_dir=".")


def _space(model: str, **fields):
    optimizer = fields.pop("optimizer", {"kind": "adam", "lr": 0.01, "epochs": 6,
                                         "batch_size": 16})
    return parse_space({"name": "t", "kind": "torch", "model": model, "optimizer": optimizer,
                        **fields})


# -- factories the tests name (imported by reference, as a user's would be) -----------------

def small_mlp(width: int = 12) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.Tanh(), nn.Linear(width, 10))


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Linear(64, 64)
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(len(x), -1)
        return self.head(x + torch.tanh(self.inner(x)))


def residual() -> nn.Module:
    return Residual()


def with_batchnorm() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.BatchNorm1d(16), nn.ReLU(),
                         nn.Linear(16, 10))


def many_layers() -> nn.Module:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(17, 8)
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
            self.norm = nn.LayerNorm(8)
            self.conv = nn.Conv1d(1, 4, 5, padding=2)
            self.head = nn.Linear(8 * 8 + 4 * 8, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x.reshape(len(x), 64)[:, :8]
            tokens = self.embed.weight[:8].unsqueeze(0) * x.unsqueeze(-1)
            h = self.norm(tokens + self.attn(tokens, tokens, tokens, need_weights=False)[0])
            c = self.conv(x.unsqueeze(1))
            return self.head(torch.cat([h.flatten(1), c.flatten(1)], dim=1))
    return Net()


def with_dropout() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.Dropout(0.1), nn.Linear(8, 10))


def custom_init() -> nn.Module:
    net = small_mlp(64)
    nn.init.normal_(net[1].weight, std=0.5)
    return net


class FreeParameter(nn.Module):
    def __init__(self, random: bool) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.randn(10) if random else torch.linspace(0, 1, 10))
        self.lin = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x.reshape(len(x), -1)) * self.scale


def free_parameter(random: bool) -> nn.Module:
    return FreeParameter(random)


def _ref(name: str) -> str:
    return f"{HERE}:{name}"


# -- a row of noise is one network trained alone ----------------------------------------------

def _train_alone(runner: TorchRunner, factory, noise_row: np.ndarray, data) -> nn.Module:
    """The module trained by hand (torch.optim.Adam on its own parameters, nn.MSELoss, the
    orders argsort(u_e)) from the parameters the noise row gives: the oracle for the runner."""
    module = factory()
    module.train()
    flat = runner.parameters_from_noise(noise_row[None])[0]
    with torch.no_grad():
        for view, (_, p) in zip(runner.views(flat[None]), module.named_parameters(),
                                strict=True):
            p.copy_(view[0])
    opt = runner.space.optimizer
    optimizer = (torch.optim.Adam if opt.kind == "adam" else torch.optim.SGD)(
        module.parameters(), lr=opt.lr)
    x = torch.as_tensor(data.x_train.reshape(-1, *data.input_shape), dtype=torch.float32)
    y = torch.as_tensor(data.y_train, dtype=torch.float32)
    n = len(x)
    u = noise_row[runner._param_normals:].reshape(opt.epochs, n)
    for epoch in range(opt.epochs):
        order = torch.as_tensor(np.argsort(u[epoch], kind="stable"))
        for start in range(0, n, opt.batch_size):
            idx = order[start:start + opt.batch_size]
            optimizer.zero_grad()
            nn.functional.mse_loss(module(x[idx]), y[idx]).backward()
            optimizer.step()
    return module


def _test_mse(module: nn.Module, data) -> float:
    module.eval()
    with torch.no_grad():
        m = module.double()
        x = torch.as_tensor(data.x_test.reshape(-1, *data.input_shape))
        return float((m(x) - torch.as_tensor(data.y_test)).square().mean())


# SGD with batch norm: the bias before it gets a gradient of rounding size only (the norm
# removes it), which Adam would normalise into steps of size lr, different for any two summation
# orders; SGD keeps it at rounding size.
@pytest.mark.parametrize(("factory", "mode", "kind"), [(small_mlp, MATMUL, "adam"),
                                                       (residual, VMAP, "adam"),
                                                       (with_batchnorm, ONE_AT_A_TIME, "sgd")])
def test_a_noise_row_is_the_module_trained_alone(digits, factory, mode, kind):
    space = _space(_ref(factory.__name__), fit={"criterion": "train_accuracy",
                                                  "stop_when_fit": False},
                   optimizer={"kind": kind, "lr": 0.01 if kind == "adam" else 0.1, "epochs": 6,
                              "batch_size": 16})
    runner = TorchRunner(space, digits, device=CPU)
    assert runner.info["training"] == mode
    noise = runner.noise(np.array([3, 11, 12]))
    batch = runner.evaluate(noise)
    for row in range(3):
        alone = _train_alone(runner, factory, noise[row], digits)
        assert batch["test_mse"][row] == pytest.approx(_test_mse(alone, digits), rel=1e-5)
    # a row's losses do not depend on which rows share its batch
    single = runner.evaluate(noise[1:2])
    assert single["test_mse"][0] == pytest.approx(batch["test_mse"][1], rel=1e-6)


def test_sample_is_evaluate_of_the_seeds_noise(digits):
    runner = TorchRunner(_space(_ref("small_mlp")), digits, device=CPU)
    seeds = np.array([5, 9])
    a = runner.sample(np.arange(2), seeds)
    b = runner.evaluate(runner.noise(seeds))
    np.testing.assert_array_equal(a["test_mse"], b["test_mse"])
    np.testing.assert_array_equal(a["epochs"], b["epochs"])


# -- the initial laws are PyTorch's -----------------------------------------------------------

def test_noise_gives_pytorchs_default_initial_laws(digits):
    """Parameters from noise against the module PyTorch builds (two-sample KS over many
    builds), and the documented closed forms: constants exactly, bounds, normals."""
    space = _space(_ref("many_layers"))
    runner = TorchRunner(space, digits, device=CPU)
    rows = runner.parameters_from_noise(runner.noise(np.arange(300)))
    ours = dict(zip(runner.net.names, runner.views(rows), strict=True))
    torch.manual_seed(0)
    built = [dict(many_layers().named_parameters()) for _ in range(300)]
    for name, values in ours.items():
        theirs = torch.stack([b[name].detach() for b in built])
        a, b = values.double().reshape(-1).numpy(), theirs.double().reshape(-1).numpy()
        if np.ptp(b) == 0:  # a constant: the same constant
            np.testing.assert_array_equal(a, b[0] * np.ones_like(a), err_msg=name)
        else:
            assert stats.ks_2samp(a[:20000], b[:20000]).pvalue > 1e-4, name
    # the documented forms
    e = 8
    assert float(ours["attn.in_proj_weight"].abs().max()) <= math.sqrt(6 / (4 * e))
    assert float(ours["conv.weight"].abs().max()) <= 1 / math.sqrt(5)
    assert torch.equal(ours["norm.weight"], torch.ones_like(ours["norm.weight"]))
    assert torch.equal(ours["attn.out_proj.bias"], torch.zeros_like(ours["attn.out_proj.bias"]))
    assert stats.kstest(ours["embed.weight"].reshape(-1).double().numpy(), "norm").pvalue > 1e-4


def test_init_patterns_override_the_defaults(digits):
    space = _space(_ref("small_mlp"), init={"1.*": {"law": "normal", "std": 0.3, "mean": 1.0},
                                            "*.bias": {"law": "constant", "value": 0.25}})
    runner = TorchRunner(space, digits, device=CPU)
    views = dict(zip(runner.net.names,
                     runner.views(runner.parameters_from_noise(runner.noise(np.arange(200)))),
                     strict=True))
    w = views["1.weight"].double()
    assert float(w.mean()) == pytest.approx(1.0, abs=0.01)
    assert float(w.std()) == pytest.approx(0.3, rel=0.02)
    # "1.*" came first, so 1.bias is normal; 3.bias matches only "*.bias"
    assert torch.all(views["3.bias"] == 0.25)
    assert float(views["1.bias"].double().std()) > 0.1
    # constants take no normals
    n_weights = 64 * 12 + 12 + 12 * 10
    assert runner._param_normals == n_weights


def test_a_factory_that_initialises_its_own_way_is_refused(digits):
    with pytest.raises(SpecError, match=r"'1.weight'.*own way.*init"):
        TorchRunner(_space(_ref("custom_init")), digits, device=CPU)
    # named under init, it runs
    space = _space(_ref("custom_init"), init={"1.weight": {"law": "normal", "std": 0.5}})
    assert TorchRunner(space, digits, device=CPU).info["training"] == MATMUL


def test_parameters_of_unknown_layers(digits):
    fixed = _space(_ref("free_parameter"), model_args={"random": False})
    module = build_module(fixed, digits.input_shape, 10)
    laws = dict((n, law) for n, _, law in parameter_laws(fixed, module, digits.input_shape, 10))
    assert laws["scale"].kind == "constant"
    assert torch.equal(laws["scale"].values, torch.linspace(0, 1, 10))
    with pytest.raises(SpecError, match=r"'scale'.*at random.*init"):
        TorchRunner(_space(_ref("free_parameter"), model_args={"random": True}), digits,
                    device=CPU)


def test_dropout_is_refused(digits):
    with pytest.raises(SpecError, match=r"dropout p = 0.1"):
        TorchRunner(_space(_ref("with_dropout")), digits, device=CPU)


# -- the same law as the built-in mlp -----------------------------------------------------------

def test_torch_mlp_has_the_law_of_the_builtin_mlp(digits):
    """kind: torch with the mlp factory and kind: mlp: same architecture, init law, optimiser
    and data-order law, so their test MSEs have one law (two-sample KS, 160 networks each;
    a true difference of the size a wrong init scale makes is far past this test's power)."""
    optimizer = {"kind": "adam", "lr": 0.01, "epochs": 5, "batch_size": 20}
    torch_space = _space("ibdb.runners.zoo:mlp",
                         model_args={"width": 16, "depth": 1, "n_outputs": 10},
                         optimizer=optimizer)
    mlp_space = parse_space({"name": "m", "kind": "mlp", "width": 16, "depth": 1,
                             "optimizer": optimizer})
    seeds = np.arange(160)
    ours = TorchRunner(torch_space, digits, device=CPU).sample(seeds, seeds + 10_000)
    theirs = MLPRunner(mlp_space, digits, device=CPU).sample(seeds, seeds)
    assert stats.ks_2samp(ours["test_mse"], theirs["test_mse"]).pvalue > 1e-3
    # and the test is not blind: two epochs fewer is another law
    half = parse_space({**mlp_space.model_dump(), "optimizer": {**optimizer, "epochs": 3}})
    other = MLPRunner(half, digits, device=CPU).sample(seeds, seeds)
    assert stats.ks_2samp(ours["test_mse"], other["test_mse"]).pvalue < 1e-3
