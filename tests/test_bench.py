"""The benchmarks' own logic on tiny data: recipe parsing, stopping at the target, the results table.

The figures themselves come from running bench/ on the real data (bench/README.md); these tests check
that the harness measures what it says it measures.
"""
import json

import numpy as np
import pytest
import torch

from bench import common, report, step_cost, time_to_accuracy
from bench.probes import sweep
from test_engine import separable


def test_sweep_grid_is_every_combination_of_the_values():
    combos = sweep.grid(["train.lr=0.003,0.01", "train.epochs=3", "train.channels_last=true,false"])
    assert combos == [
        {"train.lr": 0.003, "train.epochs": 3, "train.channels_last": True},
        {"train.lr": 0.003, "train.epochs": 3, "train.channels_last": False},
        {"train.lr": 0.01, "train.epochs": 3, "train.channels_last": True},
        {"train.lr": 0.01, "train.epochs": 3, "train.channels_last": False},
    ]


def test_run_indices_split_and_index_with_the_runs_own_seed_as_the_pipeline_does():
    labels = np.repeat(np.arange(10), 100)  # 100 images of each of Fashion-MNIST's 10 classes
    idx = common.run_indices(labels, 0.1, seed=3)
    assert sorted(np.concatenate([idx.train, idx.valid])) == list(range(1000))  # a split: disjoint, complete
    assert sorted(np.concatenate([idx.labeled, idx.unlabeled])) == sorted(idx.train)
    assert set(idx.valid_labeled) < set(idx.valid) and sorted(np.bincount(labels[idx.labeled])) == [9] * 10
    assert len(idx.valid_labeled) == 10  # labeled_frac of the 100 validation images: one of each class
    other = common.run_indices(labels, 0.1, seed=4)  # the split follows the run's seed, not params.yaml's
    assert set(other.valid) != set(idx.valid)


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


def test_a_budget_is_the_fewest_epochs_whose_run_ends_at_the_target_on_validation():
    assert time_to_accuracy.budgets([0.90, 0.925, 0.921, 0.935], (0.92, 0.93, 0.95)) == {0.92: 2, 0.93: 4, 0.95: None}


def test_project_contender_trains_fixed_budgets_and_scores_the_test_set_once_per_target_found(monkeypatch):
    """Budgets 1, 2, 3 are runs of their own (none stops early; the last epoch is kept); target 0 is met on
    validation by the 1-epoch run, whose model alone is scored on the test set; 1.01 never is."""
    cfg = common.train_recipe({"train.batch_size": 20, "train.device": "cpu", "train.patience": 1})
    scored = []
    real = time_to_accuracy.predict_trained
    monkeypatch.setattr(time_to_accuracy, "predict_trained",
                        lambda model, result, images, *a: scored.append(result["epochs_run"]) or real(model, result,
                                                                                                       images, *a))
    result = time_to_accuracy.project_contender("bn_small", cfg, tiny_fashion(), (0.0, 1.01), max_epochs=3)
    assert [r["epochs"] for r in result["runs"]] == [1, 2, 3]
    assert scored == [1]  # the test images, looked at once: for the budget validation chose
    found, missed = result["budgets"]
    assert (found["target"], found["epochs"], found["reached"]) == (0.0, 1, True)
    assert found["train_seconds"] == result["runs"][0]["train_seconds"]
    assert missed == {"target": 1.01, "epochs": None, "train_seconds": None, "test_acc": None, "reached": False}


def test_notebook_contender_keeps_one_run_and_scores_the_test_set_at_each_budget_only(monkeypatch):
    """Validation after every epoch picks each target's epoch; the test set is scored there and nowhere else,
    and a test score short of the target is reported as such, never swapped for a better epoch."""
    valid = iter([0.91, 0.925, 0.94, 0.99])
    test_scores = iter([0.918, 0.931])
    monkeypatch.setattr(time_to_accuracy.notebook, "model_and_optimizer", lambda device: ("model", "opt"))
    monkeypatch.setattr(time_to_accuracy.notebook, "train_loader", lambda indices: "loader")
    monkeypatch.setattr(time_to_accuracy.notebook, "fashion_mnist_set", lambda train: list(range(10)) if train else "test")
    monkeypatch.setattr(time_to_accuracy.notebook, "train_epoch", lambda *a: (2.0, 0.3))
    monkeypatch.setattr(time_to_accuracy.notebook, "accuracy",
                        lambda model, device, data: next(test_scores) if data == "test" else next(valid))
    monkeypatch.setattr(time_to_accuracy, "count_parameters", lambda model: 0)
    result = time_to_accuracy.notebook_contender(torch.device("cpu"), [0, 1, 2], [3, 4], (0.92, 0.93), max_epochs=5)
    assert len(result["history"]) == 3  # stopped once every target had its budget
    assert result["budgets"] == [
        {"target": 0.92, "epochs": 2, "train_seconds": 4.0, "test_acc": 0.918, "reached": False},
        {"target": 0.93, "epochs": 3, "train_seconds": 6.0, "test_acc": 0.931, "reached": True}]


