#!/usr/bin/env python3
"""Build docs/performance.md from benchmark JSON lines (stdlib only).

    python3 Scripts/perf_table.py OURS.jsonl TORCH.jsonl \
        [--out docs/performance.md] [--machine "text"] [--threads N]

OURS.jsonl: our benchmark, same schema as `bench_torch.py --json` with
"layout": "ours" (calls on NCHW buffers) and, optionally, "ours_blocked" (activations in the
channel-blocked layout our networks keep: `senet-bench conv --layout blocked`). TORCH.jsonl: `bench_torch.py --json` output ("nchw" and
"channels_last" rows). Lines that are not JSON objects (blank, "#...") are
ignored. One table row per (id, batch, pass); ratio = torch ms / ours ms, so
> 1 means ours is faster. The table is also printed to stdout.

Rounds: `make bench` times every shape on both sides seconds apart within a round, so the k-th
row of a (shape, batch, pass, layout) in each file belongs to round k. Where every layout of a row
has the same number of rounds, a ratio is the median of the per-round ratios (each measured in
the same minute, so the machine's slow periods, minutes long, hit both sides alike); the ratio of
the median times is reported beside it. The "## Whole networks" section of an existing --out file
(written by bench_models.py) is kept.
"""
import argparse
import datetime
import json
import statistics
import math
import os
import re
import sys

PASS_ORDER = {"forward": 0, "backward_data": 1, "backward_weights": 2}
LAYOUTS = ("ours", "ours_blocked", "nchw", "channels_last")


def load(path, rows, order):
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError as e:
                print(f"{path}:{lineno}: skipping bad JSON ({e})", file=sys.stderr)
                continue
            key = (r["id"], int(r["batch"]), r["pass"])
            if r["id"] not in order:
                order[r["id"]] = len(order)
            rows.setdefault(key, {}).setdefault(r["layout"], []).append(r)


def paired_ratio(d, theirs, ours):
    """Median over rounds of theirs_k / ours_k, or None unless both have the same rounds (> 1)."""
    a, b = d.get(theirs), d.get(ours)
    if not a or not b or len(a) != len(b) or len(a) < 2:
        return None
    return statistics.median(x["ms_median"] / y["ms_median"] for x, y in zip(a, b))


def collapse(rows):
    """Several rounds of the same (shape, batch, pass, layout): median of the per-round medians,
    min of the minima, max of the maxima (rounds are interleaved ours/torch by `make bench`)."""
    for d in rows.values():
        for lay, rs in list(d.items()):
            med = statistics.median(r["ms_median"] for r in rs)
            r0 = dict(rs[0])
            r0["gflops"] = r0["gflops"] * r0["ms_median"] / med
            r0["ms_median"] = med
            r0["ms_min"] = min(r["ms_min"] for r in rs)
            r0["ms_max"] = max(r["ms_max"] for r in rs)
            r0["rounds"] = len(rs)
            d[lay] = r0


def fmt_ms(v):
    if v is None:
        return "—"
    return f"{v:.3f}" if v < 100 else f"{v:.1f}"


def fmt_ratio(v):
    return "—" if v is None else f"{v:.2f}×"


def geomean(xs):
    xs = [x for x in xs if x is not None and x > 0]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None


def ratio(theirs, ours):
    """theirs / ours, or None when either is missing."""
    return theirs / ours if theirs and ours else None


def pick(paired, of_medians):
    return paired if paired is not None else of_medians


