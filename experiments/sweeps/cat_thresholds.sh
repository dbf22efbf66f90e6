#!/usr/bin/env bash
# Issue 38: the gated runs of experiments/sweeps/cat.yaml at other gate thresholds. asr-eval
# --gate-threshold T opens a sub-block where its arbitrator's logit is above T instead of 0
# (-100: every gate open, the trained weights run as an ungated model), so one trained model
# traces its own compute-versus-WER curve, set beside the curve of the compute weights. Run
# from the repository root after the sweep, with ASR_DATA_DIR as the sweep had it:
#   ASR_DATA_DIR=data bash experiments/sweeps/cat_thresholds.sh
# Each evaluation (dev, greedy, about 40 s on 2 cores) goes to the run's
# eval/dev_greedy_gate<T>.json; each threshold's runs are pooled over the seeds in
# experiments/results/cat/gate<T>/ (asr-report --eval, seeds.md).
set -euo pipefail
runs=workdirs/sweeps/cat
asr_eval=${ASR_EVAL:-.venv/bin/asr-eval}
asr_report=${ASR_REPORT:-.venv/bin/asr-report}
declare -A thresholds=(
  [gated_l1]="-100 -2 -1 1 2"
  [gated_l2]="-100 -2 -1 1 2"
  [gated_l3]="-100"
  [gated_l4]="-100"
)
for variant in gated_l1 gated_l2 gated_l3 gated_l4; do
  for t in ${thresholds[$variant]}; do
    for workdir in "$runs"/config=cat.py-"$variant"_seed=*; do
      [ -f "$workdir/eval/dev_greedy_gate$t.json" ] && continue   # done before
      "$asr_eval" --workdir "$workdir" --split dev --gate-threshold "$t" > /dev/null
      echo "$workdir: threshold $t done"
    done
  done
done
for t in $(printf '%s\n' ${thresholds[@]} | sort -un); do
  "$asr_report" --sweep cat --eval "dev_greedy_gate$t" --x compute \
    --out "experiments/results/cat/gate$t" > /dev/null
done
