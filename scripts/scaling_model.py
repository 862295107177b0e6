#!/usr/bin/python3
"""When does training on several machines pay? A model from measured figures.

  /usr/bin/python3 scripts/scaling_model.py RUNS.jsonl ALLREDUCE.jsonl [--latency-us 50]

RUNS.jsonl (scripts/bench_distributed.sh): each app's milliseconds per step
on one machine (1 process x 2 threads), and its parameter count;
ALLREDUCE.jsonl (scripts/allreduce_bench.py): Gloo's all-reduce time for
that many floats over loopback on this machine.

Assumptions (stated in the README): each machine is this one (2 cores, one
process with 2 threads, or two with one); the compute of a step divides
evenly among N machines (--batch-size is the global batch, so each trains on
1/N of it); the gradient exchange is a ring all-reduce of the float32
gradient, 2(N-1)/N x G bytes through each machine's link plus 2(N-1)
message latencies, not overlapped with compute (cellstate's default
exchange runs after the backward pass; --dist-bucket-mb's overlap measured
no consistent gain on this machine); the loopback figure is the floor of the
local cost. The runs with --dist-bucket-mb > 0 or over a LINKS link are
left out of the model's inputs.
Prints, per app, the projected speed-up of a step over one machine:
  strong  (the same global batch): C / (C/N + A(N))
  weak    (the global batch grows N-fold): N C / (C + A(N)), examples/s.
"""
import argparse
import json
import sys


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs")
    p.add_argument("allreduce")
    p.add_argument("--latency-us", type=float, default=50.0, help="one message's latency on the network")
    a = p.parse_args()
    runs = [json.loads(l) for l in open(a.runs) if l.strip()]
    loopback = {r["floats"]: r["median_ms"] for r in (json.loads(l) for l in open(a.allreduce) if l.strip())}
    print("| app | parameters | gradient | step on 1 machine (ms) | all-reduce over loopback, 2 ranks (ms) | "
          "2 processes here: measured speed-up | N | 1 Gbit/s: strong / weak | 10 Gbit/s: strong / weak |")
    print("|---|---:|---:|---:|---:|---:|---:|---|---|")
    for app in dict.fromkeys(r["app"] for r in runs):
        one = next((r for r in runs if r["app"] == app and r["processes"] == 1), None)
        two = next((r for r in runs if r["app"] == app and r["processes"] == 2 and not r.get("bucket_mb")
                    and r.get("link", "loopback") == "loopback"), None)
        if not one:
            continue
        c = one["step_ms"]
        g = 4 * one["parameters"]
        local = loopback.get(one["parameters"], 0.0)
        here = two["tokens_per_s"] / one["tokens_per_s"] if two else float("nan")
        for i, n in enumerate((4, 8, 16)):
            cells = []
            for gbit in (1, 10):
                wire = 2 * (n - 1) / n * g * 8 / (gbit * 1e9) * 1000
                allreduce = max(wire, local) + 2 * (n - 1) * a.latency_us / 1000
                strong = c / (c / n + allreduce)
                weak = n * c / (c + allreduce)
                cells.append(f"{strong:.1f}x / {weak:.1f}x")
            head = (f"| {app} | {one['parameters']:,} | {g / 1e6:.1f} MB | {c:.0f} | {local:.1f} | {here:.2f}x"
                    if i == 0 else "| | | | | | ")
            print(f"{head} | {n} | {cells[0]} | {cells[1]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
