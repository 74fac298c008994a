#!/usr/bin/env python3
"""Whole networks, ours beside our peers, measured in the same run; writes the table into
docs/performance.md (section "Whole networks") and prints it.

    .venv-bench/bin/python Scripts/bench_models.py --senet .build-bench/release/senet [--rounds 3]
        [--workloads ID,ID] [--out docs/performance.md] [--machine TEXT] [--no-acceptance]

Each round runs, per workload, `senet bench --json` (fused inference, and --no-fuse for
reference) and then Scripts/bench_peers.py for every peer, so that machine noise hits both; a
cell is the median over rounds of each run's median. "Best peer" is the peer with the highest
median in the run. The ratio ours ÷ best peer is the median over rounds of each round's ratio
(both figures of a round are taken a minute or less apart; the machine's slow periods last
minutes), as the convolution table's ratios are; the ratio of the medians is printed beside it.
Then the issue's other checks: SE overhead (SE-ResNet-50 ÷ ResNet-50 time, ours and PyTorch
eager; ours times the two networks in one process, a batch of each in turn, PyTorch eager's run
back to back; the ratio is again the median of the rounds' ratios), peak resident memory at batch 16 (ours vs PyTorch eager, each in a process of
its own) and batch-16 inference GFLOP/s against `senet-bench sgemm`.
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


# The plain network beside SE-ResNet-50 (the SE overhead check): ours times the two in one
# process, a batch of each in turn (`senet bench --against`), so that both see the same state of
# the machine; PyTorch eager's ("resnet50-inf-b16", "resnet50-train-b16") run back to back.
IN_TURN = {
    "seresnet50-inf-b16": ["--model", "seresnet50", "--against", "resnet50", "--batch-size", "16",
                           "--mode", "inference", "--iterations", "12"],
    "seresnet50-train-b16": ["--model", "seresnet50", "--against", "resnet50", "--batch-size", "16",
                             "--mode", "training", "--iterations", "6"],
}
GFLOP_PER_IMAGE = 8.18  # SE-ResNet-50 at 224², timm layout (4.09 GMACs): the yardstick


def ours_record(senet, args_list, extra, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    out = subprocess.run([senet, "bench", "--json", *args_list, *extra], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def ours(senet, workload, extra, threads):
    return ours_record(senet, OURS[workload], extra, threads)["images_per_second"]


def peers(workload, threads, iterations, only=None):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    cmd = [sys.executable, os.path.join(HERE, "bench_peers.py"), "--json", "--threads", str(threads),
           "--workloads", workload, "--iterations", str(iterations)]
    if only:
        cmd += ["--peers", only]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def sgemm_gflops(bench, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    out = subprocess.run([bench, "sgemm", "--json"], env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["gflops"]


def acceptance(args, rounds):
    """The performance issue's other criteria, each measured `rounds` times (medians): SE overhead
    (ours and PyTorch eager), peak memory at batch 16 (ours vs PyTorch eager, each workload in a
    process of its own), and batch-16 inference efficiency against `senet-bench sgemm`."""
    r = {}
    def add(key, value):
        r.setdefault(key, []).append(value)
    pairs = [("seresnet50-inf-b16", "resnet50-inf-b16"), ("seresnet50-train-b16", "resnet50-train-b16")]
    for i in range(rounds):
        print(f"acceptance round {i + 1}/{rounds}", file=sys.stderr, flush=True)
        add("sgemm", sgemm_gflops(args.senet_bench, args.threads))
        for se, plain in pairs:
            # Ours: the SE network, then the plain one; then PyTorch eager's two.
            rec = ours_record(args.senet, OURS[se], [], args.threads)
            add((se, "ours"), rec["images_per_second"])
            add((se, "ours-rss"), rec["peak_rss_bytes"])
            if se.endswith("inf-b16"):
                add("ours-gflops", rec["images_per_second"] * GFLOP_PER_IMAGE)
            turn = ours_record(args.senet, IN_TURN[se], [], args.threads)
            add((plain, "ours"), turn["against"]["images_per_second"])
            add((se, "ours-in-turn"), turn["images_per_second"])
            add((se, "ours", "se-overhead"), turn["against"]["time_ratio_paired"])
            eager = [p for p in peers(se, args.threads, 5, only="eager") if "error" not in p]
            eager_plain = [p for p in peers(plain, args.threads, 5, only="eager") if "error" not in p]
            if eager:
                add((se, "eager"), eager[0]["images_per_second"])
                add((se, "eager-rss"), eager[0]["peak_rss_bytes"])
            if eager_plain:
                add((plain, "eager"), eager_plain[0]["images_per_second"])
            # PyTorch eager's: time ratio = plain images/s ÷ SE images/s, this round (ours came in turn).
            if (se, "eager") in r and (plain, "eager") in r and len(r[(se, "eager")]) == len(r[(plain, "eager")]) == i + 1:
                add((se, "eager", "se-overhead"), r[(plain, "eager")][-1] / r[(se, "eager")][-1])
    acceptance.raw = r  # every round's figure, for --raw
    m = {k: statistics.median(v) for k, v in r.items()}
    mib = lambda b: f"{b / 2**20:.0f} MiB"
    lines = ["", "### SE overhead, memory and efficiency", "",
             f"{rounds} rounds, medians; PyTorch eager (NCHW) measured beside ours in each round. "
             "The SE overhead is the median of the rounds' ratios; the ratio of the median times follows "
             "in brackets. Ours: in each round one process times the two networks a batch of each in turn "
             "(`senet bench --against resnet50`, 12 pairs in inference, 6 in training), and the round's ratio "
             "is the median of its pairs' ratios. PyTorch eager: the two networks run back to back.", "",
             "| check | ours | PyTorch eager | target |", "|---|--:|--:|---|"]
    for mode, se, plain, target in [("inference", "seresnet50-inf-b16", "resnet50-inf-b16", "≤ 1.03"),
                                    ("training", "seresnet50-train-b16", "resnet50-train-b16", "≤ 1.06")]:
        cells = []
        for who in ["ours", "eager"]:
            a = m.get((se, "ours-in-turn" if who == "ours" else who))
            b, paired = m.get((plain, who)), m.get((se, who, "se-overhead"))
            # time ratio = plain images/s ÷ SE images/s
            cells.append(f"{paired:.3f} ({b / a:.3f})" if a and b and paired else f"{b / a:.3f}" if a and b else "—")
        lines.append(f"| SE-ResNet-50 ÷ ResNet-50 time, {mode} b16 | {cells[0]} | {cells[1]} | {target} |")
    for w, label in [("seresnet50-inf-b16", "inference"), ("seresnet50-train-b16", "training")]:
        o, e = m.get((w, "ours-rss")), m.get((w, "eager-rss"))
        lines.append(f"| peak resident memory, SE-ResNet-50 {label} b16 | {mib(o) if o else '—'} | {mib(e) if e else '—'} | ours ≤ eager |")
    if "sgemm" in m and "ours-gflops" in m:
        lines.append(f"| SE-ResNet-50 inference b16, GFLOP/s ({GFLOP_PER_IMAGE} GFLOP per image) ÷ sgemm 2048³ "
                     f"({m['sgemm']:.0f} GFLOP/s) | {m['ours-gflops'] / m['sgemm']:.0%} | — | ≥ 60% |")
    return lines


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--senet", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workloads", default=",".join(OURS))
    ap.add_argument("--out", default="docs/performance.md")
    ap.add_argument("--machine", default="")
    ap.add_argument("--senet-bench", default="", help="senet-bench executable (default: next to --senet)")
    ap.add_argument("--no-acceptance", action="store_true", help="skip the SE overhead / memory / efficiency checks")
    ap.add_argument("--raw", default="bench-out/models.json",
                    help="where every round's figures are written as JSON (the tables show medians); '' for nowhere")
    args = ap.parse_args()
    if not args.senet_bench:
        args.senet_bench = os.path.join(os.path.dirname(args.senet), "senet-bench")
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

    def paired(w, peer):
        """Median over rounds of ours ÷ peer, each round's two figures (None where a round lacks one)."""
        a, b = results.get((w, "ours"), []), results.get((w, peer), [])
        return statistics.median(x / y for x, y in zip(a, b)) if a and len(a) == len(b) else None
    lines = ["## Whole networks", "",
             f"- Machine: {args.machine or 'this machine'}; {args.threads} threads for every contender.",
             f"- {args.rounds} rounds; each cell is the median over rounds of a run's median images/s "
             "(after warm-up). Ratios are ours ÷ peer, measured in the same run (> 1: ours is faster): "
             "the median over rounds of each round's ratio (a round times ours and the peers a minute "
             "or less apart), then, in brackets, the ratio of the medians.",
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
        pr = paired(w, best[0]) if best else None
        ratio = (f"{pr:.2f}× ({med[(w, 'ours')] / best[1]:.2f}×; {NAMES[best[0]]})" if pr
                 else f"{med[(w, 'ours')] / best[1]:.2f}× ({NAMES[best[0]]})" if best else "—")
        lines.append(f"| `{w}` | " + " | ".join(cells) + f" | {ratio} |")
    if errors:
        lines += ["", "Peers that could not run a workload:"]
        lines += [f"- {NAMES[p]} on `{w}`: {e}" for (w, p), e in sorted(errors.items())]
    if not args.no_acceptance:
        lines += acceptance(args, args.rounds)
    section = "\n".join(lines) + "\n"
    print(section)
    if args.raw:
        key = lambda k: k if isinstance(k, str) else "/".join(k)
        raw = {"machine": args.machine, "threads": args.threads, "rounds": args.rounds,
               "images_per_second": {key(k): v for k, v in results.items()},
               "errors": {key(k): v for k, v in errors.items()},
               "acceptance": {key(k): v for k, v in getattr(acceptance, "raw", {}).items()}}
        os.makedirs(os.path.dirname(args.raw) or ".", exist_ok=True)
        with open(args.raw, "w") as f:
            json.dump(raw, f, indent=1)
    text = open(args.out).read() if os.path.exists(args.out) else "# Performance\n\n"
    # A line that is exactly the section's heading (the notes have a "### Whole networks: …").
    if re.search(r"^## Whole networks$", text, flags=re.M):
        text = re.sub(r"^## Whole networks\n.*?(?=\n## |\Z)", section.rstrip("\n") + "\n", text, flags=re.S | re.M)
    else:
        marker = "\n## Results"
        text = text.replace(marker, "\n" + section + marker, 1) if marker in text else text + "\n" + section
    with open(args.out, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
