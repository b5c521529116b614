"""Run a command under address-space and CPU limits; write its exit status and its own peak RSS to a file.

Usage: python limited.py REPORT AS_BYTES CPU_SECONDS ARG... (runs `python ARG...`).

A process's peak RSS as the kernel reports it (ru_maxrss) includes the memory of the process it was forked
from, so a stage forked by pytest late in the suite (hundreds of MB) would seem to use that much. This small
process forks the stage instead and reports what wait4 measured: the stage's own peak, to within this
process's ~10 MB.
"""
import os
import resource
import sys

report, as_bytes, cpu_s, *command = sys.argv[1:]
resource.setrlimit(resource.RLIMIT_AS, (int(as_bytes), int(as_bytes)))
resource.setrlimit(resource.RLIMIT_CPU, (int(cpu_s), int(cpu_s)))
pid = os.fork()
if pid == 0:
    os.execv(sys.executable, [sys.executable, *command])
_, status, usage = os.wait4(pid, 0)
with open(report, "w") as f:
    f.write(f"{os.waitstatus_to_exitcode(status)} {usage.ru_maxrss * 1024}\n")  # Linux reports KiB
