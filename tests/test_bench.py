"""The benchmarks' own logic on tiny data: recipe parsing, stopping at the target, the results table.

The figures themselves come from running bench/ on the real data (bench/README.md); these tests check
that the harness measures what it says it measures.
"""
import json

import pytest
import torch

from bench import common, report, step_cost, sweep, time_to_accuracy
from test_engine import separable


def test_sweep_grid_is_every_combination_of_the_values():
    combos = sweep.grid(["train.lr=0.003,0.01", "train.epochs=3", "train.channels_last=true,false"])
    assert combos == [
        {"train.lr": 0.003, "train.epochs": 3, "train.channels_last": True},
        {"train.lr": 0.003, "train.epochs": 3, "train.channels_last": False},
        {"train.lr": 0.01, "train.epochs": 3, "train.channels_last": True},
        {"train.lr": 0.01, "train.epochs": 3, "train.channels_last": False},
    ]


@pytest.mark.parametrize("parse", [sweep.grid, time_to_accuracy.overrides])
def test_a_setting_without_a_value_is_an_error(parse):
    with pytest.raises(SystemExit, match="train.lr"):
        parse(["train.lr"])


def test_train_recipe_takes_train_keys_only_and_validates_them():
    assert common.train_recipe({"train.batch_size": 128}).batch_size == 128
    with pytest.raises(SystemExit, match="only train"):
        common.train_recipe({"ssl.method": "fixmatch"})
    with pytest.raises(SystemExit, match="train.lr"):
        common.train_recipe({"train.lr": -1})


def tiny_fashion(n=120):
    """28x28 images in the layout bench.common.fashion_mnist returns, with a learnable class signal."""
    x, y = separable(n)
    big = torch.nn.functional.interpolate(x.float(), size=28).to(torch.uint8)
    return {"x_train": big.numpy(), "y_train": y.numpy(), "x_test": big[:40].numpy(), "y_test": y[:40].numpy()}


@pytest.mark.parametrize("target, epochs_run", [(0.0, 1), (1.01, 3)])
def test_project_contender_stops_at_the_first_epoch_that_reaches_the_target(target, epochs_run):
    cfg = common.train_recipe({"train.epochs": 3, "train.batch_size": 20, "train.device": "cpu"})
    result = time_to_accuracy.project_contender("bn_small", cfg, tiny_fashion(), target)
    assert result["epochs"] == len(result["history"]) == epochs_run
    assert result["reached"] == (target == 0.0)
    assert result["seconds_to_target"] == (result["train_seconds"] if target == 0.0 else None)
    assert result["train_seconds"] == pytest.approx(sum(r["seconds"] for r in result["history"]))


def test_summary_counts_training_seconds_until_the_target():
    history = [{"seconds": 2.0, "test_acc": 0.90}, {"seconds": 3.0, "test_acc": 0.93}]
    s = time_to_accuracy.summary("x", history, 0.92, train_images=100)
    assert (s["reached"], s["seconds_to_target"], s["epochs"], s["images_per_s"]) == (True, 5.0, 2, 40.0)
    assert time_to_accuracy.summary("x", history[:1], 0.92, train_images=100)["seconds_to_target"] is None


def test_report_rows_say_whether_each_target_is_met(tmp_path, monkeypatch):
    env = {"device": "cpu", "device_name": "AMD EPYC", "command": "python -m bench.memory", "timestamp": "t",
           "load_average_at_start": [0.1, 0.1, 0.1], "others_cpu_share": 0.0, "torch_threads": 2}
    (tmp_path / "memory.json").write_text(json.dumps(
        {"stage": "train@cnn", "epochs": 1, "peak_rss_mib": 3000.0, "target_gib": 2, "target_met": False,
         "environment": env}))
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    [(name, _, cells)] = report.rows()
    assert name == "memory" and cells == ["peak RSS, train@cnn on the CPU (1 epoch)", "", "3,000 MiB", "",
                                          "≤ 2 GiB", "**no**"]


def test_save_writes_the_result_with_the_machines_load(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    monkeypatch.setattr(common, "REPO", tmp_path.parent)
    env = common.environment(torch.device("cpu"))
    common.save("probe", {"figure": 1, "environment": env})
    saved = json.loads((tmp_path / "probe.json").read_text())
    assert saved["figure"] == 1 and saved["environment"]["device"] == "cpu"
    assert 0 <= saved["environment"]["others_cpu_share"] <= 1 and len(saved["environment"]["load_average_at_end"]) == 3


def test_step_cost_times_each_variant_in_turns_and_the_teacher_at_two_batch_sizes(monkeypatch):
    # compiling takes half a minute: the eager variants stand for all of them here
    monkeypatch.setattr(step_cost, "VARIANTS", {k: v for k, v in step_cost.VARIANTS.items() if not v[1]})
    threads = torch.get_num_threads()
    try:
        rows = step_cost.measure("bn_cnn", threads=1, batch=8, steps=2, repeats=3, seed=0)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    assert [r["variant"] for r in rows] == ["eager", "channels_last", step_cost.TEACHER]
    for r in rows[:2]:
        assert len(r["runs_ms"]) == 3 and r["ms_per_step"] == sorted(r["runs_ms"])[1] and r["first_step_s"] > 0
    assert rows[2]["ms_per_step"] > 0 and rows[2]["ms_at_teacher_batch"] > 0
