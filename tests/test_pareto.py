"""The accuracy-per-CPU-minute grid (bench/pareto.py): which runs it queues, how it averages them, and the
label multiplier it reads off skip's curve."""
import math

import pytest

from bench import pareto
from bench.curve import run_key


def tuning_run(frac, overrides, valid, test, seed=0):
    return {"labeled_frac": frac, "overrides": overrides, "seed": seed, "valid_acc": valid, "test_acc": test}


def test_the_tuned_recipe_is_chosen_on_seed_0_validation_never_on_test():
    runs = [tuning_run(0.01, ["train.augment=none"], 0.80, 0.90),
            tuning_run(0.01, ["train.augment=crop"], 0.85, 0.70),
            tuning_run(0.01, ["train.augment=flip_crop"], 0.85, 0.99),  # a tie: the first in the file wins
            tuning_run(0.01, ["train.augment=none"], 0.99, 0.99, seed=1),  # another seed chooses nothing
            tuning_run(0.05, ["train.augment=flip_crop", "train.label_smoothing=0.0"], 0.9, 0.9)]
    assert pareto.tuned_recipes(runs) == {0.01: ("train.augment=crop",),
                                          0.05: ("train.augment=flip_crop", "train.label_smoothing=0.0")}


def test_an_untuned_fraction_takes_the_recipe_of_the_nearest_tuned_one_on_a_log_scale():
    tuned = {0.01: ("a",), 0.05: ("b",)}
    assert [pareto.recipe_for(f, tuned) for f in (0.01, 0.02, 0.03, 0.1, 0.001)] == [
        ("a",), ("a",), ("b",), ("b",), ("a",)]  # 0.02 is 2x from 0.01, 2.5x from 0.05; 0.03: 3x vs 1.7x


def test_the_grid_runs_every_budget_of_skip_and_the_method_per_seed_then_skip_for_the_multiplier():
    tuned = {0.01: ("train.augment=flip_crop",)}
    runs = pareto.cells([0.01, 0.1], ["fixmatch"], [0, 1], tuned, "bn_cnn")
    per_seed = 2 * (len(pareto.BUDGETS["skip"]) + len(pareto.BUDGETS["fixmatch"])) + len(pareto.MULTIPLIER_FRACS) - 1
    assert len(runs) == 2 * per_seed
    assert runs[0] == ["labeled_frac=0.01", "ssl.method=skip", "seed=0", "models=[bn_cnn]",
                       f"train.epochs={pareto.BUDGETS['skip'][0]}", "train.augment=flip_crop"]
    assert runs[len(pareto.BUDGETS["skip"])][-len(pareto.METHOD_SETTINGS["fixmatch"]) - 2:] == [
        "train.epochs=1", "train.augment=flip_crop", *pareto.METHOD_SETTINGS["fixmatch"]]
    assert all("seed=0" in r for r in runs[:per_seed]) and all("seed=1" in r for r in runs[per_seed:])
    extra = runs[per_seed - len(pareto.MULTIPLIER_FRACS) + 1:per_seed]  # 0.1 is in the grid already
    assert [r[0] for r in extra] == [f"labeled_frac={f}" for f in pareto.MULTIPLIER_FRACS if f != 0.1]
    assert all(f"train.epochs={pareto.BUDGETS['skip'][1]}" in r and "ssl.method=skip" in r for r in extra)


def test_the_grid_leaves_out_runs_already_in_the_label_curve():
    tuned = {0.01: ("train.augment=flip_crop",)}
    everything = pareto.cells([0.01], ["fixmatch"], [0, 1], tuned, "bn_cnn")
    kept = {"model": "bn_cnn", "labeled_frac": "0.01", "method": "skip", "seed": "0", "protocol": "v2",
            "recipe": f"train.augment=flip_crop train.epochs={pareto.BUDGETS['skip'][1]}"}
    other_model = dict(kept, model="cnn")
    done = {run_key(kept), run_key(other_model)}  # everything[1]: skip, second budget, seed 0
    assert pareto.cells([0.01], ["fixmatch"], [0, 1], tuned, "bn_cnn", done) == everything[:1] + everything[2:]


def test_recipe_text_is_the_label_curve_column_of_those_overrides():
    assert pareto.recipe_text(("train.augment=flip_crop", "train.label_smoothing=0.1")) == \
        "train.augment=flip_crop train.label_smoothing=0.1"
    assert pareto.recipe_text(("train.label_smoothing=0.0", "train.augment=flip_crop")) == "train.augment=flip_crop"


def row(method, acc, seconds, seed=0, epochs=3, frac=0.01, recipe="train.augment=flip_crop", protocol="v2"):
    """A reports/label_curve.csv row as csv.DictReader gives it back: text."""
    return {"labeled_frac": str(frac), "method": method, "recipe": f"{recipe} train.epochs={epochs}".strip(),
            "seed": str(seed), "test_acc": str(acc), "epochs": str(epochs), "train_seconds": str(seconds),
            "protocol": protocol, "model": "bn_cnn"}


def test_budget_points_average_paired_seeds_per_budget_and_leave_the_old_protocol_out():
    rows = [row("skip", 0.80, 60, seed=0), row("skip", 0.82, 66, seed=1), row("skip", 0.84, 72, seed=2),
            row("skip", 0.85, 120, epochs=6), row("skip", 0.99, 60, seed=3, protocol="v1")]
    points = pareto.budget_points(rows)
    assert [(p["method"], p["recipe"], p["epochs"], p["n"]) for p in points] == [
        ("skip", "train.augment=flip_crop", 3, 3), ("skip", "train.augment=flip_crop", 6, 1)]
    assert points[0]["test_acc"] == pytest.approx(0.82) and points[0]["std"] == pytest.approx(0.02)
    assert points[0]["train_seconds"] == 66.0 and points[1]["std"] == 0.0


