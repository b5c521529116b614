"""The report stage: one row per model with the values of its metrics and run files."""
import json
import os
import subprocess
import sys

from dvcrepo import REPO, write_params


def test_report_rows_hold_each_models_values(tmp_path):
    write_params(tmp_path, {"models": ["cnn", "lenet"], "labeled_frac": 0.1, "seed": 3})
    scores = {"cnn": (0.91234, 0.25, 0.9111, 0.93), "lenet": (0.8, 0.5, 0.79, 0.81)}
    for directory in ("metrics", "runs"):
        (tmp_path / directory).mkdir()
    for model, (acc, loss, f1, valid_acc) in scores.items():
        (tmp_path / "metrics" / f"{model}.json").write_text(json.dumps({model: {
            "test": {"accuracy": acc, "loss": loss, "macro_f1": f1},
            "valid": {"accuracy": valid_acc, "loss": 0.2, "macro_f1": 0.9}}}))
        (tmp_path / "runs" / f"{model}.json").write_text(json.dumps({
            "n_parameters": 1199882 if model == "cnn" else 214334, "best_epoch": 7, "train_seconds": 48.26,
            "labels_used": {"train": 5400, "valid": 600, "total": 6000, "of": 60000, "per_class": {}}}))
    result = subprocess.run([sys.executable, "-m", "stages.report"],
                            cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = (tmp_path / "reports/summary.md").read_text().splitlines()
    assert lines[0] == "# fashion_mnist: labeled_frac=0.1, ssl.method=skip, seed=3"
    assert lines[2] == "labels used: 6,000 of 60,000 (10.00%): 5,400 train, 600 valid"
    assert lines[4] == ("| model | params | best epoch | valid acc | test loss | test acc | test macro-F1 | "
                        "train s |")
    assert lines[6:] == ["| cnn | 1,199,882 | 7 | 0.9300 | 0.2500 | 0.9123 | 0.9111 | 48.3 |",
                         "| lenet | 214,334 | 7 | 0.8100 | 0.5000 | 0.8000 | 0.7900 | 48.3 |"]
