"""Weight sharing on layers and models: Eq. 3 gradients, fine-tuning, export (section 3)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from deepcompress.errors import ConfigError
from deepcompress.models import build_model
from deepcompress.quantize import (
    QuantizeConfig,
    SharedWeight,
    codebook_of,
    export_compressed,
    quantization_report,
    quantize_,
    strip_quantization_,
)
from deepcompress.quantize.shared import install_shared_weight_


def _tiny_shared(reduction: str) -> tuple[nn.Linear, torch.Tensor, torch.Tensor]:
    layer = nn.Linear(3, 2, bias=False)
    positions = torch.tensor([0, 1, 3, 4, 5])  # flat index 2 is pruned
    codes = torch.tensor([0, 1, 1, 2, 1])
    codebook = torch.tensor([-1.0, 0.5, 2.0])
    install_shared_weight_(layer, SharedWeight((2, 3), positions, codes, 3, 2, reduction), codebook)
    return layer, positions, codes


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_centroid_gradient_is_the_sum_of_member_gradients(reduction: str) -> None:
    layer, positions, codes = _tiny_shared(reduction)
    np.testing.assert_array_equal(layer.weight.detach(), [[-1.0, 0.5, 0.0], [0.5, 2.0, 0.5]])
    x = torch.tensor([[1.0, 2.0, 3.0], [-1.0, 0.5, 4.0]])
    upstream = torch.tensor([[1.0, -2.0], [0.5, 3.0]])
    (layer(x) * upstream).sum().backward()
    dw = (upstream.T @ x).flatten()  # dL/dW of a plain linear layer, row-major
    by_hand = [dw[0], dw[1] + dw[3] + dw[5], dw[4]]
    if reduction == "mean":
        by_hand = [by_hand[0], by_hand[1] / 3, by_hand[2]]
    torch.testing.assert_close(codebook_of(layer).grad, torch.stack(by_hand), rtol=0, atol=1e-6)


def _pruned(model: nn.Module, keep: float = 0.3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            w = module.weight.data
            cut = w.abs().flatten().kthvalue(int((1 - keep) * w.numel())).values
            mask = w.abs() > cut
            module.register_buffer("weight_mask", mask)
            w.mul_(mask)
    return model


def _build(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return _pruned(build_model(name), seed=seed)


@pytest.mark.parametrize("make_opt", [
    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-3),
    lambda p: torch.optim.Adam(p, lr=1e-2),
], ids=["sgd-momentum", "adam"])
def test_fine_tuning_keeps_sharing_and_zeros(make_opt) -> None:
    model = _build("lenet5")
    masks = {n: m.weight_mask.clone() for n, m in model.named_modules() if hasattr(m, "weight_mask")}
    quantize_(model, QuantizeConfig(bits={"conv*": 4, "*": 3}))
    before = {n: codebook_of(m).detach().clone() for n, m in model.named_modules() if n in masks}
    opt = make_opt(model.parameters())
    x, y = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    for name, module in model.named_modules():
        if name not in masks:
            continue
        w = module.weight.detach()
        bits = 4 if name.startswith("conv") else 3
        assert torch.unique(w[w != 0]).numel() <= 2**bits
        assert torch.all(w[~masks[name]] == 0)
        assert not torch.equal(codebook_of(module).detach(), before[name])  # the codebook did train
    for row in quantization_report(model):
        assert row["distinct_nonzero"] <= 2 ** row["bits"] and row["clusters_used"] == row["clusters"]


def test_only_codebooks_and_biases_are_trainable() -> None:
    model = quantize_(_build("lenet300"))
    names = sorted(n for n, _ in model.named_parameters())
    assert names == sorted(
        [f"fc{i}.bias" for i in (1, 2, 3)] + [f"fc{i}.parametrizations.weight.original" for i in (1, 2, 3)]
    )
    assert [tuple(p.shape) for n, p in model.named_parameters() if n.endswith("original")] == [(32,)] * 3


def test_export_round_trip_is_bit_exact() -> None:
    model = quantize_(_build("lenet300"), QuantizeConfig(bits={"fc3": 6, "*": 5}))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x = torch.randn(32, 784)
    for _ in range(2):
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
    cm = export_compressed(model, "lenet300", index_bits={"fc1": 4, "*": 5}, metadata={"dataset": "mnist"})
    assert [(l.name, l.kind, l.weight_bits, l.index_bits) for l in cm.layers] == [
        ("fc1", "linear", 5, 4), ("fc2", "linear", 5, 5), ("fc3", "linear", 6, 5)]
    assert cm.extras == {} and cm.metadata == {"dataset": "mnist"}
    for layer in cm.layers:
        module = getattr(model, layer.name)
        np.testing.assert_array_equal(layer.codebook, codebook_of(module).detach().numpy())
        np.testing.assert_array_equal(layer.dense_weight(), module.weight.detach().numpy())
    fresh = build_model("lenet300")
    fresh.load_state_dict({k: torch.from_numpy(v) for k, v in cm.state_dict().items()})
    assert torch.equal(fresh(x), model(x))


def test_export_conv_attrs_and_unquantized_layers_go_to_extras() -> None:
    model = quantize_(_build("lenet5"), QuantizeConfig(types=("conv2d",)))
    cm = export_compressed(model, "lenet5")
    assert [l.name for l in cm.layers] == ["conv1", "conv2"]
    assert cm.layers[1].attrs == {"stride": [1, 1], "padding": [0, 0], "dilation": [1, 1], "groups": 1}
    assert sorted(cm.extras) == ["fc1.bias", "fc1.weight", "fc2.bias", "fc2.weight"]
    fresh = build_model("lenet5")
    fresh.load_state_dict({k: torch.from_numpy(v) for k, v in cm.state_dict().items()})
    x = torch.randn(4, 1, 28, 28)
    assert torch.equal(fresh(x), model(x))


def test_strip_bakes_plain_weights() -> None:
    model = quantize_(_build("lenet300"))
    x = torch.randn(8, 784)
    expected = model(x)
    strip_quantization_(model)
    assert type(model.fc1) is nn.Linear and isinstance(model.fc1.weight, nn.Parameter)
    assert torch.equal(model(x), expected)
    assert torch.unique(model.fc2.weight[model.fc2.weight != 0]).numel() <= 32


def test_same_seed_same_model() -> None:
    cfg = QuantizeConfig(init="kmeans++", seed=3)
    a, b = quantize_(_build("lenet300"), cfg), quantize_(_build("lenet300"), cfg)
    for name in ("fc1", "fc2", "fc3"):
        assert torch.equal(getattr(a, name).weight, getattr(b, name).weight)


def test_more_clusters_than_survivors_is_handled_and_reported() -> None:
    layer = nn.Sequential(nn.Linear(4, 3))
    with torch.no_grad():
        layer[0].weight.copy_(torch.tensor([[0.0, 1.0, 0.0, 0.0], [0.0, -2.0, 0.0, 0.0], [3.0, 0.0, 0.0, 1.0]]))
    quantize_(layer, QuantizeConfig(bits=8))
    (row,) = quantization_report(layer)
    assert (row["clusters"], row["kept"], row["distinct_nonzero"]) == (3, 4, 3)
    assert torch.equal(layer[0].weight, torch.tensor([[0.0, 1.0, 0.0, 0.0], [0.0, -2.0, 0.0, 0.0], [3.0, 0.0, 0.0, 1.0]]))


def test_fully_pruned_layer_gets_an_empty_codebook() -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    with torch.no_grad():
        model[1].weight.zero_()
    quantize_(model)
    assert codebook_of(model[1]).numel() == 0 and torch.all(model[1].weight == 0)
    assert export_compressed(model, "custom").layers[1].nnz == 0


def test_bad_input() -> None:
    model = quantize_(_build("lenet300"))
    with pytest.raises(ConfigError, match=r"layers \['fc1', 'fc2', 'fc3'\] are already quantized"):
        quantize_(model)
    with pytest.raises(ConfigError, match="model has no weight-shared layer; run quantize_ before export_compressed"):
        export_compressed(build_model("lenet300"), "lenet300")
    plain = build_model("lenet300")
    plain.fc1.register_buffer("weight_mask", torch.ones(3, dtype=torch.bool))
    with pytest.raises(ConfigError, match=r"expected weight_mask to be a bool tensor of shape \(300, 784\)"):
        quantize_(plain)


def test_works_under_distributed_data_parallel(tmp_path) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        model = quantize_(_build("lenet300"), QuantizeConfig(bits=2))
        ddp = nn.parallel.DistributedDataParallel(model)
        opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
        before = codebook_of(model.fc1).detach().clone()
        for _ in range(2):
            opt.zero_grad()
            ddp(torch.randn(8, 784)).square().mean().backward()
            opt.step()
        assert not torch.equal(codebook_of(model.fc1).detach(), before)
        w = model.fc1.weight.detach()
        assert torch.unique(w[w != 0]).numel() <= 4 and torch.all(w[~model.fc1.weight_mask] == 0)
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_forward_and_backward_stay_on_device() -> None:
    model = quantize_(_build("lenet5")).cuda()
    model(torch.randn(2, 1, 28, 28, device="cuda")).sum().backward()
    assert codebook_of(model.fc1).grad.device.type == "cuda"
    cm = export_compressed(model, "lenet5")
    assert cm.layers[0].codebook.dtype == np.float32
