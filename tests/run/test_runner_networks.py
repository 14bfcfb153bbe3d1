"""The network runners (mlp, cnn) against independent oracles: plain torch.nn models holding the
same weights, and one network trained alone by torch.nn + torch.optim in a plain loop."""

from __future__ import annotations

import math

import duckdb
import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from ibdb.core.errors import IbdbError, SpecError
from ibdb.data.task import load_task
from ibdb.run.plan import hypothesis_seeds, load_runs
from ibdb.runners import load_runner
from ibdb.runners.base import LOSS_COLUMNS
from ibdb.spec.file import load_experiment
from ibdb.spec.sources import Task
from ibdb.spec.spaces import parse_space

from conftest import make_npz, spec_dict, write_spec

CPU = torch.device("cpu")
ACT = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "sigmoid": nn.Sigmoid}


def _load(folder, name, image_shape=None, n_train=24, n_test=15, n_classes=3):
    features = int(np.prod(image_shape)) if image_shape else 5
    make_npz(folder / name, n_train=n_train, n_test=n_test, n_classes=n_classes,
             n_features=features)
    if image_shape:
        with np.load(folder / name) as npz:
            arrays = {k: npz[k] for k in npz.files}
        for key in ("X_train", "X_test"):
            arrays[key] = arrays[key].reshape(-1, *image_shape)
        np.savez(folder / name, **arrays)
    task = Task.model_validate({"name": "t", "source": {"kind": "npz", "path": name},
                                "n_train": n_train, "n_test": n_test, "eps": [0.1]})
    return load_task(task, spec_dir=folder)


@pytest.fixture(scope="module")
def flat_data(tmp_path_factory):
    return _load(tmp_path_factory.mktemp("flat"), "flat.npz")


@pytest.fixture(scope="module")
def image_data(tmp_path_factory):
    return _load(tmp_path_factory.mktemp("img"), "img.npz", image_shape=(2, 6, 6))


def _space(kind, optimizer=None, fit=None, **arch):
    base = {"width": 6, "depth": 2} if kind == "mlp" else {"channels": 3, "layers": 2}
    return parse_space({"name": "s", "kind": kind, **{**base, **arch},
                        "optimizer": {"kind": "adam", "lr": 0.01, "epochs": 3, "batch_size": 8,
                                      **(optimizer or {})},
                        **({"fit": fit} if fit else {})})


def _runner(space, data):
    return load_runner(space.kind)(space, data, device=CPU)


# -- an independent per-network model: torch.nn layers holding one network's weights ---------


