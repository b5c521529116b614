"""Training one model in several processes (torch.distributed, started by torchrun) and claiming GPUs.

With dist.nproc_per_node x dist.nnodes > 1 the train stage re-executes itself under torchrun, which starts
one process per GPU (or per CPU share) and sets RANK, WORLD_SIZE and LOCAL_RANK in each; the engine then
trains in lockstep (DistributedDataParallel: NCCL on CUDA, gloo on the CPU). Rank 0 alone validates and
writes every output.

GPUs: every training process claims one with an exclusive lock file per GPU (and slot), so queued
experiments (`dvc queue start -j N`) and the ranks of a torchrun run each land on a different GPU, which
DVC's queue itself does not arrange. The kernel drops the lock when the process ends, however it ends.
"""
import ctypes
import datetime
import fcntl
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import joblib
import torch
import torch.distributed as torch_dist

from fewlabels.errors import ParamError
from fewlabels.params import DistConfig

LOCK_DIR_ENV = "FEWLABELS_GPU_LOCK_DIR"  # shared by every process that may claim this host's GPUs
SLOTS_ENV = "FEWLABELS_GPU_SLOTS"        # processes a GPU takes at once (small models leave a GPU idle)
DEFAULT_LOCK_DIR = "/tmp/fewlabels-gpu-locks"
POLL_S = 2.0  # seconds between tries while every GPU slot is taken
# torchrun's exit barrier: each host's agent adds 1 to this key of the rendezvous store when its workers have ended
# (torch/distributed/elastic/agent/server/api.py: _exit_barrier; utils/store.py: barrier; keys under the run id)
EXIT_BARRIER_KEY = "torchelastic/agent/terminal_state/num_members"
LEAVE_LAST_S = 60.0  # at most this long rank 0 waits for the other hosts' agents to reach the exit barrier


@dataclass(frozen=True)
class Dist:
    """This process's place in a distributed run: (0, 1, 0) for a plain single process."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the process that validates, logs and writes outputs."""
        return self.rank == 0

    @classmethod
    def from_env(cls) -> "Dist":
        """As torchrun sets it in each process it starts."""
        env = os.environ
        return cls(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))


def under_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ


def gpu_slots() -> int:
    """FEWLABELS_GPU_SLOTS: processes one GPU takes at once (1 when unset)."""
    text = os.environ.get(SLOTS_ENV, "1")
    if not text.isdigit() or int(text) < 1:
        raise ParamError(f"{SLOTS_ENV} must be a whole number of processes per GPU, 1 or more; got {text!r}")
    return int(text)


def cpu_cores() -> int:
    """The CPUs this process may keep busy: those it may run on (its affinity, which torch counts too) and no more
    than its CPU quota allows (cgroup cpu.max or cpu.cfs_quota_us, e.g. `docker run --cpus 2`), which torch does
    not count: on a 64-core host its 64 threads would share 2 cores' worth of time. joblib reads both."""
    return joblib.cpu_count()


def cpu_threads(nproc: int) -> int:
    """Torch threads for each of `nproc` training processes on this host: OMP_NUM_THREADS when it is set (the
    user's choice), else an equal share of cpu_cores()."""
    text = os.environ.get("OMP_NUM_THREADS")
    if text is None:
        return max(1, cpu_cores() // nproc)
    if not text.isdigit() or int(text) < 1:
        raise ParamError(f"OMP_NUM_THREADS must be a whole number of threads, 1 or more; got {text!r} "
                         "(unset it to use this host's CPUs)")
    return int(text)


def check_fits(cfg: DistConfig, kind: str) -> None:
    """A distributed run within what this host has for its kind of device (inference.device_type): a CPU core
    per process, or a GPU slot per process (visible GPUs x FEWLABELS_GPU_SLOTS). More would oversubscribe it or
    exhaust its memory. Apple's GPU runs one process. (Checked before torchrun starts, without claiming a GPU.)"""
    if kind == "mps":
        raise ParamError("a distributed run (dist.nnodes or dist.nproc_per_node above 1) needs CUDA GPUs or the CPU: "
                         "torch's gloo and nccl do not run on Apple's GPU; set train.device=cpu")
    if kind == "cuda":
        limit, what = torch.cuda.device_count() * gpu_slots(), f"GPUs x {SLOTS_ENV}"
    else:
        limit, what = cpu_cores(), "CPU cores"
    if cfg.nproc_per_node > limit:
        raise ParamError(f"dist.nproc_per_node={cfg.nproc_per_node} is more than this host's {limit} {what}: "
                         f"set it to at most {limit}")


def die_with_launcher() -> None:
    """Have the kernel kill this worker when torchrun, its parent, dies (the OOM killer, kill -9): torchrun
    stops its workers only when it lives to do so, and an orphaned worker would train on, unseen."""
    PR_SET_PDEATHSIG = 1  # linux/prctl.h
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() == 1:  # torchrun died before the request took effect
        os.kill(os.getpid(), signal.SIGKILL)


def torchrun_command(cfg: DistConfig, module: str, args: list[str], node_rank: int = 0) -> list[str]:
    """`python -m torch.distributed.run ... -m <module> <args>` for the run `cfg` describes: one host
    (--standalone: a local rendezvous on a free port) or several. Several meet at a static rendezvous:
    node `node_rank` holds global ranks node_rank x nproc_per_node onwards, so node 0, whose address is
    cfg.rdzv_endpoint and which runs DVC, holds rank 0, the process that writes the outputs. (A c10d
    rendezvous would rank the hosts by host name, and rank 0's outputs could land on another host.)"""
    where = (["--standalone"] if cfg.nnodes == 1 else
             ["--rdzv-backend", "static", "--rdzv-endpoint", cfg.rdzv_endpoint, "--rdzv-id", cfg.rdzv_id,
              "--node-rank", str(node_rank)])
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(cfg.nnodes),
            "--nproc-per-node", str(cfg.nproc_per_node), *where, "-m", module, *args]


