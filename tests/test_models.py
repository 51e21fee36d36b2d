from __future__ import annotations

from typing import Any

import pytest
import torch

from deepcompress.errors import ConfigError
from deepcompress.models import build_model, count_parameters, register_model


@pytest.mark.parametrize(
    "name, params, input_shape",
    [("lenet300", 266_610, (2, 1, 28, 28)), ("lenet5", 431_080, (2, 1, 28, 28))],
)
def test_lenets_match_the_paper(name: str, params: int, input_shape: tuple[int, ...]) -> None:
    model = build_model(name)
    assert count_parameters(model) == params
    assert model(torch.zeros(input_shape)).shape == (2, 10)


def test_big_models_have_imagenet_parameter_counts() -> None:
    # The paper's Table 1: AlexNet 61M, VGG-16 138M (built on the meta device: no memory used).
    with torch.device("meta"):
        assert count_parameters(build_model("alexnet")) == 60_965_224
        assert count_parameters(build_model("vgg16")) == 138_357_544


def test_unknown_model_lists_known_names() -> None:
    with pytest.raises(ConfigError, match=r"unknown model 'resnet'; expected one of \['alexnet', 'lenet300', 'lenet5', 'vgg16'\]"):
        build_model("resnet")


def test_register_model_makes_a_name_buildable(registry: dict[str, Any]) -> None:
    register_model("tiny", lambda width=2: torch.nn.Linear(3, width))
    assert build_model("tiny", width=5).out_features == 5
    register_model("tiny", lambda: torch.nn.Linear(3, 1))  # a user's own name may be registered again
    assert build_model("tiny").out_features == 1


def test_register_model_rejects_bad_input(registry: dict[str, Any]) -> None:
    with pytest.raises(TypeError, match=r"^register_model: expected a callable returning an nn.Module, got int$"):
        register_model("tiny", 3)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^register_model: 'lenet5' is a built-in model; register yours under another name$"):
        register_model("lenet5", torch.nn.Linear)
    with pytest.raises(ConfigError, match=r"^register_model: expected a non-empty name without ':' or surrounding spaces, got 'my:net'$"):
        register_model("my:net", torch.nn.Linear)
    assert sorted(registry) == ["alexnet", "lenet300", "lenet5", "vgg16"]
