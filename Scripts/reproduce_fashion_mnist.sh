#!/usr/bin/env bash
# ResNet-20 vs SE-ResNet-20 on Fashion-MNIST: 3 seeds each, the same recipe and budget, then
# docs/reproduction.md (mean ± std test error) and docs/reproduction-curves.svg (`senet plot`).
#
#   Scripts/reproduce_fashion_mnist.sh                 # full data, 15 epochs (about 3 h on 2 cores)
#   LIMIT=6000 EPOCHS=15 Scripts/reproduce_fashion_mnist.sh   # a 10% training subset (about 20 min)
#
# Faster on 2 cores (about 2 h): one instance per model, one thread each, then the report:
#   MODELS=resnet20 REPORT=0 OMP_NUM_THREADS=1 SENET_NUM_THREADS=1 Scripts/reproduce_fashion_mnist.sh &
#   MODELS=seresnet20 REPORT=0 OMP_NUM_THREADS=1 SENET_NUM_THREADS=1 Scripts/reproduce_fashion_mnist.sh
#   wait; Scripts/reproduce_fashion_mnist.sh
#
# Every run: `senet train --recipe quick` (SGD momentum 0.9, lr 0.1 cosine with 5% warm-up,
# weight decay 1e-4, batch 128, random horizontal flips), evaluated on all 10,000 test images.
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS=${EPOCHS:-15}
LIMIT=${LIMIT:-60000}
SEEDS=${SEEDS:-"1 2 3"}
VAL_LIMIT=${VAL_LIMIT:-2000}   # per-epoch curve points on the first 2,000 test images; the final error uses all 10,000
OUT=${OUT:-runs/reproduction}
SENET=${SENET:-.build/release/senet}
mkdir -p "$OUT"
plots=()
for model in ${MODELS:-resnet20 seresnet20}; do
  for seed in $SEEDS; do
    dir="$OUT/$model-seed$seed"
    if [ ! -f "$dir/eval.json" ]; then
      "$SENET" train --model "$model" --data fashion-mnist --recipe quick --epochs "$EPOCHS" --limit "$LIMIT" \
        --val-limit "$VAL_LIMIT" --seed "$seed" --out "$dir" $( [ -f "$dir/last.safetensors" ] && echo --resume )
      "$SENET" eval --model "$model" --weights "$dir/last.safetensors" --data fashion-mnist --json > "$dir/eval.json"
    fi
    plots+=("$model seed $seed=$dir/metrics.jsonl")
  done
done
# REPORT=0: train and evaluate only (e.g. two instances side by side, MODELS=resnet20 and
# MODELS=seresnet20 with OMP_NUM_THREADS=1 each), then run once more without it for the report.
[ "${REPORT:-1}" = 0 ] && exit 0
"$SENET" plot "${plots[@]}" --out docs/reproduction-curves.svg \
  --title "Fashion-MNIST, $EPOCHS epochs on $LIMIT training images: ResNet-20 vs SE-ResNet-20, 3 seeds each"
python3 - "$OUT" "$EPOCHS" "$LIMIT" "$SEEDS" <<'PY'
import json, statistics, sys
out, epochs, limit, seeds = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split()
rows = []
for model in ["resnet20", "seresnet20"]:
    errs = [100 * (1 - json.load(open(f"{out}/{model}-seed{s}/eval.json"))["top1"]) for s in seeds]
    rows.append((model, errs))
with open("docs/reproduction.md", "w") as f:
    f.write("# ResNet-20 vs SE-ResNet-20 on Fashion-MNIST\n\n")
    f.write(f"Measured with `Scripts/reproduce_fashion_mnist.sh` (EPOCHS={epochs}, LIMIT={limit}): `senet train --recipe quick` "
            "(SGD momentum 0.9, lr 0.1 cosine with 5% linear warm-up, weight decay 1e-4, batch 128, random horizontal "
            f"flips, shuffled), {epochs} epochs on " + ("all 60,000 training images" if int(limit) >= 60000 else f"the first {limit} of the 60,000 training images")
            + f", seeds {', '.join(seeds)}; "
            "test error on all 10,000 test images (`senet eval`, last epoch's weights); the per-epoch test curves use the "
            "first 2,000 test images.\n\n")
    f.write("| model | test error per seed (%) | mean ± std (%) |\n|---|---|---|\n")
    for model, errs in rows:
        f.write(f"| `{model}` | {', '.join(f'{e:.2f}' for e in errs)} | "
                f"{statistics.mean(errs):.2f} ± {statistics.stdev(errs):.2f} |\n")
    d = statistics.mean(rows[1][1]) - statistics.mean(rows[0][1])
    se = (sum(statistics.variance(e) / len(e) for _, e in rows)) ** 0.5
    f.write(f"\nSE − plain: {d:+.2f} points of test error (standard error of that difference over the seeds: "
            f"{se:.2f} points). ")
    f.write("The curves (`senet plot`, dashed: training, solid: test) are in `reproduction-curves.svg`.\n\n"
            "![curves](reproduction-curves.svg)\n")
print(open("docs/reproduction.md").read())
PY