def _torch_model(space, data, params):
    """torch.nn model of one network from its per-parameter tensors (runner layout: weights
    (fan_in, fan_out), filter banks (in_channels * k * k, channels), biases (1, fan_out))."""
    act = ACT[space.activation]
    layers: list[nn.Module] = []
    pairs = list(zip(params[0::2], params[1::2], strict=True))
    if space.kind == "mlp":
        for i, (w, b) in enumerate(pairs):
            lin = nn.Linear(*w.shape)
            lin.weight.data, lin.bias.data = w.T.clone(), b[0].clone()
            layers += [lin, act()] if i < len(pairs) - 1 else [lin]
        return nn.Sequential(*layers)
    k = space.kernel_size
    for w, b in pairs[:-1]:
        conv = nn.Conv2d(w.shape[0] // k**2, w.shape[1], k, padding=k // 2)
        conv.weight.data = w.T.reshape(conv.weight.shape).clone()
        conv.bias.data = b[0].clone()
        layers += [conv, act()]
        if space.pooling != "none":
            layers.append(nn.MaxPool2d(2) if space.pooling == "max" else nn.AvgPool2d(2))
    head = nn.Linear(*pairs[-1][0].shape)
    head.weight.data, head.bias.data = pairs[-1][0].T.clone(), pairs[-1][1][0].clone()
    return nn.Sequential(nn.Unflatten(1, data.image_shape), *layers, nn.Flatten(), head)


def _losses_numpy(model, x, y_onehot):
    with torch.no_grad():
        preds = model(torch.as_tensor(x)).numpy()
    mse = ((preds - y_onehot) ** 2).mean()
    error = (preds.argmax(1) != y_onehot.argmax(1)).mean()
    return mse, error


CASES = [
    ("mlp", {"activation": "relu"}),
    ("mlp", {"activation": "tanh", "depth": 0}),
    ("mlp", {"activation": "gelu", "width": 9, "depth": 1, "init_scale": 2.0}),
    ("cnn", {"pooling": "max"}),
    ("cnn", {"pooling": "avg", "activation": "sigmoid", "kernel_size": 5}),
    ("cnn", {"pooling": "none", "layers": 1}),
]


@pytest.mark.parametrize(("kind", "arch"), CASES)
def test_recorded_losses_equal_a_plain_torch_model_with_the_same_weights(
        kind, arch, flat_data, image_data):
    data = image_data if kind == "cnn" else flat_data
    space = _space(kind, **arch)
    runner = _runner(space, data)
    ids = np.arange(6)
    seeds = hypothesis_seeds(11, ids)
    trained = runner.train(seeds)
    sampled = runner.sample(ids, seeds)
    for i in range(len(ids)):
        model = _torch_model(space, data, [p[i].double() for p in trained.params]).double()
        for split, x, y in (("test", data.x_test, data.y_test),
                            ("train", data.x_train, data.y_train)):
            mse, error = _losses_numpy(model, x, y)
            np.testing.assert_allclose(sampled[f"{split}_mse"][i], mse, rtol=1e-6)
            assert sampled[f"{split}_error"][i] == error
    # the errors are those of the test labels (y_test is one-hot of labels_test)
    np.testing.assert_array_equal(data.y_test.argmax(1), data.labels_test)


# -- training: one network trained alone by torch.nn and torch.optim -------------------------


def _train_alone(space, data, seed, initial=None, orders=None):
    """The documented procedure, written plainly: init from the hypothesis's generator in
    parameter order (or the given ``initial`` per-parameter tensors), one randperm per epoch
    (or the given ``orders``, one row per epoch), MSE loss, torch.optim, stop at the first
    epoch end where the criterion holds."""
    gen = torch.Generator().manual_seed(int(seed))
    shapes = [p.shape for p in _runner(space, data).net.parameter_shapes()]
    params = [] if initial is None else list(initial)
    for shape in shapes[len(params):]:
        fan_in = shape[0] if len(params) % 2 == 0 else params[-1].shape[0]
        bound = space.init_scale / fan_in**0.5
        params.append(torch.empty(shape).uniform_(-bound, bound, generator=gen))
    model = _torch_model(space, data, params)
    opt_spec = space.optimizer
    if opt_spec.kind == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=opt_spec.lr, betas=opt_spec.betas,
                               weight_decay=opt_spec.weight_decay)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=opt_spec.lr, momentum=opt_spec.momentum,
                              weight_decay=opt_spec.weight_decay)
    x = torch.as_tensor(data.x_train, dtype=torch.float32)
    y = torch.as_tensor(data.y_train, dtype=torch.float32)
    n = len(x)
    full = opt_spec.batch_size == "full"
    batch = n if full else opt_spec.batch_size
    for epoch in range(1, opt_spec.epochs + 1):
        if full:
            order = torch.arange(n)
        elif orders is not None:
            order = torch.as_tensor(orders[epoch - 1])
        else:
            order = torch.randperm(n, generator=gen)
        for start in range(0, n, batch):
            idx = order[start:start + batch]
            opt.zero_grad()
            nn.functional.mse_loss(model(x[idx]), y[idx]).backward()
            opt.step()
        if space.fit.stop_when_fit and epoch < opt_spec.epochs:
            with torch.no_grad():
                out = model(x)
            if space.fit.criterion == "train_accuracy":
                done = bool((out.argmax(1) == y.argmax(1)).all())
            else:
                done = float(((out.double() - y.double()) ** 2).mean()) <= space.fit.train_mse_max
            if done:
                return model, epoch
    return model, opt_spec.epochs


