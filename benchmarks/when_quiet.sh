#!/usr/bin/env bash
# Run each benchmark command in turn, starting each only once the 1-minute load average is below 0.5
# (figures taken under load were wrong by 4-10x), with the time and load printed before it.
#
#   JAX_PLATFORMS=cpu PYTHONPATH=.:benchmarks benchmarks/when_quiet.sh \
#       "python benchmarks/gemm_peak.py --repeats 7" "python benchmarks/forward_throughput.py --quick"
set -euo pipefail
for command in "$@"; do
  while awk '{ exit !($1 >= 0.5) }' /proc/loadavg; do sleep 10; done
  echo "=== $(date -u +'%Y-%m-%d %H:%M:%S UTC') load $(cut -d' ' -f1-3 /proc/loadavg): $command"
  bash -c "$command"
done