def init(dist: Dist, device: torch.device) -> None:
    if dist.world_size > 1 and not torch_dist.is_initialized():
        torch_dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def meet(dist: Dist) -> None:
    """Every rank waits here for the others: called as a run ends well, so all workers exit together and the
    torchrun agents enter their exit barrier together (node 0's agent holds the store the others wait on there:
    leaving it first would cut them off mid-barrier)."""
    if dist.world_size > 1:
        torch_dist.barrier()


def leave_last(dist: Dist) -> None:
    """Rank 0 of a run over several hosts, its outputs written, waits (at most LEAVE_LAST_S) until every other
    host's torchrun agent has checked in at the exit barrier. Host 0's agent holds the store that barrier lives
    in: arriving last, it releases the others before it closes the store, where otherwise a host still waiting
    would lose it and log a DistStoreError traceback (its run was fine). Works through torchrun's store and key;
    if a future torch names them otherwise, the wait runs out and the run ends as before."""
    hosts = int(os.environ.get("GROUP_WORLD_SIZE", 1))  # torchrun's agents: one per host
    if not dist.main or hosts == 1:
        return
    store = torch_dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                                timeout=datetime.timedelta(seconds=LEAVE_LAST_S))
    key = f"{os.environ['TORCHELASTIC_RUN_ID']}/{EXIT_BARRIER_KEY}"
    deadline = time.monotonic() + LEAVE_LAST_S
    while store.add(key, 0) < hosts - 1 and time.monotonic() < deadline:  # add 0: read the count
        time.sleep(0.05)


def shutdown() -> None:
    if torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def broadcast(obj, dist: Dist, device: torch.device):
    """Rank 0's `obj` (any picklable value), on every rank."""
    if dist.world_size == 1:
        return obj
    box = [obj]
    torch_dist.broadcast_object_list(box, src=0, device=device if device.type == "cuda" else None)
    return box[0]


def gather(obj, dist: Dist, device: torch.device) -> list:
    """Every rank's `obj`, in rank order, on every rank."""
    if dist.world_size == 1:
        return [obj]
    out = [None] * dist.world_size
    torch_dist.all_gather_object(out, obj)
    return out


def all_gather_rows(dist: Dist, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Every rank's rows of `tensors`, concatenated in rank order, on every rank. The ranks' row counts may
    differ (a global batch's shares differ by one image): each rank pads to the longest, then trims."""
    rows = torch.tensor([len(tensors[0])], device=tensors[0].device)
    counts = [torch.zeros_like(rows) for _ in range(dist.world_size)]
    torch_dist.all_gather(counts, rows)
    counts = [int(c) for c in counts]
    out = []
    for t in tensors:
        padded = t.new_zeros((max(counts), *t.shape[1:]))
        padded[:len(t)] = t
        parts = [torch.empty_like(padded) for _ in counts]
        torch_dist.all_gather(parts, padded)
        out.append(torch.cat([part[:n] for part, n in zip(parts, counts)]))
    return tuple(out)


def all_sum(values: torch.Tensor, dist: Dist) -> torch.Tensor:
    if dist.world_size > 1:
        torch_dist.all_reduce(values, op=torch_dist.ReduceOp.SUM)
    return values


_claimed = {}  # the lock files this process holds: kept open (and locked) until it exits


def claim_gpu(n_gpus: int, lock_dir: Path | None = None, slots: int | None = None, wait: bool = True) -> int:
    """The index of a GPU this process now holds one of `slots` locks on, filling every GPU's first slot
    before any second one. Blocks while all are taken (or returns -1 with wait=False)."""
    if "index" in _claimed:
        return _claimed["index"]
    lock_dir = Path(lock_dir or os.environ.get(LOCK_DIR_ENV, DEFAULT_LOCK_DIR))
    slots = slots or gpu_slots()
    lock_dir.mkdir(parents=True, exist_ok=True)
    waited = False
    while True:
        for slot in range(slots):
            for gpu in range(n_gpus):
                f = open(lock_dir / f"gpu{gpu}.slot{slot}.lock", "a")  # noqa: SIM115  held for the process's life
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    f.close()
                    continue
                _claimed.update(index=gpu, file=f)
                return gpu
        if not wait:
            return -1
        if not waited:
            print(f"waiting for a free GPU: all {n_gpus} x {slots} slots in {lock_dir} are held "
                  f"(raise {SLOTS_ENV} to share GPUs)", file=sys.stderr, flush=True)
            waited = True
        time.sleep(POLL_S)