TRAINING_CASES = [
    ("mlp", {"kind": "adam", "lr": 0.02, "epochs": 6, "batch_size": 5}, None),
    ("mlp", {"kind": "sgd", "lr": 0.3, "momentum": 0.9, "weight_decay": 1e-3, "epochs": 30,
             "batch_size": "full"}, {"criterion": "train_mse", "train_mse_max": 0.1}),
    ("mlp", {"kind": "adam", "lr": 0.01, "epochs": 3, "batch_size": 7, "weight_decay": 0.01,
             "betas": [0.8, 0.99]}, {"stop_when_fit": False}),
    ("cnn", {"kind": "adam", "lr": 0.03, "epochs": 8, "batch_size": 8}, None),
]


@pytest.mark.parametrize(("kind", "optimizer", "fit"), TRAINING_CASES)
def test_batched_training_equals_each_network_trained_alone_by_torch(
        kind, optimizer, fit, flat_data, image_data):
    data = image_data if kind == "cnn" else flat_data
    space = _space(kind, optimizer=optimizer, fit=fit)
    runner = _runner(space, data)
    seeds = hypothesis_seeds(5, np.arange(8))
    trained = runner.train(seeds)
    for i, seed in enumerate(seeds):
        model, epochs = _train_alone(space, data, seed)
        assert trained.epochs[i] == epochs, f"hypothesis {i}"
        expected = _torch_model(space, data, [p[i] for p in trained.params])
        for got, want in zip(expected.parameters(), model.parameters(), strict=True):
            # float32 training, other reduction orders: agree to a few ulps of the weights
            np.testing.assert_allclose(got.detach(), want.detach(), rtol=1e-4, atol=1e-5)
    assert len(set(trained.epochs.tolist())) > 1 or not space.fit.stop_when_fit


def test_fitted_is_the_criterion_on_the_recorded_losses(flat_data):
    space = _space("mlp", optimizer={"epochs": 8, "batch_size": 6},
                   fit={"criterion": "train_mse", "train_mse_max": 0.1})
    out = _runner(space, flat_data).sample(np.arange(24), hypothesis_seeds(2, np.arange(24)))
    np.testing.assert_array_equal(out["fitted"], out["train_mse"] <= 0.1)
    assert 0 < out["fitted"].sum() < 24  # both kinds occur with these settings
    assert (out["epochs"][~out["fitted"]] == 8).all()  # a network that never fit trained all
    stopped = out["epochs"] < 8
    assert stopped.any() and out["fitted"][stopped].all()  # early stops are fitted networks


def test_without_stop_when_fit_every_network_trains_all_epochs(flat_data):
    space = _space("mlp", optimizer={"epochs": 4}, fit={"stop_when_fit": False})
    out = _runner(space, flat_data).sample(np.arange(5), hypothesis_seeds(0, np.arange(5)))
    assert (out["epochs"] == 4).all() and out["epochs"].dtype == np.int64
    np.testing.assert_array_equal(out["fitted"], out["train_error"] == 0)


def test_evaluation_in_groups_equals_one_group(flat_data, monkeypatch):
    from ibdb.runners import training

    space = _space("mlp", optimizer={"epochs": 2})
    seeds = hypothesis_seeds(1, np.arange(7))
    whole = _runner(space, flat_data).sample(np.arange(7), seeds)
    monkeypatch.setattr(training, "EVAL_ELEMENTS", 1)  # one network at a time
    grouped = _runner(space, flat_data).sample(np.arange(7), seeds)
    for name in whole:
        np.testing.assert_array_equal(whole[name], grouped[name])


# -- explicit noise: initial weights from standard normals z, data order from the seed ---------


def _bounds(runner, space):
    """Per-element init bound init_scale / sqrt(fan_in), in the noise layout."""
    return np.concatenate([np.full(int(np.prod(p.shape)), space.init_scale / np.sqrt(p.fan_in))
                           for p in runner.net.parameter_shapes()])


