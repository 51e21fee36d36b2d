from __future__ import annotations

import pytest
import torch

from deepcompress.errors import ConfigError
from deepcompress.models import build_model, count_parameters


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
