#!/usr/bin/python3
"""Plot a cellstate training log (MODEL/train_log.jsonl) as a PNG.

    scripts/plot_training.py MODEL_DIR [-o out.png] [--x epoch|time]

Left axis: training loss; right axis: the dev metric early stopping follows,
named with its direction (and, with --metric KEY, any numeric key of the
"dev" object). Writes NAME-train_log.png in the current directory unless -o
says where (never into the model directory unless asked). Runs under
Debian's /usr/bin/python3 with python3-matplotlib (scripts/setup.sh --python
installs it).
"""
import argparse
import json
import os
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="model directory (or a train_log.jsonl file)")
    ap.add_argument("-o", "--output", help="PNG to write (default: ./NAME-train_log.png)")
    ap.add_argument("--x", choices=["epoch", "time"], default="epoch", help="x axis: epochs or minutes")
    ap.add_argument("--metric", help="key of the dev object to plot instead of the score")
    args = ap.parse_args()

    path = args.model if args.model.endswith(".jsonl") else os.path.join(args.model, "train_log.jsonl")
    try:
        with open(path, encoding="utf-8") as f:
            records = [json.loads(line) for line in f if line.strip()]
    except OSError as e:
        sys.exit(f"plot_training.py: {path}: {e.strerror}")
    except json.JSONDecodeError as e:
        sys.exit(f"plot_training.py: {path}: not JSON lines ({e})")
    if not records:
        sys.exit(f"plot_training.py: {path}: no evaluations logged yet")

    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("plot_training.py: needs matplotlib (Debian: apt-get install python3-matplotlib, "
                 "or scripts/setup.sh --python), run with /usr/bin/python3")

    def series(rs):
        if args.x == "epoch":
            xs = [r.get("epoch_fraction", r.get("epoch", i + 1)) for i, r in enumerate(rs)]
        else:
            xs = [r.get("elapsed_s", 0) / 60 for r in rs]
        loss = [r.get("train_loss") for r in rs]
        if args.metric:
            dev = [r.get("dev", {}).get(args.metric) for r in rs]
        else:
            dev = [r.get("score") for r in rs]
        return xs, loss, dev

    xlabel = "epoch" if args.x == "epoch" else "training time (minutes)"
    # The metric early stopping follows, by task (config.json next to the log).
    metrics = {"sentiment": ("accuracy", "higher"), "ner": ("entity F1", "higher"),
               "textgen": ("nats/char", "lower"), "translate": ("BLEU", "higher")}
    task = None
    try:
        with open(os.path.join(os.path.dirname(path) or ".", "config.json"), encoding="utf-8") as f:
            task = json.load(f).get("task")
    except (OSError, json.JSONDecodeError):
        pass
    name, direction = metrics.get(task, ("score", None))
    dev_label = f"dev {args.metric}" if args.metric else \
        f"dev {name}" + (f" ({direction} is better)" if direction else "")
    # Ensembles log each member's run: one pair of curves per member.
    members = sorted({r.get("member", 0) for r in records})
    fig, ax1 = plt.subplots(figsize=(7, 4))
    ax2 = ax1.twinx()
    for m in members:
        xs, loss, dev = series([r for r in records if r.get("member", 0) == m])
        suffix = f" (member {m + 1})" if len(members) > 1 else ""
        ax1.plot(xs, loss, "o-", color="tab:blue", alpha=1 if m == 0 else 0.5, label="train loss" + suffix)
        ax2.plot(xs, dev, "s-", color="tab:red", alpha=1 if m == 0 else 0.5, label=dev_label + suffix)
    ax1.set_xlabel(xlabel)
    ax1.set_ylabel("train loss", color="tab:blue")
    ax2.set_ylabel(dev_label, color="tab:red")
    ax1.set_title(os.path.basename(os.path.dirname(os.path.abspath(path))) or path)
    fig.tight_layout()
    model_name = os.path.basename(os.path.dirname(os.path.abspath(path))) or "model"
    out = args.output or f"{model_name}-train_log.png"
    fig.savefig(out, dpi=100)
    print(out)


if __name__ == "__main__":
    main()
