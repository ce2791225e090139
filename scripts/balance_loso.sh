#!/bin/bash
# Leave one source out, with and without the white balance (issue 17 item 6): six round-1 fold models
# (ImageNet backbone frozen, head on cached features; about 10-25 min each on 2 cores), each measured on the
# source it never saw: that source's train split (Kaggle: every 16th TRAIN image), never a test split.
#     bash scripts/balance_loso.sh            # from the repository root; results in runs/eval_no_*.json
set -e
wbc() { if [ -x .venv/bin/wbc ]; then .venv/bin/wbc "$@"; else command wbc "$@"; fi; }
K="kaggle=../shared/data/blood-cells"; P="pbc=../shared/data/pbc"; M="munich=../shared/data/munich-aml"
MK="kaggle=src/wbc/assets/split_manifest.csv"; MP="pbc=src/wbc/assets/split_pbc.csv"; MM="munich=src/wbc/assets/split_munich.csv"
common="--size 160 --balance pair --bn frozen --round1-epochs 10 --round2-epochs 0 --workers 1"
train() {  # out, sources...; a finished run (its summary.json) is kept, a broken one resumed
  local out=$1; shift
  [ -f "$out/summary.json" ] || wbc train "$@" --out "$out" $common $([ -f "$out/last.pt" ] && echo --resume)
}
mkdir -p runs/kaggle_train_sub/TRAIN
for c in ../shared/data/blood-cells/dataset2-master/images/TRAIN/*/; do
  n=$(basename "$c"); mkdir -p "runs/kaggle_train_sub/TRAIN/$n"
  ls "$c" | LC_ALL=C sort | awk 'NR % 16 == 1' | while read -r f; do ln -sf "$(realpath "$c$f")" "runs/kaggle_train_sub/TRAIN/$n/$f"; done
done
measure() {  # fold, data, split, extra...: the held-out source's figures (kept once written)
  local fold=$1 data=$2 split=$3; shift 3
  [ -f "runs/eval_no_${fold}_$WB.json" ] || wbc evaluate --model "runs/fold_no_${fold}_$WB/model.safetensors" --data "$data" \
      --split "$split" "$@" --json "runs/eval_no_${fold}_$WB.json" --out "runs/eval_no_${fold}_$WB"
}
for wb in white-balance no-white-balance; do
  WB=$wb
  train runs/fold_no_pbc_$wb --data $K --data $M --manifest $MK --manifest $MM --$wb
  train runs/fold_no_kaggle_$wb --data $P --data $M --manifest $MP --manifest $MM --$wb
  train runs/fold_no_munich_$wb --data $K --data $P --manifest $MK --manifest $MP --$wb
  measure pbc ../shared/data/pbc train --abnormal
  measure kaggle runs/kaggle_train_sub TRAIN
  measure munich ../shared/data/munich-aml train --abnormal
done
python scripts/loso_table.py