def test_grid_points_keep_only_the_grid_methods_with_their_fractions_tuned_recipe():
    tuned = {0.01: ("train.augment=flip_crop",)}
    fixmatch = pareto.recipe_text(tuned[0.01] + pareto.METHOD_SETTINGS["fixmatch"])
    skip = pareto.BUDGETS["skip"][0]
    rows = [row("skip", 0.8, 60, epochs=skip), row("fixmatch", 0.85, 60, epochs=1, recipe=fixmatch),
            row("fixmatch", 0.8, 60, epochs=1), row("label_propagation", 0.9, 60, epochs=skip),
            row("skip", 0.9, 60, epochs=skip, recipe="train.augment=crop"), row("skip", 0.7, 60, epochs=skip + 1)]
    assert [(p["method"], p["test_acc"]) for p in pareto.grid_points(rows, ["fixmatch"], tuned)] == [
        ("fixmatch", 0.85), ("skip", 0.8)]


def test_the_matching_fraction_interpolates_in_log_fraction():
    curve = [(0.01, 0.80), (0.04, 0.90), (0.16, 0.95)]
    assert pareto.matching_fraction(curve, 0.85) == pytest.approx(0.02)  # halfway in log between 0.01 and 0.04
    assert pareto.matching_fraction(curve, 0.95) == pytest.approx(0.16)
    assert pareto.matching_fraction(curve, 0.80) is None  # skip at 0.01 is already as good: no gain to price
    assert pareto.matching_fraction(curve, 0.96) == math.inf


def point(method, frac, epochs, acc, seconds=120.0):
    return {"labeled_frac": frac, "method": method, "recipe": "", "epochs": epochs, "train_seconds": seconds,
            "test_acc": acc, "std": 0.0, "n": 3}


def test_multipliers_compare_the_method_with_skip_at_their_second_budgets():
    mid_skip, mid_fm = pareto.BUDGETS["skip"][1], pareto.BUDGETS["fixmatch"][1]
    points = [point("skip", 0.01, mid_skip, 0.80), point("skip", 0.04, mid_skip, 0.90),
              point("skip", 0.01, pareto.BUDGETS["skip"][0], 0.95),  # another budget: not on the curve
              point("fixmatch", 0.01, mid_fm, 0.85), point("fixmatch", 0.04, mid_fm, 0.89),
              point("fixmatch", 0.02, mid_fm, 0.99), point("fixmatch", 0.01, pareto.BUDGETS["fixmatch"][0], 0.99)]
    assert pareto.multipliers(points, "fixmatch") == [
        "fixmatch at 0.01 (0.8500 in 2.0 min) = skip at 0.020: 2.0x the labels",
        "fixmatch at 0.04 (0.8900 in 2.0 min): no gain, skip at 0.04 reaches 0.9000",
        f"fixmatch at 0.02 (0.9900 in 2.0 min): skip has no run at 0.02 with {mid_skip} epochs to compare"]
    points.append(point("fixmatch", 0.01, mid_fm, 0.95))
    assert pareto.multipliers(points, "fixmatch")[-1].endswith("beyond skip's curve, more than 4.0x the labels")


def test_the_plot_has_a_panel_per_fraction_with_budgets_and_a_line_per_method():
    points = [point("skip", 0.01, 3, 0.80, 60), point("skip", 0.01, 6, 0.82), point("fixmatch", 0.01, 1, 0.81, 60),
              point("fixmatch", 0.01, 2, 0.84), point("skip", 0.05, 3, 0.87), point("skip", 0.05, 6, 0.88),
              point("skip", 0.1, 6, 0.89)]  # one budget only: a multiplier point, no panel
    fig = pareto.plot(points, "bn_cnn")
    assert [ax.get_title() for ax in fig.axes] == ["labeled_frac 0.01", "labeled_frac 0.05"]
    assert len(fig.axes[0].get_lines()) >= 2 and fig.axes[0].get_xscale() == "log"
    assert pareto.markdown(points).splitlines()[2] == "| 0.01 | skip | 3 | 1.0 | 0.8000 ± 0.0000 (3) |"


def test_the_answer_compares_the_best_method_with_tuned_skip_within_the_minutes_and_says_if_the_target_is_met():
    points = [point("skip", 0.01, 4, 0.80, 60), point("skip", 0.01, 8, 0.82, 120),
              point("label_propagation", 0.01, 3, 0.86, 180), point("fixmatch", 0.01, 2, 0.84, 120),
              point("fixmatch", 0.01, 4, 0.99, pareto.MAX_MINUTES * 60 + 1),  # over the budget: left out
              point("skip", 0.05, 4, 0.90, 60), point("fixmatch", 0.05, 2, 0.89, 120), point("skip", 0.1, 8, 0.9, 60)]
    lines = pareto.answer(points).splitlines()[2:]
    target_01, margin_01 = pareto.TARGETS[0.01]
    assert lines[0] == ("| 0.01 | 0.8200 (8 epochs, 2.0 min) | label_propagation 0.8600 (3 epochs, 3.0 min) | +4.0 | "
                        f"≥ {target_01:.3f} and ≥ +{margin_01:.1f} | {'yes' if 0.86 >= target_01 else '**no**'} |")
    assert lines[1].startswith("| 0.05 | 0.9000 (4 epochs, 1.0 min) | fixmatch 0.8900 (2 epochs, 2.0 min) | -1.0 |")
    assert lines[1].endswith("| **no** |")
    assert lines[2].endswith("| not measured |")  # 10%: skip only
