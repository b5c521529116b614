"""A params.yaml someone else wrote (a pull request, a pushed experiment): no value of it reaches a shell,
and `dvc repro` / `dvc exp run` check every edit of it before any stage runs."""
import pytest

import fakes
from dvcrepo import commit, copy_pipeline, init, run, stages_run
from fewlabels import params, resume

pytestmark = pytest.mark.slow

MODEL = "lenet"


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A pipeline on a tiny fake Fashion-MNIST, run once and committed: every stage is up to date."""
    tmp = tmp_path_factory.mktemp("untrusted")
    mirror = tmp / "mirror"
    fakes.make_idx_dataset(mirror, n_train=200, n_test=50)
    repo = copy_pipeline(tmp / "repo", {"models": [MODEL], "train.epochs": 1, "train.device": "cpu",
                                        "data.sources.fashion_mnist": [mirror.as_uri()]})
    fakes.pin_digests(repo, "fashion_mnist", mirror)
    init(repo)
    commit(repo, "pipeline")  # DVCLive needs a commit
    run(repo, "dvc", "repro")
    commit(repo, "results")
    return repo


def edit_params(repo, key: str, value) -> None:
    """Set a key in params.yaml as a hand edit would, unchecked."""
    raw = params.read(repo / "params.yaml")
    params.write(params.set_key(raw, key, value), repo / "params.yaml")


def errors(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


@pytest.fixture
def restore(repo):
    """Back to the committed results: the committed params.yaml and metrics, the rest from DVC's cache
    (a stage that fails has its outputs deleted first; a failed experiment may leave others out)."""
    yield
    run(repo, "git", "checkout", "--", ".")
    run(repo, "dvc", "checkout", "-q")
    assert "Data and pipelines are up to date" in run(repo, "dvc", "status")


def test_a_model_name_is_never_run_as_shell_code(repo, restore, tmp_path):
    marker = tmp_path / "pwned"
    hostile = f"{MODEL};touch {marker};true"
    out = run(repo, "dvc", "exp", "run", "-S", f'models=["{hostile}"]', ok=False)
    assert not marker.exists()
    assert stages_run(out) == ["check"], out
    [line] = errors(out)
    assert line.startswith("error: params.yaml: models[0] must be ") and line.endswith(f"got {hostile!r}"), out

    # A single stage, which skips the check stage: DVC itself refuses it, since the model's file, one of the
    # stage's deps (fewlabels/models/${item.model}.py), does not exist; no shell ran the name.
    out = run(repo, "dvc", "repro", "-s", f"train@{hostile}", ok=False)
    assert not marker.exists()
    assert f"failed to reproduce 'train@{hostile}'" in out and f"fewlabels/models/{hostile}.py" in out, out


@pytest.mark.parametrize("key, value, message", [
    ("labeled_fraction", 0.1, "unknown key labeled_fraction; did you mean labeled_frac?"),
    ("split.valid_fraction", 0.2, "unknown key split.valid_fraction; did you mean split.valid_frac?"),
    ("seed\u200b", 1, "unknown key 'seed\\u200b'; did you mean seed?"),
    ("train.amp", 1, "train.amp must be true or false, got 1"),  # DVC: 1 == True, unchanged
    ("seed", False, "seed must be an integer, got False"),       # DVC: False == 0, unchanged
])
def test_every_edit_is_checked_before_any_stage_runs(repo, restore, key, value, message):
    edit_params(repo, key, value)
    out = run(repo, "dvc", "repro", ok=False)
    assert stages_run(out) == ["check"], out
    assert errors(out) == [f"error: params.yaml: {message}"], out


def test_the_check_stage_runs_on_every_edit_and_drops_resume_states_no_run_continues(repo, restore):
    """Ctrl-C keeps a resume state of the settings being tried; going back to settings DVC restores from its
    run cache runs no train code, but the check stage runs (it has no run cache) and deletes that state."""
    tried = params.load(repo / "params.yaml").model_copy(update={"seed": 7})
    edit_params(repo, "seed", 7)
    assert stages_run(run(repo, "dvc", "repro", "check")) == ["check"]
    left = repo / ".resume" / MODEL / (resume.state_name(tried, MODEL, device="cpu") + ".pt")
    left.parent.mkdir(parents=True)
    left.write_bytes(b"the state of an interrupted run")
    run(repo, "git", "checkout", "--", "params.yaml")  # back to the committed params, in the run cache
    out = run(repo, "dvc", "repro")
    assert stages_run(out) == ["check"], out
    assert f"removed .resume/{MODEL}/{left.name}: a resume state of other settings" in out
    assert not (repo / ".resume").exists()