def status(r_nchw, r_cl):
    if r_nchw is None or r_cl is None:
        return "n/a"
    ge_n, ge_c = r_nchw >= 1.0, r_cl >= 1.0
    if ge_n and ge_c:
        return "faster than both"
    if ge_n:
        return "≥ NCHW, slower than CL"
    if ge_c:
        return "≥ CL, slower than NCHW"
    return "slower than both"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("ours", help="our JSON lines (several rounds may be concatenated)")
    ap.add_argument("torch", help="bench_torch.py JSON lines (likewise)")
    ap.add_argument("--out", default="docs/performance.md",
                    help="markdown file to write ('-' for stdout only)")
    ap.add_argument("--machine", default="(not specified)")
    ap.add_argument("--threads", default=None,
                    help="thread count to report (default: from the JSON rows)")
    args = ap.parse_args(argv)

    rows, order = {}, {}
    # torch first so shapes keep the ResNet-50 order of bench_torch.py
    load(args.torch, rows, order)
    load(args.ours, rows, order)
    paired = {key: {(t, o): paired_ratio(d, t, o) for t in ("nchw", "channels_last")
                    for o in ("ours", "ours_blocked")} for key, d in rows.items()}
    collapse(rows)
    is_paired = any(v is not None for p in paired.values() for v in p.values())
    keys = sorted(rows, key=lambda k: (order[k[0]], k[1], PASS_ORDER.get(k[2], 99), k[2]))

    threads = args.threads
    if threads is None:
        seen = sorted({str(r["threads"]) for d in rows.values() for r in d.values()
                       if "threads" in r})
        threads = ", ".join(seen) if seen else "unknown"

    head = ["shape", "batch", "pass", "ours ms", "torch NCHW ms", "torch CL ms",
            "NCHW/ours", "CL/ours", "NCHW/ours of medians", "ours GFLOP/s", "status", "ours blocked ms", "NCHW/blocked", "CL/blocked"]
    align = ["---", "--:", "---", "--:", "--:", "--:", "--:", "--:", "--:", "--:", "---", "--:", "--:", "--:"]
    blocked_n, blocked_c = [], []
    table = ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    ratios_n, ratios_c = [], []
    per_pass = {}
    n_ge_nchw = n_ge_cl = n_both = n_complete = med_ge_nchw = 0
    for key in keys:
        d = rows[key]
        ms = {lay: (d[lay]["ms_median"] if lay in d else None) for lay in LAYOUTS}
        ours = ms["ours"]
        m_n = ratio(ms["nchw"], ours)
        pk = paired[key]
        r_n = pick(pk[("nchw", "ours")], m_n)
        r_c = pick(pk[("channels_last", "ours")], ratio(ms["channels_last"], ours))
        gf = d["ours"].get("gflops") if "ours" in d else None
        st = status(r_n, r_c)
        if r_n is not None and r_c is not None:
            n_complete += 1
            n_ge_nchw += r_n >= 1.0
            med_ge_nchw += m_n is not None and m_n >= 1.0
            n_ge_cl += r_c >= 1.0
            n_both += r_n >= 1.0 and r_c >= 1.0
            ratios_n.append(r_n)
            ratios_c.append(r_c)
            pp = per_pass.setdefault(key[2], ([], []))
            pp[0].append(r_n)
            pp[1].append(r_c)
        ob = ms["ours_blocked"]
        b_n = pick(pk[("nchw", "ours_blocked")], ratio(ms["nchw"], ob))
        b_c = pick(pk[("channels_last", "ours_blocked")], ratio(ms["channels_last"], ob))
        if b_n is not None and b_c is not None:
            blocked_n.append(b_n)
            blocked_c.append(b_c)
        table.append("| " + " | ".join([
            f"`{key[0]}`", str(key[1]), key[2], fmt_ms(ours), fmt_ms(ms["nchw"]),
            fmt_ms(ms["channels_last"]), fmt_ratio(r_n), fmt_ratio(r_c), fmt_ratio(m_n),
            "—" if gf is None else f"{gf:.1f}", st, fmt_ms(ob), fmt_ratio(b_n), fmt_ratio(b_c)]) + " |")

    gm_n, gm_c = geomean(ratios_n), geomean(ratios_c)
    summary = [
        f"- Rows with all three timings: {n_complete} of {len(keys)}",
        f"- Ours ≥ PyTorch NCHW: {n_ge_nchw} / {n_complete}"
        + (f" (median of the per-round ratios; by the ratio of the median times {med_ge_nchw} / "
           f"{n_complete})" if is_paired else ""),
        f"- Ours ≥ PyTorch channels_last: {n_ge_cl} / {n_complete}",
        f"- Ours ≥ both: {n_both} / {n_complete}",
        f"- Geometric-mean speed-up vs NCHW: {fmt_ratio(gm_n)}; "
        f"vs channels_last: {fmt_ratio(gm_c)} (> 1 means ours is faster)",
    ]
    for p in sorted(per_pass, key=lambda q: PASS_ORDER.get(q, 99)):
        rn, rc = per_pass[p]
        summary.append(f"  - {p}: vs NCHW {fmt_ratio(geomean(rn))}, "
                       f"vs channels_last {fmt_ratio(geomean(rc))} ({len(rn)} rows)")
    if blocked_n:
        summary += [
            f"- The same calls on the channel-blocked activations our networks keep between layers "
            f"(\"ours blocked\": no reorders at the edges): ≥ PyTorch NCHW "
            f"{sum(r >= 1.0 for r in blocked_n)} / {len(blocked_n)}, ≥ channels_last "
            f"{sum(r >= 1.0 for r in blocked_c)} / {len(blocked_c)}; geometric-mean speed-up vs NCHW "
            f"{fmt_ratio(geomean(blocked_n))}, vs channels_last {fmt_ratio(geomean(blocked_c))}",
        ]

    today = datetime.date.today().isoformat()
    # The hand-written analysis lives in docs/performance-notes.md and is carried into every
    # regenerated table, so `make bench` never loses it.
    notes_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "performance-notes.md")
    notes = "## Notes\n\n_(docs/performance-notes.md is missing)_"
    if os.path.exists(notes_path):
        with open(notes_path, encoding="utf-8") as f:
            notes = f.read().strip()

    # bench_models.py's section (whole networks) comes from another run; keep it.
    whole = []
    if args.out and args.out != "-" and os.path.exists(args.out):
        with open(args.out, encoding="utf-8") as f:
            m = re.search(r"^## Whole networks\n.*?(?=\n## |\Z)", f.read(), flags=re.S | re.M)
        if m:
            whole = [m.group(0).rstrip("\n"), ""]

    doc = "\n".join([
        "# Performance: SENet in Swift vs PyTorch and ONNX Runtime (CPU)",
        "",
        f"- Machine: {args.machine}",
        f"- Date: {today}",
        f"- Threads: {threads}",
        "- Shapes: every distinct convolution of ResNet-50 (224×224 input), no bias.",
        "- Passes: `forward`, `backward_data` (grad wrt input), "
        "`backward_weights` (grad wrt weight).",
        "- Times are medians over repeats and rounds; ratio = PyTorch ms / ours ms "
        "(> 1 means ours is faster). CL = channels_last."
        + (" Ratios are medians of the per-round ratios (within a round each shape is timed by "
           "both sides seconds apart); \"NCHW/ours of medians\" is the ratio of the median "
           "times." if is_paired else ""),
        "- \"ours\": our convolution called on NCHW buffers, reorders to and from oneDNN's blocked "
        "layout included (the criterion's column). \"ours blocked\": the same call on activations "
        "in the channel-blocked layout, as it runs inside our networks.",
        "",
        "Reproduce with `make bench` (runs our benchmark and "
        "`Scripts/bench_torch.py --json`, then this script).",
        "",
        "## Summary",
        "",
        *summary,
        "",
        *whole,
        "## Results",
        "",
        *table,
        "",
        notes,
        "",
    ])

    if args.out and args.out != "-":
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(doc)
    print("\n".join(table))
    print()
    print("\n".join(summary))
    if args.out and args.out != "-":
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
