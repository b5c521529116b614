"""The registries settings pick code by (fewlabels.registry): each name is code of that name, and the schema
offers exactly the names."""
import subprocess
import sys
import typing

import pytest
import torch

from dvcrepo import REPO
from fewlabels import models, params, registry
from fewlabels.params import TrainConfig

REGISTRIES = {"models": (registry.MODELS, params.ModelName), "optimizers": (registry.OPTIMIZERS, params.Optimizer),
              "schedulers": (registry.SCHEDULERS, params.Scheduler), "augment": (registry.AUGMENTS, params.AugmentPolicy),
              "strong": (registry.STRONG_VIEWS, params.StrongAugment)}


@pytest.mark.parametrize("kind", REGISTRIES)
def test_the_schema_offers_exactly_the_registered_names(kind):
    table, choices = REGISTRIES[kind]
    assert typing.get_args(choices) == tuple(table)


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
    for name in REGISTRIES[kind][0]:
        if kind == "augment":
            out = registry.AUGMENTS[name](x)
        else:
            out = registry.STRONG_VIEWS[name](registry.AUGMENTS["crop"], torch.full((1, 1, 1, 1), 0.3),
                                              torch.full((1, 1, 1, 1), 0.35))(x)
        assert out.shape == x.shape and out.dtype == x.dtype


def test_readme_models_table_is_generated_from_the_registry():
    assert models.markdown_table() in (REPO / "README.md").read_text(), (
        "README's models table is stale: paste `python -m fewlabels.models`")
