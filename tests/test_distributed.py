"""Distributed training on the CPU (gloo): real 2-process runs through torchrun, and GPU claiming.

The lockstep sampler itself is tested in test_sampler.py; here whole runs are.
"""
import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import fakes
from dvcrepo import REPO, commit, copy_pipeline, init, run, write_params
from fewlabels import distributed
from fewlabels.params import DistConfig
from test_interrupt import MODEL, TRAIN_ARGS, stage_inputs
from test_label_hiding import SENTINEL

slow = pytest.mark.slow  # whole training runs; the rest of this module is quick


def torchrun(*args: str, cwd: Path = REPO, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    """What each rank of a 2-process FlexMatch run (distribution alignment, EMA teacher, augmentation) recorded."""
    out = tmp_path_factory.mktemp("ddp")
    result = torchrun("--standalone", "--nproc-per-node", "2", str(REPO / "tests" / "ddp_worker.py"), str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


@slow
def test_both_ranks_hold_identical_weights_after_every_step(ranks):
    assert len(ranks[0]["steps"]) > 4 and ranks[0]["steps"] == ranks[1]["steps"]
    assert len(set(ranks[0]["steps"])) == len(ranks[0]["steps"])  # and the weights did move at every step


@slow
def test_both_ranks_hold_the_same_pseudo_labelling_statistics_after_every_step(ranks):
    """Each rank records the whole global batch (every rank's share, gathered), so thresholds never diverge."""
    assert ranks[0]["statistics"] == ranks[1]["statistics"] and len(set(ranks[0]["statistics"])) > 2


@slow
def test_both_ranks_draw_the_same_kind_at_every_step(ranks):
    kinds = [[b["labeled"] for b in r["batches"]] for r in ranks]
    assert kinds[0] == kinds[1] and True in kinds[0] and False in kinds[0]


@slow
def test_every_index_once_per_epoch_across_ranks(ranks):
    for epoch in (1, 2):
        for labeled, name in ((True, "labeled"), (False, "unlabeled")):
            drawn = [i for r in ranks for b in r["batches"] if b["epoch"] == epoch and b["labeled"] == labeled
                     for i in b["indices"]]
            assert sorted(drawn) == ranks[0][name], (epoch, name)
            mine = [{i for b in r["batches"] if b["epoch"] == epoch and b["labeled"] == labeled for i in b["indices"]}
                    for r in ranks]
            assert not mine[0] & mine[1]  # disjoint shares


@slow
def test_no_hidden_label_reaches_any_rank(ranks):
    for r in ranks:
        assert SENTINEL not in r["dataset_labels"]
        for b in r["batches"]:
            assert (b["labels"] is None) != b["labeled"]
            assert b["labels"] is None or SENTINEL not in b["labels"]


@slow
def test_validation_equals_one_process_on_the_same_weights(ranks):
    best = max(ranks[0]["history"], key=lambda row: row["valid_acc"])
    assert ranks[0]["history"] == ranks[1]["history"]  # rank 0's figures, handed to every rank
    assert ranks[0]["single_process_valid"] == [best["valid_loss"], best["valid_acc"]]


def test_torchrun_command_for_one_host_and_for_several():
    one = distributed.torchrun_command(DistConfig(nproc_per_node=2), "stages.train", ["cnn", "a"])
    assert one[1:] == ["-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2", "--standalone",
                       "-m", "stages.train", "cnn", "a"]
    several = distributed.torchrun_command(DistConfig(nproc_per_node=4, nnodes=2, rdzv_endpoint="node0:29400",
                                                      rdzv_id="exp7"), "stages.train", [], node_rank=1)
    assert several[3:] == ["--nnodes", "2", "--nproc-per-node", "4", "--rdzv-backend", "static",
                           "--rdzv-endpoint", "node0:29400", "--rdzv-id", "exp7", "--node-rank", "1",
                           "-m", "stages.train"]


@slow
def test_two_hosts_train_one_model_and_the_dvc_host_writes(tmp_path):
    """Two 'hosts' (two checkouts here, one process each) meet at a static rendezvous on localhost. Node 1
    starts first: under a c10d rendezvous the earlier process (lower pid, same host name) would have taken
    rank 0 and written the outputs into the wrong checkout. Both hosts' torchrun end well: the ranks meet
    before torchrun's exit barrier (distributed.meet). Every wait is bounded and both process groups are reaped,
    whatever happens."""
    endpoint = f"127.0.0.1:{fakes.unassigned_port()}"
    hosts = []
    try:
        for name, node_rank in (("node_b", 1), ("node_a", 0)):
            work = stage_inputs(tmp_path / name, n=300)
            write_params(work, {"models": [MODEL], "labeled_frac": 0.5, "train.epochs": 1, "train.device": "cpu",
                                "dist.nnodes": 2, "dist.rdzv_endpoint": endpoint})
            hosts.append(subprocess.Popen([sys.executable, "-m", "stages.train", *TRAIN_ARGS, "--node-rank",
                                           str(node_rank)], cwd=work, text=True, start_new_session=True,
                                          env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT))
            # node 1 has handed over to torchrun, on its way to the rendezvous, before node 0 starts
            # one process a host: each takes all of its host's cores
            assert f"2 processes, {distributed.cpu_cores()} threads each: " in fakes.read_line(hosts[-1].stdout, 120)
        outputs = [h.communicate(timeout=600)[0] for h in hosts]
    finally:
        for h in hosts:  # torchrun and its workers (a session each); nothing when they ended
            if h.poll() is None:
                os.killpg(h.pid, signal.SIGKILL)
            h.wait()
    report = "\n\n".join(outputs)
    assert [h.returncode for h in hosts] == [0, 0], report
    assert not any("DistStoreError" in out or "Traceback" in out for out in outputs), report
    assert not (tmp_path / "node_b" / "runs" / f"{MODEL}.json").exists()
    record = json.loads((tmp_path / "node_a" / "runs" / f"{MODEL}.json").read_text())
    assert record["world_size"] == 2


def test_a_node_rank_outside_the_run_is_one_line(tmp_path):
    work = stage_inputs(tmp_path / "host", n=300)
    write_params(work, {"models": [MODEL], "train.device": "cpu", "dist.nnodes": 2,
                        "dist.rdzv_endpoint": "127.0.0.1:1"})
    result = subprocess.run([sys.executable, "-m", "stages.train", *TRAIN_ARGS, "--node-rank", "2"], cwd=work,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr == "error: --node-rank must be in [0, dist.nnodes - 1] = [0, 1], got 2\n"


def test_more_processes_than_cores_is_one_line_and_starts_none(tmp_path):
    work = stage_inputs(tmp_path / "host", n=300)
    cores = distributed.cpu_cores()
    write_params(work, {"models": [MODEL], "train.device": "cpu", "dist.nproc_per_node": cores + 1})
    result = subprocess.run([sys.executable, "-m", "stages.train", *TRAIN_ARGS], cwd=work, capture_output=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, text=True)
    assert result.returncode == 1 and result.stdout == ""  # torchrun was never started
    assert result.stderr == (f"error: dist.nproc_per_node={cores + 1} is more than this host's {cores} CPU cores: "
                             f"set it to at most {cores}\n")


# threads -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("omp, cores, nproc, threads", [
    (None, 8, 1, 8), (None, 8, 2, 4), (None, 8, 3, 2), (None, 2, 4, 1),  # a share of the cores, at least one
    ("3", 8, 1, 3), ("3", 8, 2, 3),                                      # the user's OMP_NUM_THREADS wins
])
def test_each_process_gets_a_share_of_the_cores_unless_the_user_says(monkeypatch, omp, cores, nproc, threads):
    monkeypatch.setattr(distributed.joblib, "cpu_count", lambda: cores)
    if omp is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
    assert distributed.cpu_threads(nproc) == threads


@pytest.mark.parametrize("omp", ["0", "two", "", "-1"])
def test_a_bad_omp_num_threads_is_one_line(monkeypatch, omp):
    monkeypatch.setenv("OMP_NUM_THREADS", omp)
    with pytest.raises(distributed.ParamError, match=f"^OMP_NUM_THREADS must be a whole number of threads, 1 or "
                                                     f"more; got '{omp}' \\(unset it"):
        distributed.cpu_threads(1)


# LOKY_MAX_CPU_COUNT caps joblib's count as a CPU quota does (which a test cannot set without root)
@slow
@pytest.mark.parametrize("env, threads", [({"LOKY_MAX_CPU_COUNT": "1"}, 1), ({"OMP_NUM_THREADS": "3"}, 3)])
def test_the_train_stage_trains_with_the_threads_it_may_use(tmp_path, env, threads):
    work = stage_inputs(tmp_path / "host", n=300)
    write_params(work, {"models": [MODEL], "train.epochs": 1, "train.device": "cpu"})
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "LOKY_MAX_CPU_COUNT")}
    result = subprocess.run([sys.executable, "-m", "stages.train", *TRAIN_ARGS], cwd=work, capture_output=True,
                            env={**clean, "PYTHONPATH": str(REPO), **env}, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(rf"unlabeled images, \d+ validation labels \([\d,]+ of [\d,]+ labels\); {threads} CPU threads", result.stdout)
    assert json.loads((work / "runs" / f"{MODEL}.json").read_text())["threads"] == threads


@slow
def test_no_worker_outlives_a_killed_torchrun(tmp_path):
    """The OOM killer (here: kill -9) ends torchrun: its workers must not train on as orphans."""
    import psutil

    work = stage_inputs(tmp_path / "host", n=3000)
    write_params(work, {"models": [MODEL], "labeled_frac": 0.5, "train.epochs": 50, "train.device": "cpu",
                        "dist.nproc_per_node": 2})
    launcher = subprocess.Popen([sys.executable, "-m", "stages.train", *TRAIN_ARGS], cwd=work, text=True,
                                env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
    for line in launcher.stdout:  # rank 0 is training once it says how many images it has
        if "unlabeled images" in line:
            break
    workers = psutil.Process(launcher.pid).children(recursive=True)
    assert len(workers) >= 2, [w.cmdline() for w in workers]
    launcher.kill()  # the stage exec'd torchrun: this is torchrun
    launcher.wait()
    _, alive = psutil.wait_procs(workers, timeout=120)
    assert alive == []


@slow
def test_dvc_exp_run_with_two_processes(tmp_path):
    mirror = tmp_path / "mirror"
    fakes.make_idx_dataset(mirror, n_train=300, n_test=50)
    repo = copy_pipeline(tmp_path / "repo", {
        "models": [MODEL], "train.epochs": 1, "train.device": "cpu",
        "data.sources.fashion_mnist": [mirror.as_uri()]})
    fakes.pin_digests(repo, "fashion_mnist", mirror)
    init(repo)
    commit(repo, "pipeline")
    out = run(repo, "dvc", "exp", "run", "-S", "dist.nproc_per_node=2")
    share = max(1, distributed.cpu_cores() // 2)  # each process's share of the cores, not torchrun's 1
    assert "torch.distributed.run" in out and "(cpu x2)" in out and f"{share} threads each" in out
    record = json.loads((repo / "runs" / f"{MODEL}.json").read_text())
    assert record["world_size"] == 2 and record["threads"] == share
    assert json.loads((repo / "metrics" / f"{MODEL}.json").read_text())[MODEL]["test"]["accuracy"] >= 0


# claiming GPUs --------------------------------------------------------------------------------------

def _claim_and_hold(lock_dir, n_gpus, slots, queue, hold):
    queue.put((os.getpid(), distributed.claim_gpu(n_gpus, lock_dir, slots)))
    if hold:
        signal.pause()  # holds the claim until the test kills it, however slow the machine


def _start_claims(lock_dir, n, n_gpus, slots, hold=True):
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_claim_and_hold, args=(lock_dir, n_gpus, slots, queue, hold)) for _ in range(n)]
    for p in procs:
        p.start()
    return procs, queue


def test_concurrent_experiments_claim_different_gpus_then_share_slots(tmp_path):
    procs, queue = _start_claims(tmp_path, 4, n_gpus=4, slots=2)
    claims = dict(queue.get(timeout=60) for _ in procs)
    assert sorted(claims.values()) == [0, 1, 2, 3]  # every GPU's first slot before any second one
    more, queue2 = _start_claims(tmp_path, 4, n_gpus=4, slots=2)
    assert sorted(queue2.get(timeout=60)[1] for _ in more) == [0, 1, 2, 3]  # then the second slots
    assert distributed.claim_gpu(4, tmp_path, 2, wait=False) == -1  # all 8 slots held
    for p in procs + more:
        p.kill()
        p.join()


def test_a_crashed_experiment_releases_its_gpu(tmp_path):
    procs, queue = _start_claims(tmp_path, 2, n_gpus=2, slots=1)
    claims = dict(queue.get(timeout=60) for _ in procs)
    crashed = next(pid for pid, gpu in claims.items() if gpu == 1)
    os.kill(crashed, signal.SIGKILL)  # no cleanup runs: the kernel drops its lock
    for p in procs:
        if p.pid == crashed:
            p.join()
    late, queue2 = _start_claims(tmp_path, 1, n_gpus=2, slots=1, hold=False)
    assert queue2.get(timeout=60)[1] == 1
    for p in procs + late:
        p.kill()
        p.join()


# leaving a run over several hosts ---------------------------------------------------------------

def test_rank_0_leaves_once_every_other_hosts_agent_reached_the_exit_barrier(monkeypatch):
    """The count torchrun's agents keep in the rendezvous store (one per host whose workers ended) decides: rank 0
    of 3 hosts waits while 1 is in, leaves once 2 are; a run on one host, or a rank other than 0, never opens the
    store. (The waits are faked: each one lets the next host's agent arrive.)"""
    import torch.distributed as torch_dist

    port = fakes.unassigned_port()
    server = torch_dist.TCPStore("127.0.0.1", port, is_master=True, wait_for_workers=False)
    key = f"run7/{distributed.EXIT_BARRIER_KEY}"
    server.add(key, 1)  # host 1 of 3 is in the barrier
    waits = []
    monkeypatch.setattr(distributed.time, "sleep", lambda s: waits.append(server.add(key, 1)))
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(port))
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "run7")
    monkeypatch.setenv("GROUP_WORLD_SIZE", "3")
    distributed.leave_last(distributed.Dist(rank=0, world_size=3))
    assert waits == [2]  # one wait, until host 2 arrived
    monkeypatch.delenv("MASTER_ADDR")  # opening the store now would fail
    distributed.leave_last(distributed.Dist(rank=1, world_size=3))
    monkeypatch.setenv("GROUP_WORLD_SIZE", "1")
    distributed.leave_last(distributed.Dist(rank=0, world_size=2))
    assert waits == [2]