@pytest.mark.parametrize(("kind", "arch"), [CASES[0], CASES[2], CASES[3]])
def test_parameters_from_noise_are_the_documented_transform(kind, arch, flat_data, image_data):
    data = image_data if kind == "cnn" else flat_data
    space = _space(kind, **arch)
    runner = _runner(space, data)
    p = runner.info["parameters_per_network"]
    z = np.random.default_rng(0).standard_normal((5, runner.noise_dim)) * 2
    flat = runner.parameters_from_noise(z)
    assert flat.dtype == torch.float32 and flat.shape[0] == 5
    want = _bounds(runner, space) * (2 * stats.norm.cdf(z[:, :p]) - 1)
    np.testing.assert_allclose(flat[:, :p].numpy(), want.astype(np.float32),
                               rtol=1e-6, atol=1e-7)
    assert (flat[:, p:] == 0).all()  # the padding


def test_initial_weights_from_noise_have_the_uniform_law_of_sample(flat_data):
    """Pooled over parameters, w / bound for z ~ N(0, 1) is uniform on (-1, 1): a KS test (seeded,
    so deterministic; a correct transform fails it with probability 1e-3), and a two-sample KS
    against the weights sample draws."""
    space = _space("mlp", width=40, depth=2)
    runner = _runner(space, flat_data)
    seeds = hypothesis_seeds(21, np.arange(12))
    p = runner.info["parameters_per_network"]
    scaled = runner.parameters_from_noise(runner.noise(seeds))[:, :p].double()
    u = (scaled.numpy() / _bounds(runner, space)).ravel()
    assert len(u) > 20_000 and np.abs(u).max() <= 1
    assert stats.kstest(u, stats.uniform(loc=-1, scale=2).cdf).pvalue > 1e-3
    drawn = runner.initial_parameters(runner.generators(hypothesis_seeds(22, np.arange(12))))
    v = (drawn[:, :p].double().numpy() / _bounds(runner, space)).ravel()
    assert stats.ks_2samp(u, v).pvalue > 1e-3
    # and the noise itself is standard normal
    assert stats.kstest(runner.noise(seeds).ravel(), "norm").pvalue > 1e-3


@pytest.mark.parametrize(("kind", "optimizer", "fit"), [TRAINING_CASES[0], TRAINING_CASES[1],
                                                        TRAINING_CASES[3]])
