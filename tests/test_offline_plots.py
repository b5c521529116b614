"""`dvc plots show` with no network: the page DVC fills (plots/offline_page.html, named by .dvc/config's
plots.html_template) carries vega, vega-lite and vega-embed inline, at the pinned versions and hashes, and
headless Chromium, offline, draws every plot of the pipeline's plot definitions from it.
"""
import configparser
import hashlib
import importlib.util
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image
from ruamel.yaml import YAML

from dvcrepo import REPO, init, run

PAGE = REPO / "plots" / "offline_page.html"
_spec = importlib.util.spec_from_file_location("offline_page", REPO / "plots" / "offline_page.py")
offline_page = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(offline_page)

# What stages/train.py logs with DVCLive for each model (dvclive/<model>/plots/metrics/<name>.tsv).
TRAIN_CURVES = ("train/loss", "train/acc", "valid/loss", "valid/acc", "lr")
LR = 0.001  # params.yaml's train.lr: constant under the default scheduler, the case that drew a bare 0


def test_page_inlines_each_pinned_script():
    text = PAGE.read_text(encoding="utf-8")
    for package, member, _, sha256 in offline_page.SCRIPTS:
        opening = f"<!-- {package} {member} sha256:{sha256} -->\n<script>\n"
        assert text.count(opening) == 1, f"{package} is not inlined once (python plots/offline_page.py)"
        code = text.split(opening, 1)[1].split("\n</script>", 1)[0]
        assert hashlib.sha256(code.encode("utf-8")).hexdigest() == sha256, f"{package}: inlined code is not the pinned file"


def test_page_loads_nothing_from_the_network():
    text = PAGE.read_text(encoding="utf-8")
    assert not re.search(r"<script[^>]*\bsrc\s*=", text), "a script loaded from elsewhere"
    # DVC inserts its CDN <script src> tags at {scripts}; it fills {plot_divs} and {refresh_tag}.
    assert "{scripts}" not in text and "{plot_divs}" in text and "{refresh_tag}" in text


def test_dvc_config_names_the_page():
    config = configparser.ConfigParser()
    config.read(REPO / ".dvc" / "config")
    assert (REPO / ".dvc" / config["plots"]["html_template"]).resolve() == PAGE  # relative to .dvc/, as DVC reads it


# --- the page drawn in Chromium ----------------------------------------------------------------------------

def fake_plot_files(repo: Path) -> None:
    """The files the pipeline's plot definitions read, with made-up values, for every model in params.yaml."""
    yaml = YAML(typ="safe", pure=True)
    models = yaml.load(REPO / "params.yaml")["models"]
    for model in models:
        metrics = repo / "dvclive" / model / "plots" / "metrics"
        for name in TRAIN_CURVES:
            tsv = metrics / f"{name}.tsv"
            tsv.parent.mkdir(parents=True, exist_ok=True)
            column = name.rpartition("/")[2]
            values = [LR] * 3 if name == "lr" else [0.5, 0.4, 0.35]
            tsv.write_text(f"step\t{column}\n" + "".join(f"{step}\t{v}\n" for step, v in enumerate(values)))
        evaluated = repo / "eval" / model
        evaluated.mkdir(parents=True)
        (evaluated / "confusion.csv").write_text("actual,predicted\nShirt,Shirt\nShirt,Coat\nCoat,Coat\n")
        (evaluated / "per_class.csv").write_text("class,test_accuracy\nShirt,0.5\nCoat,1.0\n")
        Image.new("RGB", (8, 8), "white").save(evaluated / "confusion.png")
    # the label-efficiency curve: one row per run, two methods (one with a recipe), two seeds
    rows = [f"{frac},{method},{recipe},{seed},{0.8 + frac / 10 + seed / 100},{300 + 60 * seed + 100 * frac}"
            for method, recipe in (("skip", ""), ("fixmatch", "train.epochs=2")) for frac in (0.01, 0.1, 1.0)
            for seed in (0, 1)]
    (repo / "reports").mkdir()
    (repo / "reports" / "label_curve.csv").write_text("labeled_frac,method,recipe,seed,test_acc,train_seconds\n"
                                                      + "\n".join(rows) + "\n")
    # the answer drawn: means over seeds per method and budget (bench.pareto.FIELDS)
    (repo / "reports" / "pareto.csv").write_text(
        "labeled_frac,method,recipe,epochs,train_seconds,test_acc,std,n\n"
        "0.01,skip,train.augment=flip_crop,4,110.0,0.836,0.005,3\n"
        "0.01,skip,train.augment=flip_crop,8,220.0,0.837,0.004,3\n"
        "0.01,fixmatch,ssl.warmup_epochs=0,1,125.0,0.833,0.005,3\n"
        "0.01,fixmatch,ssl.warmup_epochs=0,2,245.0,0.837,0.004,3\n")


