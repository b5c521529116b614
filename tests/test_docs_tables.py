"""The docs' measured tables (bench/tables.py): each renderer formats figures as the docs show them. That the
committed docs hold what the committed results render is `make check`'s job (a user's `make label-curve`
changes the results in their workspace)."""
import csv
import sys

import pytest

from bench import tables
from bench.curve import FIELDS


def test_every_rendered_table_has_its_place_in_the_docs():
    marked = {m[2] for path in tables.DOCS for m in tables.MARKER.finditer(path.read_text())}
    assert marked == set(tables.tables())


def run(frac, method, seed, acc, seconds=0.0):
    return {"labeled_frac": frac, "method": method, "seed": seed, "test_acc": acc, "train_seconds": seconds}


def test_method_grid_sets_seeds_side_by_side_and_bolds_the_target():
    runs = [run(0.1, "fixmatch", 1, 0.9167, 317.0), run(0.1, "skip", 0, 0.9128, 112.1),
            run(0.1, "fixmatch", 0, 0.91889, 386.2), run(0.1, "skip", 1, 0.9107, 110.1),
            run(1.0, "skip", 0, 0.94639, 160.5), run(0.01, "fixmatch", 0, 0.808, 155.4)]
    assert tables.method_grid(runs, seconds=True).splitlines() == [
        "| labeled_frac (labels) | skip | fixmatch | train s (skip / fixmatch) |",
        "| --- | --- | --- | --- |",
        "| 0.01 (540 + 6,000) |  | 0.8080 | 155 |",
        "| 0.1 (5,400 + 6,000), seed 0 / seed 1 | 0.9128 / 0.9107 | **0.9189 / 0.9167** | 112, 110 / 386, 317 |",
        "| 1.0 (54,000 + 6,000) | 0.9464 | = skip | 160 |",
    ]


def test_ssl_methods_names_what_a_run_alone_sets_and_its_points_over_skip():
    base = ["train.epochs=15", "train.lr=0.03"]
    runs = [dict(run(0.01, "flexmatch", 0, 0.7788, 209.9), overrides=[*base, "ssl.method=flexmatch"]),
            dict(run(0.01, "fixmatch", 0, 0.7972, 192.0),
                 overrides=[*base, "ssl.method=fixmatch", "ssl.dist_align=true"]),
            dict(run(0.01, "skip", 0, 0.7978, 17.4), overrides=base)]
    assert tables.ssl_methods(runs).splitlines()[2:] == [
        "| `skip` | 0.7978 |  | 17 |",
        "| `fixmatch` + `dist_align` | 0.7972 | −0.1 | 192 |",
        "| `flexmatch` | 0.7788 | −1.9 | 210 |",
    ]


def test_the_multiplier_list_has_every_method_on_the_grid_but_skip():
    def point(method, frac, epochs, acc):
        return {"labeled_frac": frac, "method": method, "epochs": epochs, "test_acc": acc, "train_seconds": 60.0}
    points = [point("skip", 0.01, 8, 0.80), point("skip", 0.02, 8, 0.90),
              point("label_propagation", 0.01, 3, 0.85), point("fixmatch", 0.01, 2, 0.79)]
    assert tables.pareto_multipliers(points).splitlines() == [
        "- fixmatch at 0.01 (0.7900 in 1.0 min): no gain, skip at 0.01 reaches 0.8000",
        "- label_propagation at 0.01 (0.8500 in 1.0 min) = skip at 0.014: 1.4x the labels",
    ]


