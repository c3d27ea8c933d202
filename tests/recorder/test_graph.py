"""Tests of netphys.recorder.graph: node weights, conservation, fallback, errors (paths.md 4.1)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from netphys.errors import (
    ConservationWarning,
    NotACutError,
    TrainingModeError,
    UnsupportedModuleError,
)
from netphys.recorder.graph import _closed_form, _jacobian, edge_contributions, node_weights


def _randomise_bn(model: nn.Module, gen: torch.Generator) -> None:
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=gen, dtype=m.running_mean.dtype) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=gen, dtype=m.running_var.dtype) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=gen, dtype=m.weight.dtype) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=gen, dtype=m.bias.dtype) - 0.5)


class DemoCNN(nn.Module):
    """The demo CNN for 8x8 digits."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1, self.relu1 = (
            nn.Conv2d(1, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
        )
        self.conv2, self.bn2, self.relu2 = (
            nn.Conv2d(16, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
        )
        self.pool = nn.MaxPool2d(2)
        self.fc1, self.relu3, self.fc2 = nn.Linear(32 * 16, 64), nn.ReLU(), nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu2(self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))))
        return self.fc2(self.relu3(self.fc1(torch.flatten(self.pool(x), 1))))


def _conserved(ds, atol):
    n_layers = len(ds.attrs["layers"])
    for li in range(1, n_layers):
        lay = ds[f"layer_{li}"]
        r = lay["activity"] - lay["contribution"].sum("pre") - lay["bias"]
        assert float(abs(r).max()) < atol, (li, float(abs(r).max()))
    if "logits" in ds:
        out = ds["output"]
        r = ds["logits"] - out["contribution"].sum("pre") - out["bias"]
        assert float(abs(r).max()) < atol


# ---------------------------------------------------------------- node_weights (first deliverable)
def test_node_weights_demo_cnn():
    torch.manual_seed(0)
    model = DemoCNN().eval()
    _randomise_bn(model, torch.Generator().manual_seed(1))
    w = node_weights(model, ["relu1", "relu2", "relu3"], torch.randn(2, 1, 8, 8))
    assert set(w) == {("relu1", "relu2"), ("relu2", "relu3")}
    s = (model.bn2.weight / torch.sqrt(model.bn2.running_var + model.bn2.eps)).detach().double()
    expect = model.conv2.weight.detach().double().sum((2, 3)) * s[:, None]
    np.testing.assert_allclose(w[("relu1", "relu2")], expect.numpy(), rtol=1e-6, atol=1e-7)
    # flatten then Linear: weights summed over each channel's spatial positions (pool is mean-field)
    expect = model.fc1.weight.detach().double().reshape(64, 32, 16).sum(-1)
    np.testing.assert_allclose(w[("relu2", "relu3")], expect.numpy(), rtol=1e-6)
    assert w[("relu1", "relu2")].dtype == np.float64


def test_node_weights_mlp_and_skips():
    net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2), nn.ReLU())
    w = node_weights(net, ["1", "3"], torch.zeros(1, 4))
    np.testing.assert_allclose(w[("1", "3")], net[2].weight.detach().double().numpy())

    class Skip(nn.Module):  # residual add: no static matrix, silently skipped
        def __init__(self):
            super().__init__()
            self.a, self.lin, self.b = nn.ReLU(), nn.Linear(3, 3), nn.ReLU()

        def forward(self, x):
            h = self.a(x)
            return self.b(h + self.lin(h))

    assert node_weights(Skip(), ["a", "b"], torch.randn(2, 3)) == {}
    layer = nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3), nn.ReLU())  # unsupported: skipped
    assert node_weights(layer, ["0", "2"], torch.randn(2, 3)) == {}


# ---------------------------------------------------------------- conservation (4.1.1)
def test_conservation_linear_relu(rng):
    torch.manual_seed(int(rng.integers(1000)))
    net = (
        nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 5), nn.ReLU(), nn.Linear(5, 3))
        .double()
        .eval()
    )
    ds = edge_contributions(
        net, torch.randn(20, 6, dtype=torch.float64), layers=["1", "3"], progress=False
    )
    assert ds.attrs["methods"] == ["closed", "closed"]
    _conserved(ds, 1e-12)  # float64: rounding only


def test_conservation_conv_stride_bn_groups_gelu(rng):
    torch.manual_seed(int(rng.integers(1000)))
    net = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(),
        nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
        nn.Conv2d(6, 4, 3, padding=2, dilation=2, groups=2), nn.GELU(),
        nn.Conv1d(4, 4, 1) if False else nn.Identity(),
    ).double().eval()  # fmt: skip
    _randomise_bn(net, torch.Generator().manual_seed(0))
    ds = edge_contributions(
        net, torch.randn(10, 2, 9, 9, dtype=torch.float64), layers=["1", "4", "6"], progress=False
    )
    assert ds.attrs["methods"][:2] == ["closed", "closed"]
    _conserved(ds, 1e-10)
    c = ds["layer_2"]["contribution"].values  # groups=2: no edges across groups
    assert np.abs(c[:, :2, 3:]).max() == 0
    assert np.abs(c[:, 2:, :3]).max() == 0


