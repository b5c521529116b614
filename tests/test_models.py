"""The model registry: every model fits both image shapes, known sizes, clear errors."""
import pytest
import torch

from fewlabels.models import MODELS, build_model, count_parameters

SHAPES = [(1, 28), (3, 32)]  # (channels, size): MNIST/Fashion-MNIST and CIFAR-10


@pytest.mark.parametrize("channels,size", SHAPES)
@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("n_classes", [10, 3])
def test_logits_shape(name, channels, size, n_classes):
    torch.manual_seed(0)
    model = build_model(name, channels, size, n_classes).eval()
    out = model(torch.randn(5, channels, size, size))
    assert out.shape == (5, n_classes) and out.dtype == torch.float32
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_models_train_on_a_two_image_batch(name):
    # Training mode (dropout, batch norm with batch statistics) must run and give gradients everywhere.
    model = build_model(name, 1, 28, 10).train()
    model(torch.randn(2, 1, 28, 28)).logsumexp(1).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name,channels,size,expected", [
    ("bn_cnn", 1, 28, 242_250),     # the notebooks' batch-norm CNN on Fashion-MNIST
    ("cifar_tanh", 3, 32, 31_098),  # the CIFAR-10 notebook's CNN
    ("cifar_relu", 3, 32, 31_098),  # same layers, other activation
])
def test_parameter_counts_match_the_notebooks(name, channels, size, expected):
    assert count_parameters(build_model(name, channels, size, 10)) == expected


@pytest.mark.parametrize("a,b", [("cifar_relu", "cifar_tanh"), ("cnn", "simple_cnn")])
@pytest.mark.parametrize("channels,size", SHAPES)
def test_variants_share_their_parameter_count(a, b, channels, size):
    # Activation and dropout change no weights.
    assert count_parameters(build_model(a, channels, size, 10)) == count_parameters(build_model(b, channels, size, 10))


def test_count_parameters_counts_every_weight():
    assert count_parameters(torch.nn.Linear(3, 4)) == 3 * 4 + 4


@pytest.mark.parametrize("name,size", [("lenet", 8), ("cifar_tanh", 16), ("cifar_relu", 21), ("bn_cnn", 4)])
def test_too_small_images_give_a_clear_error(name, size):
    with pytest.raises(ValueError, match=rf"model {name} cannot take 1x{size}x{size} images"):
        build_model(name, 1, size, 10)


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown model 'resnet50'") as err:
        build_model("resnet50", 1, 28, 10)
    for name in MODELS:
        assert name in str(err.value)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_building_leaves_batch_norm_statistics_untouched(name):
    # Sizing the head runs one probe image through the features; it must not count as a training batch.
    model = build_model(name, 1, 28, 10)
    assert all(m.training for m in model.modules())  # the probe's eval() is undone
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            assert module.num_batches_tracked.item() == 0
            assert torch.equal(module.running_mean, torch.zeros_like(module.running_mean))
            assert torch.equal(module.running_var, torch.ones_like(module.running_var))


def test_weights_are_checked_for_values_training_can_leave():
    """What evaluate and resume refuse in a file read back: non-finite or huge weights, a negative variance."""
    from fewlabels.checkpoint import Mismatch, check_values

    state = build_model("bn_cnn", 1, 28, 10).state_dict()
    check_values(state, "state_dict")  # a fresh model passes
    for name, value, message in [("features.0.weight", float("nan"), "holds values that are not finite or beyond 1e.06"),
                                 ("classifier.1.bias", 1e38, "holds values that are not finite or beyond 1e.06"),
                                 ("features.1.running_var", -1.0, "holds a negative variance")]:
        bad = {k: v.clone() for k, v in state.items()}
        bad[name].view(-1)[0] = value
        with pytest.raises(Mismatch, match=f"^state_dict.{name} {message}"):
            check_values(bad, "state_dict")
