"""The registries settings pick code by (fewlabels.registry, fewlabels.methods): each name is code of that
name, params.yaml accepts every registered name and refuses any other with the choices."""
import subprocess
import sys

import pytest
import torch

from dvcrepo import REPO
from fewlabels import models, params, registry
from fewlabels.errors import ParamError
from fewlabels.params import TrainConfig

# each registry and the params.yaml key that picks from it
REGISTRIES = {"models": registry.MODELS, "train.optimizer": registry.OPTIMIZERS,
              "train.scheduler": registry.SCHEDULERS, "train.augment": registry.AUGMENTS,
              "ssl.strong": registry.STRONG_VIEWS, "ssl.method": registry.METHODS}


def with_setting(key: str, name: str) -> dict:
    """The validated params.yaml with `key` set to `name` (and the weight average a method may need)."""
    raw = params.set_key(params.read(REPO / "params.yaml"), key, [name] if key == "models" else name)
    if key == "ssl.method" and name in registry.METHODS and registry.METHODS[name].needs_average:
        raw = params.set_key(raw, "train.ema", 0.99)
    return params.validate(raw).model_dump()


@pytest.mark.parametrize("key", REGISTRIES)
def test_params_accept_every_registered_name_and_refuse_others_naming_the_choices(key):
    section, _, field = key.rpartition(".")
    for name in REGISTRIES[key]:
        picked = with_setting(key, name)
        assert (picked[section][field] if section else picked[field]) == ([name] if key == "models" else name)
    with pytest.raises(ParamError) as refused:
        with_setting(key, "nonexistent")
    assert all(name in str(refused.value) for name in REGISTRIES[key]), refused.value


def test_checking_params_never_imports_torch():
    code = "import sys; from fewlabels import params; params.load('params.yaml'); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_a_name_is_the_code_of_that_name_and_nothing_else():
    assert registry.AUGMENTS["flip_crop"].__name__ == "flip_crop"
    assert "translate" not in registry.AUGMENTS  # a helper of the same module is no choice
    with pytest.raises(KeyError):
        registry.AUGMENTS["translate"]


def test_every_optimizer_and_schedule_builds():
    model = torch.nn.Linear(2, 2)
    for name in registry.OPTIMIZERS:
        for schedule in registry.SCHEDULERS:
            cfg = TrainConfig(optimizer=name, scheduler=schedule)
            optimizer = registry.OPTIMIZERS[name](model.parameters(), cfg)
            scheduler, when = registry.SCHEDULERS[schedule](optimizer, cfg, 10)
            assert isinstance(optimizer, torch.optim.Optimizer)
            assert (scheduler is None) == (when is None) and when in (None, "batch", "epoch", "valid_loss")


@pytest.mark.parametrize("kind", ["augment", "strong"])
def test_every_augmentation_keeps_the_batch_shape(kind):
    x = torch.randn(4, 1, 28, 28)
    for name in registry.AUGMENTS if kind == "augment" else registry.STRONG_VIEWS:
        if kind == "augment":
            out = registry.AUGMENTS[name](x)
        else:
            out = registry.STRONG_VIEWS[name](registry.AUGMENTS["crop"], torch.full((1, 1, 1, 1), 0.3),
                                              torch.full((1, 1, 1, 1), 0.35))(x)
        assert out.shape == x.shape and out.dtype == x.dtype


def test_readme_models_table_is_generated_from_the_registry():
    assert models.markdown_table() in (REPO / "README.md").read_text(), (
        "README's models table is stale: paste `python -m fewlabels.models`")