def test_fallback_equals_closed_form(rng):
    torch.manual_seed(int(rng.integers(1000)))
    for block, shape in [
        (
            nn.Sequential(nn.Conv2d(3, 5, 3, stride=2, padding=1), nn.BatchNorm2d(5), nn.ReLU()),
            (4, 3, 7, 7),
        ),
        (nn.Sequential(nn.Linear(6, 5), nn.ReLU()), (4, 6)),
        (nn.Sequential(nn.Conv1d(3, 4, 3, padding=1), nn.LeakyReLU(0.1)), (4, 3, 10)),
    ]:
        block = block.double().eval()
        _randomise_bn(block, torch.Generator().manual_seed(0))
        model = nn.Sequential(nn.Identity(), block).eval()
        x = torch.randn(*shape, dtype=torch.float64)
        out = block(x)
        c_closed, _beta = _closed_form(block[0], block[1] if len(block) == 3 else None, x, out)
        c_jac, _abar = _jacobian(model, x, model[0], model[1], x)
        # piecewise-linear: grad x input equals the secant closed form (float64 rounding)
        np.testing.assert_allclose(c_jac.numpy(), c_closed.numpy(), atol=1e-10)


@pytest.mark.parametrize("pool", [nn.MaxPool2d(2), nn.AvgPool2d(2), nn.ReLU()])
def test_leading_pool_closed_form_equals_fallback(rng, pool):
    """Pool/ReLU before the weight op: the closed form on the pooled input equals grad x input."""
    torch.manual_seed(int(rng.integers(1000)))
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), pool, nn.Flatten(),
                        nn.Linear(4 * (16 if not isinstance(pool, nn.ReLU) else 64), 5), nn.ReLU(),
                        nn.Linear(5, 3)).double().eval()  # fmt: skip
    x = torch.randn(7, 1, 8, 8, dtype=torch.float64)
    ds = edge_contributions(net, x, layers=["1", "5"], progress=False)
    assert ds.attrs["methods"][0] == "closed"
    a_prev = net[1](net[0](x))
    c_jac, _ = _jacobian(net, x, net[1], net[5], a_prev)
    np.testing.assert_allclose(ds["layer_1"]["contribution"].values, c_jac.numpy(), atol=1e-10)
    _conserved(ds, 1e-10)


def test_residual_maxpool_fallback_bias_free(rng):
    torch.manual_seed(int(rng.integers(1000)))

    class Block(nn.Module):
        def __init__(self, bias):
            super().__init__()
            self.c1 = nn.Conv2d(4, 4, 3, padding=1, bias=bias)
            self.c2 = nn.Conv2d(4, 4, 3, padding=1, bias=bias)
            self.pool = nn.MaxPool2d(2)

        def forward(self, x):
            return self.pool(torch.relu(x + self.c2(torch.relu(self.c1(x)))))

    for bias in (False, True):
        net = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, bias=bias), nn.ReLU(), Block(bias), nn.Flatten(),
                            nn.Linear(64, 3)).double().eval()  # fmt: skip
        ds = edge_contributions(
            net, torch.randn(6, 2, 8, 8, dtype=torch.float64), layers=["1", "2"], progress=False
        )
        assert ds.attrs["methods"][0] == "jacobian"
        _conserved(ds, 1e-10)
        frac = float(ds["residual_fraction"][0])
        if not bias:
            assert frac < 1e-10, frac  # sum_i c = abar exactly for bias-free piecewise-linear
        else:
            assert frac > 1e-4  # the bias share is reported as beta


def test_smooth_fallback_warns():
    torch.manual_seed(0)

    class Soft(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin, self.act = nn.Linear(4, 4), nn.GELU()

        def forward(self, x):
            return self.act(x + self.lin(x))

    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), Soft()).double().eval()
    with pytest.warns(ConservationWarning, match="smooth activations"):
        edge_contributions(
            net, torch.randn(8, 3, dtype=torch.float64) * 3, layers=["1", "2"], progress=False
        )


# ---------------------------------------------------------------- errors (4.1.3 and bad input)
def test_training_mode_error():
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 4), nn.BatchNorm1d(4), nn.ReLU())
    net.train()
    with pytest.raises(TrainingModeError, match=r"'3' \(BatchNorm1d\).*model.eval\(\)"):
        edge_contributions(net, torch.randn(5, 3), layers=["1", "4"], progress=False)