def test_evaluate_trains_like_a_network_trained_alone_from_the_transformed_weights(
        kind, optimizer, fit, flat_data, image_data):
    """evaluate = the documented weights from the first P normals of z, the data order of epoch
    e the ranks of its next n normals (numpy's stable argsort), then the usual training:
    checked against one network trained alone by torch."""
    data = image_data if kind == "cnn" else flat_data
    space = _space(kind, optimizer=optimizer, fit=fit)
    runner = _runner(space, data)
    noise = runner.noise(hypothesis_seeds(7, np.arange(5)))
    n, n_params = len(data.x_train), sum(math.prod(p.shape) for p in runner._shapes)
    full = space.optimizer.batch_size == "full"
    assert runner.noise_dim == n_params + (0 if full else space.optimizer.epochs * n)
    got = runner.evaluate(noise)
    initial = runner.views(runner.parameters_from_noise(noise))
    for i in range(len(noise)):
        orders = np.argsort(noise[i, n_params:].reshape(-1, n), axis=1, kind="stable")
        model, epochs = _train_alone(space, data, 0, initial=[p[i].clone() for p in initial],
                                     orders=None if full else orders)
        assert got["epochs"][i] == epochs, f"hypothesis {i}"
        for split, x, y in (("test", data.x_test, data.y_test),
                            ("train", data.x_train, data.y_train)):
            mse, _ = _losses_numpy(model.double(), x, y)
            np.testing.assert_allclose(got[f"{split}_mse"][i], mse, rtol=1e-4)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_a_hypothesis_is_reproducible_from_its_noise(kind, flat_data, image_data):
    """The noise row fixes the hypothesis: a fresh runner, alone or inside another batch, gives
    the identical losses; and noise(s) regenerates the stored noise from its seed."""
    data = image_data if kind == "cnn" else flat_data
    space = _space(kind, optimizer={"epochs": 4})
    seeds = hypothesis_seeds(9, np.arange(6))
    runner = _runner(space, data)
    noise = runner.noise(seeds)
    np.testing.assert_array_equal(noise, _runner(space, data).noise(seeds))
    batch = runner.evaluate(noise)
    other = _runner(space, data)
    mixed = other.evaluate(np.concatenate([other.noise(hypothesis_seeds(10, np.arange(3))),
                                           noise[[4, 1]]]))
    alone = _runner(space, data).evaluate(noise[1:2])
    for name in batch:
        assert batch[name].dtype == np.dtype(LOSS_COLUMNS[name].dtype)
        np.testing.assert_array_equal(mixed[name][3:], batch[name][[4, 1]], err_msg=name)
        np.testing.assert_array_equal(alone[name], batch[name][1:2], err_msg=name)
    # the order normals matter (swap two epochs' orders: other networks), and the hypotheses
    # are not sample's for the same seeds
    n_params = runner.noise_dim - space.optimizer.epochs * len(data.x_train)
    swapped = noise.copy()
    swapped[:, n_params:] = swapped[:, n_params:][:, ::-1]
    assert not np.array_equal(runner.evaluate(swapped)["test_mse"], batch["test_mse"])
    assert not np.array_equal(runner.sample(np.arange(6), seeds)["test_mse"], batch["test_mse"])


def test_first_level_of_evaluate_has_the_law_of_sample(flat_data):
    """200 hypotheses from evaluate(noise(s)) against 200 from sample: two-sample KS on the
    test and train MSE (seeded, so deterministic; equal laws fail with probability ~1e-3)."""
    space = _space("mlp", width=5, depth=1, optimizer={"epochs": 3})
    runner = _runner(space, flat_data)
    ids = np.arange(200)
    moved = runner.evaluate(runner.noise(hypothesis_seeds(31, ids)))
    sampled = runner.sample(ids, hypothesis_seeds(33, ids))
    for name in ("test_mse", "train_mse"):
        assert stats.ks_2samp(moved[name], sampled[name]).pvalue > 1e-3, name


def test_evaluate_rejects_mismatched_noise(flat_data):
    runner = _runner(_space("mlp"), flat_data)
    with pytest.raises(IbdbError, match="noise_dim"):
        runner.evaluate(np.zeros((2, runner.noise_dim - 1)))
    with pytest.raises(IbdbError, match="noise_dim"):
        runner.evaluate(np.zeros(runner.noise_dim))


# -- space-against-task errors, through the plan (what `ibdb validate` calls) -----------------


def _plan(tmp_path, space, *, n_train=30, images=False):
    make_npz(tmp_path / "toy.npz")
    spec = spec_dict(n_train=n_train)
    if images:
        spec["tasks"][0]["source"] = {"kind": "digits"}
    spec["spaces"] = [space]
    path = write_spec(tmp_path, spec)
    return load_runs(load_experiment(path).runs(), spec_dir=tmp_path)


def _net(kind, **kw):
    base = {"width": 4, "depth": 1} if kind == "mlp" else {"channels": 2, "layers": 1}
    return {"name": "net", "kind": kind, **base,
            "optimizer": {"kind": "sgd", "lr": 0.1, "epochs": 2, "batch_size": 8}, **kw}


def test_batch_size_above_n_train_is_a_spec_error(tmp_path):
    space = _net("mlp")
    space["optimizer"]["batch_size"] = 31
    with pytest.raises(SpecError, match=r"space 'net' \(kind mlp\): optimizer.batch_size = 31 "
                                        r"is larger than the task's n_train = 30"):
        _plan(tmp_path, space)
    space["optimizer"]["batch_size"] = 30
    assert _plan(tmp_path, space)


