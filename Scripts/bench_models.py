#!/usr/bin/env python3
"""Whole networks, ours beside our peers, measured in the same run; writes the table into
docs/performance.md (section "Whole networks") and prints it.

    .venv-bench/bin/python Scripts/bench_models.py --senet .build-bench/release/senet [--rounds 3]
        [--workloads ID,ID] [--out docs/performance.md] [--machine TEXT]

Each round runs, per workload, `senet bench --json` (fused inference, and --no-fuse for
reference) and then Scripts/bench_peers.py for every peer, so that machine noise hits both; a
cell is the median over rounds of each run's median. Ratio = ours images/s / peer images/s
(> 1: ours is faster); "best peer" is the fastest peer in the same run.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
OURS = {
    "seresnet50-inf-b1": ["--model", "seresnet50", "--batch-size", "1", "--mode", "inference", "--iterations", "10"],
    "seresnet50-inf-b16": ["--model", "seresnet50", "--batch-size", "16", "--mode", "inference", "--iterations", "5"],
    "seresnet50-train-b16": ["--model", "seresnet50", "--batch-size", "16", "--mode", "training", "--iterations", "5"],
    "seresnet20-train-b128": ["--model", "seresnet20", "--input-size", "32", "--num-classes", "10", "--batch-size", "128",
                              "--mode", "training", "--iterations", "10"],
}
PEERS = ["eager", "channels_last", "compile", "onnxruntime"]
NAMES = {"eager": "PyTorch eager (NCHW)", "channels_last": "PyTorch channels_last", "compile": "torch.compile",
         "onnxruntime": "ONNX Runtime", "ours": "ours (fused)", "ours-nofuse": "ours (--no-fuse)"}


def ours(senet, workload, extra, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    out = subprocess.run([senet, "bench", "--json", *OURS[workload], *extra], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["images_per_second"]


def peers(workload, threads, iterations):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    out = subprocess.run([sys.executable, os.path.join(HERE, "bench_peers.py"), "--json", "--threads", str(threads),
                          "--workloads", workload, "--iterations", str(iterations)],
                         env=env, check=True, capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--senet", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workloads", default=",".join(OURS))
    ap.add_argument("--out", default="docs/performance.md")
    ap.add_argument("--machine", default="")
    args = ap.parse_args()
    results = {}  # (workload, who) -> [images/s per round]
    errors = {}
    for r in range(args.rounds):
        for w in args.workloads.split(","):
            print(f"round {r + 1}/{args.rounds}: {w}", file=sys.stderr, flush=True)
            results.setdefault((w, "ours"), []).append(ours(args.senet, w, [], args.threads))
            if "-inf-" in w:
                results.setdefault((w, "ours-nofuse"), []).append(ours(args.senet, w, ["--no-fuse"], args.threads))
            for rec in peers(w, args.threads, 10 if "b1" in w else 5):
                if "error" in rec:
                    errors[(w, rec["peer"])] = rec["error"]
                else:
                    results.setdefault((w, rec["peer"]), []).append(rec["images_per_second"])
    med = {k: statistics.median(v) for k, v in results.items()}
    lines = ["## Whole networks", "",
             f"- Machine: {args.machine or 'this machine'}; {args.threads} threads for every contender.",
             f"- {args.rounds} rounds; each cell is the median over rounds of a run's median images/s "
             "(after warm-up). Ratios are ours ÷ peer, measured in the same run (> 1: ours is faster).",
             "- Reproduce: `make bench` (or `make bench-models` for this section alone).", "",
             "| workload | " + " | ".join(NAMES[p] for p in ["ours", "ours-nofuse"] + PEERS) + " | ours ÷ best peer |",
             "|---|" + "--:|" * (len(PEERS) + 3)]
    for w in args.workloads.split(","):
        cells, best = [], None
        for who in ["ours", "ours-nofuse"] + PEERS:
            v = med.get((w, who))
            if v is None:
                cells.append("fails" if (w, who) in errors else "—")
            else:
                cells.append(f"{v:.2f}")
                if who in PEERS and (best is None or v > best[1]):
                    best = (who, v)
        ratio = f"{med[(w, 'ours')] / best[1]:.2f}× ({NAMES[best[0]]})" if best else "—"
        lines.append(f"| `{w}` | " + " | ".join(cells) + f" | {ratio} |")
    if errors:
        lines += ["", "Peers that could not run a workload:"]
        lines += [f"- {NAMES[p]} on `{w}`: {e}" for (w, p), e in sorted(errors.items())]
    section = "\n".join(lines) + "\n"
    print(section)
    text = open(args.out).read() if os.path.exists(args.out) else "# Performance\n\n"
    if "## Whole networks" in text:
        text = re.sub(r"## Whole networks\n.*?(?=\n## |\Z)", section.rstrip("\n") + "\n", text, flags=re.S)
    else:
        marker = "\n## Results"
        text = text.replace(marker, "\n" + section + marker, 1) if marker in text else text + "\n" + section
    with open(args.out, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