def test_label_curve_reads_the_csv_and_lists_each_run(tmp_path):
    path = tmp_path / "label_curve.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(FIELDS)
        writer.writerow([0.01, "fixmatch", "train.epochs=2", 0, 0.8285, "bn_cnn", 2, "cpu", 370.6, "",
                         "61e22133038a9459e8767e46217a4915"])
        writer.writerow([0.01, "skip", "", 1, 0.837, "bn_cnn", 10, "cuda", 371.5, "",
                         "b0624b68d0d18320442ba24f29423a77"])
        writer.writerow([0.01, "label_propagation", "train.epochs=4", 0, 0.85, "bn_cnn", 4, "cpu", 590.2, 0.8612,
                         "c0ffee00aaaa", "v2"])  # the rows above predate the protocol column: v1
    assert tables.label_curve(tables.curve_runs(path)).splitlines()[2:] == [
        "| v1 | 0.01 (540 + 6,000) | skip |  | 1 | `bn_cnn` | 10 | cuda | 0.8370 | 372 |  | `b0624b68` |",
        "| v1 | 0.01 (540 + 6,000) | fixmatch | `train.epochs=2` | 0 | `bn_cnn` | 2 | cpu | 0.8285 | 371 |  "
        "| `61e22133` |",
        "| v2 | 0.01 (600) | label_propagation | `train.epochs=4` | 0 | `bn_cnn` | 4 | cpu | 0.8500 | 590 | 0.8612 "
        "| `c0ffee00` |",
    ]


def test_cpu_dispatch_marks_unset_variables_and_shortens_the_digest():
    result = {"environment": {"device_name": "AMD EPYC"},
              "runs": [{"ATEN_CPU_CAPABILITY": None, "ONEDNN_MAX_CPU_ISA": "SSE41", "capability": "DEFAULT",
                        "test_acc": 0.87709, "train_seconds": 100.24, "weights_md5": "9be44a70c0c457a9652d02f2"}]}
    other = {"environment": {"device_name": "Intel Xeon"}, "runs": [{**result["runs"][0], "weights_md5": "3cfcf92f"}]}
    assert tables.cpu_dispatch([result, other]).splitlines()[2:] == [
        "| AMD EPYC | (unset) | SSE41 | DEFAULT | `9be44a70…` | 0.8771 | 100.2 |",
        "| Intel Xeon | (unset) | SSE41 | DEFAULT | `3cfcf92f…` | 0.8771 | 100.2 |"]


@pytest.fixture
def doc(tmp_path, monkeypatch):
    """A docs folder of one file holding a stale table `t` among prose; tables renders `t` fresh."""
    path = tmp_path / "docs" / "a.md"
    path.parent.mkdir()
    path.write_text("Intro:\n\n<!-- table: t -->\n| old |\n<!-- /table -->\n\nProse.\n")
    monkeypatch.setattr(tables, "REPO", tmp_path)
    monkeypatch.setattr(tables, "DOCS", [path])
    monkeypatch.setattr(tables, "tables", lambda: {"t": "| new |\n"})
    return path


def test_check_names_the_stale_table_and_writes_nothing(doc, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["bench.tables", "--check"])
    with pytest.raises(SystemExit, match=r"^stale: docs/a.md: t \(run `make docs`\)$"):
        tables.main()
    assert "| old |" in doc.read_text()


def test_the_command_rewrites_only_between_the_markers(doc, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["bench.tables"])
    tables.main()
    assert doc.read_text() == "Intro:\n\n<!-- table: t -->\n| new |\n<!-- /table -->\n\nProse.\n"


def test_a_marker_naming_no_table_is_an_error(doc, monkeypatch):
    doc.write_text("<!-- table: typo -->\n<!-- /table -->\n")
    monkeypatch.setattr(sys, "argv", ["bench.tables", "--check"])
    with pytest.raises(SystemExit, match="no table is named typo"):
        tables.main()