def test_cnn_on_flat_features_is_a_spec_error(tmp_path):
    with pytest.raises(SpecError, match=r"space 'net' \(kind cnn\): a CNN needs image data, but "
                                        r"the task's features are flat \(shape \(n, 5\)\)"):
        _plan(tmp_path, _net("cnn"))
    assert _plan(tmp_path, _net("cnn"), images=True)  # digits are 1x8x8 images


def test_cnn_pooling_below_one_pixel_is_a_spec_error(tmp_path):
    with pytest.raises(SpecError, match=r"layers = 4 with pooling 'max' halves the 8x8 images"):
        _plan(tmp_path, _net("cnn", layers=4), images=True)
    assert _plan(tmp_path, _net("cnn", layers=4, pooling="none"), images=True)


# -- end to end: a network run lands in the store with its training columns ------------------


def test_mlp_run_stores_training_columns(tmp_path):
    from ibdb.api import Ibdb

    make_npz(tmp_path / "toy.npz")
    spec = spec_dict(n_hypotheses=12, chunk_size=5)
    spec["spaces"] = [_net("mlp", fit={"criterion": "train_mse", "train_mse_max": 0.1})]
    path = write_spec(tmp_path, spec)
    report = Ibdb(tmp_path / "s.duckdb", device="cpu").run(path, estimate=False)
    assert report.ingest.hypotheses_inserted == 12
    con = duckdb.connect(str(tmp_path / "s.duckdb"), read_only=True)
    rows = con.execute("SELECT hypothesis_id, test_mse, train_mse, epochs, fitted FROM losses "
                       "ORDER BY hypothesis_id").fetchall()
    con.close()
    ids = np.arange(12)
    (planned,) = Ibdb(tmp_path / "other.duckdb").plan(path)
    direct = _runner(planned.spec.space, planned.data).sample(ids, hypothesis_seeds(0, ids))
    assert [r[0] for r in rows] == ids.tolist()
    np.testing.assert_array_equal([r[1] for r in rows], direct["test_mse"])
    np.testing.assert_array_equal([r[2] for r in rows], direct["train_mse"])
    assert [r[3] for r in rows] == direct["epochs"].tolist()
    assert [r[4] for r in rows] == direct["fitted"].tolist()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_gpu_matches_cpu(kind, flat_data, image_data):
    data = image_data if kind == "cnn" else flat_data
    space = _space(kind)
    seeds = hypothesis_seeds(4, np.arange(16))
    cpu = _runner(space, data).sample(np.arange(16), seeds)
    gpu = load_runner(kind)(space, data, device=torch.device("cuda")).sample(
        np.arange(16), seeds)
    np.testing.assert_array_equal(cpu["epochs"], gpu["epochs"])
    np.testing.assert_allclose(cpu["test_mse"], gpu["test_mse"], rtol=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_gpu_evaluate_matches_cpu(kind, flat_data, image_data):
    data = image_data if kind == "cnn" else flat_data
    space = _space(kind)
    seeds = hypothesis_seeds(4, np.arange(16))
    cpu_runner = _runner(space, data)
    gpu_runner = load_runner(kind)(space, data, device=torch.device("cuda"))
    noise = cpu_runner.noise(seeds)
    np.testing.assert_array_equal(noise, gpu_runner.noise(seeds))  # drawn on the host
    # the initial weights are made on the host: identical on both devices
    np.testing.assert_array_equal(cpu_runner.parameters_from_noise(noise).numpy(),
                                  gpu_runner.parameters_from_noise(noise).cpu().numpy())
    cpu, gpu = cpu_runner.evaluate(noise), gpu_runner.evaluate(noise)
    np.testing.assert_array_equal(cpu["epochs"], gpu["epochs"])
    np.testing.assert_allclose(cpu["test_mse"], gpu["test_mse"], rtol=1e-4)