class VegaDivs(HTMLParser):
    """In a rendered page: which vega plot divs hold a canvas or an SVG, and each one's y-axis tick labels."""

    def __init__(self, ids: list[str]):
        super().__init__()
        self.ids, self.drawn, self.y_ticks = set(ids), set(), {}
        self.stack = []  # (tag, vega div id or None, inside a y axis, inside its tick labels)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        plot, in_y, in_labels = self.stack[-1][1:] if self.stack else (None, False, False)
        if tag == "div" and attrs.get("id") in self.ids:
            plot = attrs["id"]
        if plot and tag in ("canvas", "svg"):
            self.drawn.add(plot)
        in_y = in_y or (attrs.get("aria-label") or "").startswith("Y-axis")  # vega's SVG labels its axes
        in_labels = in_labels or (in_y and "role-axis-label" in (attrs.get("class") or ""))
        self.stack.append((tag, plot, in_y, in_labels))

    def handle_endtag(self, tag):
        while self.stack and self.stack.pop()[0] != tag:
            pass  # elements without an end tag (<br>, <input>) close with their parent

    def handle_data(self, data):
        if self.stack and self.stack[-1][0] == "text" and self.stack[-1][3]:
            self.y_ticks.setdefault(self.stack[-1][1], []).append(data.strip())


@pytest.mark.slow
def test_every_plot_draws_offline_in_chromium(tmp_path):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium)")
    repo = tmp_path / "repo"
    repo.mkdir()
    init(repo)
    for name in ("dvc.yaml", "params.yaml", ".dvc/config", "plots/offline_page.html"):
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, repo / name)
    fake_plot_files(repo)
    shown = run(repo, "dvc", "plots", "show", "-o", "out")
    assert "failed to load" not in shown, shown
    html = (repo / "out" / "index.html").read_text(encoding="utf-8")
    ids = re.findall(r"vegaEmbed\('#([^']+)'", html)
    # per model: 5 training curves, the confusion matrix, per-class accuracy; the label-efficiency curve
    # against the labeled fraction and against the training minutes; and the answer (pareto.csv)
    n_models = len(YAML(typ="safe", pure=True).load(REPO / "params.yaml")["models"])
    assert len(ids) == 7 * n_models + 3 and "<script src" not in html, (ids, "inline scripts expected")

    # No network at all: --disable-background-networking and friends keep Chromium's own requests off too.
    result = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
         "--proxy-server=127.0.0.1:9", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=20000",
         "--dump-dom", (repo / "out" / "index.html").as_uri()],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if re.search(r'CONSOLE.*"(Uncaught|ERROR|Error)', line)]
    assert not errors, "\n".join(errors)
    page = VegaDivs(ids)
    page.feed(result.stdout)
    assert page.drawn == set(ids), f"not drawn: {sorted(set(ids) - page.drawn)}"
    lr_plots = [i for i in ids if i.endswith("_lr_tsv")]
    assert lr_plots and all(page.y_ticks.get(i) == [f"{LR:g}"] for i in lr_plots), \
        {i: page.y_ticks.get(i) for i in lr_plots}
