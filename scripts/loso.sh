#!/bin/bash
# Leave one source out (issue 17 items 3 and 6): for each variant, three round-1 fold models (ImageNet backbone
# frozen, head on cached features; about 10-25 min each on 2 cores), each trained on two sources and measured on
# the source it never saw: that source's train split (Kaggle: every 16th TRAIN image), never a test split.
#     bash scripts/loso.sh [VARIANT...]    # from the repository root; default: no-white-balance white-balance
# A variant is a train flag without its dashes: no-white-balance (the plain model), white-balance, stain-norm; or
# several joined by "+", a value after "=": white-balance+backbone=tf_efficientnet_lite2 (runs named with "_" and "-").
# Results in runs/eval_no_<held-out source>_<variant>.json; `python scripts/loso_table.py` prints the table.
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
measure() {  # fold, variant, data, split, extra...: the held-out source's figures (kept once written)
  local fold=$1 v=$2 data=$3 split=$4; shift 4
  [ -f "runs/eval_no_${fold}_$v.json" ] || wbc evaluate --model "runs/fold_no_${fold}_$v/model.safetensors" --data "$data" \
      --split "$split" "$@" --json "runs/eval_no_${fold}_$v.json" --out "runs/eval_no_${fold}_$v"
}
variants=("$@"); [ ${#variants[@]} -gt 0 ] || variants=(no-white-balance white-balance)
for variant in "${variants[@]}"; do
    v=$(echo "$variant" | tr '+=' '_-')
    read -r -a flags <<< "$(echo "--$variant" | sed 's/+/ --/g; s/=/ /g')"
    train runs/fold_no_pbc_$v --data $K --data $M --manifest $MK --manifest $MM "${flags[@]}"
    measure pbc $v ../shared/data/pbc train --abnormal
    train runs/fold_no_kaggle_$v --data $P --data $M --manifest $MP --manifest $MM "${flags[@]}"
    measure kaggle $v runs/kaggle_train_sub TRAIN
    train runs/fold_no_munich_$v --data $K --data $P --manifest $MK --manifest $MP "${flags[@]}"
    measure munich $v ../shared/data/munich-aml train --abnormal
done
python scripts/loso_table.py