@pytest.mark.parametrize(
    ("module", "name"),
    [
        (nn.LayerNorm(4), "LayerNorm"),
        (nn.MultiheadAttention(4, 1, batch_first=True), "MultiheadAttention"),
        (nn.LSTM(4, 4, batch_first=True), "LSTM"),
    ],
)
def test_unsupported_module_error(module, name):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin, self.a, self.mod, self.lin2, self.b = (
                nn.Linear(3, 4),
                nn.ReLU(),
                module,
                nn.Linear(4, 4),
                nn.ReLU(),
            )

        def forward(self, x):
            h = self.a(self.lin(x))
            if isinstance(self.mod, nn.MultiheadAttention):
                z = self.mod(h[:, None], h[:, None], h[:, None])[0][:, 0]
            elif isinstance(self.mod, nn.LSTM):
                z = self.mod(h[:, None])[0][:, 0]
            else:
                z = self.mod(h)
            return self.b(self.lin2(z))

    net = Net().eval()
    x = torch.randn(6, 3)
    with pytest.raises(UnsupportedModuleError, match=f"'mod' \\({name}\\).*allow_approximate=True"):
        edge_contributions(net, x, layers=["a", "b"], progress=False)
    ds = edge_contributions(net, x, layers=["a", "b"], allow_approximate=True, progress=False)
    assert ds.attrs["methods"][0] == "approximate"
    assert np.isfinite(float(ds["residual_fraction"][0]))


def test_not_a_cut_error():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp, self.lin1, self.branch, self.lin2, self.out = (
                nn.ReLU(),
                nn.Linear(3, 3),
                nn.ReLU(),
                nn.Linear(3, 3),
                nn.ReLU(),
            )

        def forward(self, x):
            h = self.inp(x)
            return self.out(h + self.lin2(self.branch(self.lin1(h))))

    net = Net().eval()
    with pytest.raises(NotACutError, match=r"'branch' does not separate.*residual"):
        edge_contributions(net, torch.randn(4, 3), layers=["inp", "branch", "out"], progress=False)
    edge_contributions(net, torch.randn(4, 3), layers=["inp", "out"], progress=False)  # a cut


def test_bad_layer_lists():
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2), nn.ReLU()).eval()
    x = torch.randn(3, 3)
    with pytest.raises(ValueError, match="`layers` is empty"):
        edge_contributions(net, x, layers=[], progress=False)
    with pytest.raises(ValueError, match="not in forward order"):
        edge_contributions(net, x, layers=["3", "1"], progress=False)
    with pytest.raises(ValueError, match="'relu9' in `layers` is not a module"):
        node_weights(net, ["relu9"], x)
    with pytest.raises(TypeError, match="list of module names"):
        edge_contributions(net, x, layers="1", progress=False)


def test_demo_cnn_batches_and_determinism():
    torch.manual_seed(0)
    model = DemoCNN().eval()
    _randomise_bn(model, torch.Generator().manual_seed(1))
    x = torch.randn(50, 1, 8, 8)
    a = edge_contributions(
        model, x, layers=["relu1", "relu2", "relu3"], batch_size=16, progress=False
    )
    b = edge_contributions(
        model, x, layers=["relu1", "relu2", "relu3"], batch_size=50, progress=False
    )
    assert a.attrs["methods"] == ["closed", "closed", "closed"]
    np.testing.assert_allclose(
        a["layer_2"]["contribution"].values, b["layer_2"]["contribution"].values, atol=1e-5
    )
    _conserved(a, 1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_matches_cpu():
    torch.manual_seed(0)
    model = DemoCNN().eval()
    x = torch.randn(64, 1, 8, 8)
    cpu = edge_contributions(model, x, layers=["relu1", "relu2", "relu3"], progress=False)
    gpu = edge_contributions(model.cuda(), x, layers=["relu1", "relu2", "relu3"], progress=False)
    for node in cpu.subtree:
        for v in node.data_vars:
            np.testing.assert_allclose(
                node[v].values, gpu[node.path][v].values, atol=1e-4, rtol=1e-3
            )


def test_pre_activation_recording_uses_fallback(rng):
    """A Linear followed by a functional ReLU: the activation opens the next block."""
    torch.manual_seed(int(rng.integers(1000)))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2, self.fc3 = nn.Linear(4, 6), nn.Linear(6, 5), nn.Linear(5, 3)

        def forward(self, x):
            return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))

    net = Net().double().eval()
    ds = edge_contributions(
        net, torch.randn(9, 4, dtype=torch.float64), layers=["fc1", "fc2"], progress=False
    )
    assert ds.attrs["methods"] == ["jacobian", "jacobian"]
    _conserved(ds, 1e-12)
    # grad x input of relu(a) -> W relu(a) + b: contributions are W_ji relu(a_i)
    a0 = np.maximum(ds["layer_0"]["activity"].values, 0)
    w = net.fc2.weight.detach().numpy()
    np.testing.assert_allclose(
        ds["layer_1"]["contribution"].values, w[None] * a0[:, None, :], atol=1e-12
    )