def test_selection_puts_both_rules_side_by_side_on_held_out_labels():
    def rule(epoch, held_out, test):
        return {"epoch": epoch, "held_out": held_out, "test": test}

    runs = [{"labeled_frac": 0.01, "seed": 1, "set": ["train.scheduler=onecycle"],
             "valid_acc_rule": rule(7, 0.82037, 0.8233), "last_rule": rule(10, 0.83121, 0.8276)},
            {"labeled_frac": 0.01, "seed": 0, "set": [], "valid_acc_rule": rule(10, 0.8296, 0.8197),
             "last_rule": rule(10, 0.8296, 0.8197)}]
    assert tables.selection(runs).splitlines()[2:] == [
        "| params.yaml's | 0.01 (600) | 0 | 0.8296 (epoch 10) | 0.8296 | +0.00 | 0.8197 / 0.8197 |",
        "| `train.scheduler=onecycle` | 0.01 (600) | 1 | 0.8204 (epoch 7) | 0.8312 | +1.08 | 0.8233 / 0.8276 |",
    ]


def test_skip_tuning_chooses_per_fraction_on_seed_0s_validation_accuracy_never_on_test():
    def run(frac, aug, seed, valid, test):
        return {"labeled_frac": frac, "overrides": [f"train.augment={aug}"], "seed": seed, "valid_acc": valid,
                "test_acc": test, "train_seconds": 60.0}

    runs = [run(0.01, "none", 0, 0.80, 0.83), run(0.01, "crop", 0, 0.85, 0.81),  # crop: better valid, worse test
            run(0.05, "none", 0, 0.90, 0.88), run(0.01, "crop", 1, 0.95, 0.82), run(0.01, "none", 1, 0.70, 0.80)]
    assert tables.skip_tuning(runs).splitlines()[2:] == [
        "| 0.01 (600) | `train.augment=none` | 0 / 1 | 0.8000 / 0.7000 | 0.8300 / 0.8000 | 0.8150 | 60 / 60 |",
        "| 0.01 (600) | `train.augment=crop` **(chosen)** | 0 / 1 | 0.8500 / 0.9500 | 0.8100 / 0.8200 | 0.8150 | 60 / 60 |",
        "| 0.05 (3,000) | `train.augment=none` **(chosen)** | 0 | 0.9000 | 0.8800 | 0.8800 | 60 |",
    ]


def step_row(variant, ms, **rest):
    return {"model": "bn_cnn", "threads": 2, "batch": 64, "variant": variant, "ms_per_step": ms, **rest}


def test_step_cost_shows_rates_and_the_peak_only_where_the_result_has_them():
    old = {"batch": 64, "rows": [step_row("eager", 43.51, first_step_s=0.1),
                                 step_row("compile", 44.4, first_step_s=12.34),
                                 step_row(tables.TEACHER, 16.2, ms_at_teacher_batch=30.4)]}
    assert tables.step_cost(old).splitlines() == [
        "| model | threads | eager ms | compile ms | teacher pass, no gradient: ms per 64 images at batch 64 / 512 |",
        "| --- | --- | --- | --- | --- |",
        "| `bn_cnn` | 2 | 43.5 | 44.4 (first 12.3 s) | 16.2 / 30.4 |"]
    new = {"batch": 64, "peak_gflops": {"2": {"bfloat16": 602.6, "float32": 151.24}},  # keys sorted, as saved
           "rows": [step_row("eager", 43.51, first_step_s=0.1, gflops=11.52, peak_share=0.0762),
                    step_row("bf16", 30.0, first_step_s=0.1, gflops=16.71, peak_share=0.0277),
                    step_row(tables.TEACHER, 16.2, ms_at_teacher_batch=30.4)]}
    assert tables.step_cost(new).splitlines() == [
        "| model | threads | matmul peak GFLOP/s: float32 / bfloat16 | eager ms · GFLOP/s · share of peak "
        "| bf16 ms · GFLOP/s · share of peak | teacher pass, no gradient: ms per 64 images at batch 64 / 512 |",
        "| --- | --- | --- | --- | --- | --- |",
        "| `bn_cnn` | 2 | 151 / 603 | 43.5 · 11.5 · 7.6% | 30.0 · 16.7 · 2.8% | 16.2 / 30.4 |"]
