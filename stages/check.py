"""Stage check: params.yaml against its schema (fewlabels/params.py), before any other stage runs.

DVC reruns a stage only when a param it tracks changes, so without this stage a typo'd key
(`labeled_fraction`), a setting no stage tracks or a value DVC deems unchanged (`-S train.amp=1`: 1 == True)
would pass as "up to date". This stage depends on params.yaml itself and every other stage follows it, so
`dvc repro` and `dvc exp run` check every edit first and stop at a bad one. Its output never changes, so a
valid edit reruns only the stages whose params it touches.

It also removes what interrupted runs left that no run will use: the temporaries beside the data outputs
(fewlabels.atomic) and the train stage's resume states of settings params.yaml no longer has
(fewlabels.resume). A stage that DVC restores from its run cache never runs to do it; this stage has no run
cache (its output is `persist`), so it runs whenever params.yaml differs from dvc.lock's.
"""
from fewlabels import resume
from fewlabels.atomic import remove_stale, write_text
from stages._common import layout, load_params, run

CHECKED = "params.yaml matches the schema in fewlabels/params.py\n"  # the same bytes every time


def main() -> None:
    p = load_params()
    paths = layout(p.dataset)
    for output in (paths.raw, paths.prepared, paths.split / "train.npy", paths.split / "valid.npy",
                   paths.index / "labeled.npy", paths.index / "unlabeled.npy", paths.index / "valid.npy"):
        remove_stale(output)
    for state in resume.sweep(paths.resume_root, p):
        print(f"removed {state}: a resume state of other settings, which no run will continue")
    write_text(paths.checked, CHECKED)
    print("params.yaml: ok")


if __name__ == "__main__":
    run(main)
