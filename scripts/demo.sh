#!/usr/bin/env bash
# make demo: the whole main job on the built-in synthetic data, on 2 CPU processes.
#   synth -> build-shards (visible, infrared) -> verify -> torchrun train (2 workers each) -> report
set -euo pipefail
OUT="${1:-demo}"
BIN="$(dirname "$0")/../.venv/bin"
FER="$BIN/fer-dist"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

rm -rf "$OUT/runs" "$OUT/report"
step "1/5 synthetic VIRI-like images (110 subjects, 5 classes, visible + infrared)"
[ -d "$OUT/images/Visible" ] || "$FER" synth "$OUT/images" --subjects 110 --size 128 --seed 0

for modality in visible infrared; do
  step "2/5 shards: $modality (70/15/15, stratified, subject-disjoint)"
  "$FER" build-shards --visible "$OUT/images/Visible" --infrared "$OUT/images/Infrared" \
      --modality "$modality" --split 0.7,0.15,0.15 --group-regex '^(S\d+)_' --seed 0 \
      --resize 64 --out "$OUT/shards/$modality" --overwrite
  step "3/5 verify shards: $modality"
  "$FER" verify-shards "$OUT/shards/$modality"
done

for modality in visible infrared; do
  step "4/5 train ResNet-18 on $modality: torchrun, 2 CPU workers (gloo), LARS-wrapped SGD"
  "$BIN/torchrun" --standalone --nproc-per-node 2 -m fer_dist train --config configs/demo.yaml \
      --set name="$modality" --set data.shards="$OUT/shards/$modality" --out "$OUT/runs/$modality"
done

step "5/5 report: learning curves, confusion heatmaps, peak-window table"
"$FER" report "$OUT/runs/visible" "$OUT/runs/infrared" --out "$OUT/report"
echo
echo "demo done: runs in $OUT/runs, report in $OUT/report (report.md, report.html, PNGs)"
