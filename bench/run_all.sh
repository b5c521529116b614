#!/usr/bin/env bash
# Every benchmark against the notebooks in one command, then the table:  bash bench/run_all.sh [cpu|cuda]
# On the CPU (default) all four run and write bench/results/{throughput,time_to_accuracy,pipeline_overhead,memory}.json;
# with cuda the two training benchmarks run on the GPU and write *_cuda.json. Other processes make CPU timings
# noisy: every result stores the load average before and after its run.
set -euo pipefail
cd "$(dirname "$0")/.."
device=${1:-cpu}
suffix=$([ "$device" = cpu ] || echo "_$device")
PYTHON=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1  # no progress bars in the log; fit still prints a line per epoch
uptime
"$PYTHON" -m bench.throughput --device "$device" --name "throughput$suffix"
"$PYTHON" -m bench.time_to_accuracy --device "$device" --name "time_to_accuracy$suffix"
if [ "$device" = cpu ]; then
  "$PYTHON" -m bench.pipeline_overhead
  "$PYTHON" -m bench.memory
fi
"$PYTHON" -m bench.report
