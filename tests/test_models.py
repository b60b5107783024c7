"""Models: shapes for every architecture, parameter count, cosine head range, unknown names."""

import pytest
import torch

from gitune.errors import UserError
from gitune.models import MODEL_NAMES, CosineLinear, count_parameters, create_model


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("arch", MODEL_NAMES)
@pytest.mark.parametrize("in_channels", [1, 3])
def test_shapes_all_archs(arch, in_channels):
    torch.manual_seed(0)
    model = create_model(arch, num_classes=7, in_channels=in_channels).eval()
    for size in (28, 32):
        x = torch.randn(2, in_channels, size, size)
        with torch.no_grad():
            feats = model.features(x)
        out = model.head(feats)
        assert out.shape == (2, 7)
        assert feats.ndim == 2 and feats.shape[0] == 2
        assert feats.shape[1] == model.head.in_features


def test_forward_is_head_of_features():
    model = create_model("resnet20", num_classes=5, in_channels=3).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.head(model.features(x)))


def test_small_input_16():
    model = create_model("resnet20", num_classes=3, in_channels=3).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 16, 16)).shape == (1, 3)


def test_resnet_parameter_counts():
    n32 = count_parameters(create_model("resnet32", num_classes=10, in_channels=3))
    assert 450_000 <= n32 <= 480_000
    n20 = count_parameters(create_model("resnet20", num_classes=10, in_channels=3))
    assert 260_000 <= n20 <= 280_000  # option-A shortcuts add no parameters


def test_cosine_head_range_and_type():
    torch.manual_seed(0)
    model = create_model("small_cnn", num_classes=5, in_channels=3, cosine_head=True).eval()
    assert isinstance(model.head, CosineLinear)
    with torch.no_grad():
        out = model(torch.randn(4, 3, 28, 28) * 100)
    assert out.abs().max() <= 1.0
    head = CosineLinear(4, 3)
    with torch.no_grad():
        head.weight.copy_(torch.eye(3, 4))
        out = head(torch.tensor([[2.0, 0.0, 0.0, 0.0], [0.0, -3.0, 0.0, 0.0]]))
    torch.testing.assert_close(out, torch.tensor([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]))


def test_cosine_scale_gives_the_trained_logits():
    # LDAM trains softmax(s · cos): the model must output s · cos so its probabilities are the trained ones.
    torch.manual_seed(0)
    plain = create_model("small_cnn", num_classes=5, in_channels=1, cosine_head=True).eval()
    torch.manual_seed(0)
    scaled = create_model("small_cnn", num_classes=5, in_channels=1, cosine_head=True, cosine_scale=30.0).eval()
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(scaled(x), 30.0 * plain(x))


def test_plain_head_is_linear():
    model = create_model("resnet20", num_classes=4, in_channels=1)
    assert isinstance(model.head, torch.nn.Linear)


def test_gradients_reach_stem():
    model = create_model("resnet20", num_classes=3, in_channels=3)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    assert model.conv1.weight.grad is not None and model.conv1.weight.grad.abs().sum() > 0


def test_unknown_arch():
    with pytest.raises(UserError, match=r"model\.arch: unknown architecture 'resnet33'.*resnet56"):
        create_model("resnet33", num_classes=10, in_channels=3)