def test_speedup_only_where_both_reached_the_target_on_test():
    row = time_to_accuracy.result_row
    project = {"budgets": [row(0.92, 3, 50.0, 0.925), row(0.93, 6, 100.0, 0.929)]}
    nb = {"budgets": [row(0.92, 5, 400.0, 0.921), row(0.93, 9, 720.0, 0.931)]}
    assert time_to_accuracy.speedups(project, nb) == {"0.92": 8.0, "0.93": None}


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


def test_step_cost_times_each_variant_in_turns_and_the_teacher_at_two_batch_sizes():
    # compiling takes half a minute: the eager variants stand for all of them here (bf16 autocast runs, emulated,
    # on CPUs without bf16 units too)
    variants = {k: v for k, v in step_cost.VARIANTS.items() if k in ("eager", "channels_last", "bf16")}
    threads = torch.get_num_threads()
    try:
        rows = step_cost.measure("bn_cnn", threads=1, batch=8, steps=2, repeats=3, seed=0, variants=variants,
                                 flops=10**9, peaks={"float32": 100.0, "bfloat16": 400.0})
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    assert [r["variant"] for r in rows] == ["eager", "channels_last", "bf16", step_cost.TEACHER]
    for r in rows[:3]:
        assert len(r["runs_ms"]) == 3 and r["ms_per_step"] == sorted(r["runs_ms"])[1] and r["first_step_s"] > 0
        # 1e9 FLOPs a step: GFLOP/s = 1000 / ms a step
        assert r["gflops"] == pytest.approx(1000 / r["ms_per_step"], rel=0.01)
    assert [r["peak_share"] for r in rows[:3]] == pytest.approx(
        [rows[0]["gflops"] / 100, rows[1]["gflops"] / 100, rows[2]["gflops"] / 400], rel=0.01)
    assert rows[3]["ms_per_step"] > 0 and rows[3]["ms_at_teacher_batch"] > 0 and "gflops" not in rows[3]


def test_step_flops_counts_forward_and_backward_matrix_products():
    # a Linear(a, b) at batch n: forward 2nab; backward 2nab for the weight's gradient, and 2nab for its input's
    # only where the input needs one: not the batch's, but a hidden layer's
    n, a, h, b = 4, 5, 6, 3
    x, y = torch.randn(n, a), torch.zeros(n, dtype=torch.long)
    one = torch.nn.Linear(a, b)
    assert step_cost.step_flops(one, x, y) == 2 * n * a * b + 2 * n * a * b
    two = torch.nn.Sequential(torch.nn.Linear(a, h), torch.nn.ReLU(), torch.nn.Linear(h, b))
    assert step_cost.step_flops(two, x, y) == (2 + 2) * n * a * h + (2 + 2 + 2) * n * h * b
    assert one.weight.grad is None and two[0].weight.grad is None  # the nets are left as they were


def test_step_flops_of_a_model_does_not_depend_on_its_batchs_values():
    x = torch.randn(2, 1, 28, 28)
    model = common.fashion_model("bn_cnn").train()
    flops = step_cost.step_flops(model, x, torch.zeros(2, dtype=torch.long))
    assert flops > 0 and flops == step_cost.step_flops(model, torch.zeros_like(x), torch.ones(2, dtype=torch.long))
    assert step_cost.step_flops(model, torch.cat([x, x]), torch.zeros(4, dtype=torch.long)) == 2 * flops


def test_peak_share_divides_by_the_peak_of_the_variants_dtype():
    peaks = {"float32": 50.0, "bfloat16": 200.0}
    assert step_cost.peak_share({"variant": "channels_last", "gflops": 10.0}, peaks) == 0.2
    assert step_cost.peak_share({"variant": "compile", "gflops": 10.0}, peaks) == 0.2
    assert step_cost.peak_share({"variant": "bf16 + channels_last", "gflops": 10.0}, peaks) == 0.05


def test_matmul_gflops_is_a_positive_rate():
    assert step_cost.matmul_gflops(torch.float32, size=64, repeats=2) > 0


def test_operator_shares_rank_a_steps_operators_by_their_share_of_its_time():
    shares = step_cost.operator_shares("cnn", step_cost.VARIANTS["channels_last"], threads=1, batch=4, steps=2,
                                       seed=0, top=10**6)
    fractions = [share for _, share in shares]
    assert fractions == sorted(fractions, reverse=True) and 0.99 <= sum(fractions) <= 1 + 1e-9  # all of them
    assert {"aten::convolution_backward", "aten::bernoulli_"} <= {op for op, _ in shares}  # cnn's conv, dropout
