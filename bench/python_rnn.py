#!/usr/bin/python3
"""PyTorch (Python API) peer of cellstate-bench: the same sizes, the same
measurements (forward without autograd, forward+backward, or step-by-step
inference), medians after warm-up. Prints one JSON object.

Only a peer for comparisons: nothing in cellstate's product path uses Python.
Needs Debian's python3-torch (scripts/setup.sh --python).
"""
import argparse
import json
import statistics
import sys
import time

import torch


def parse_args():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rnn", choices=["lstm", "gru", "rnn"], default="lstm")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--hidden", type=int, default=650)
    p.add_argument("--input", type=int, default=650)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=35)
    p.add_argument("--bidirectional", action="store_true")
    p.add_argument("--variable-lengths", action="store_true")
    p.add_argument("--step", action="store_true")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--seed", type=int, default=1)
    return p.parse_args()


def median_ms(fn, warmup, repeat):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def lengths_like_cellstate(batch, seq):
    """The same spread over [seq/2, seq] as cellstate-bench uses."""
    lo = max(1, seq // 2)
    if batch == 1:
        return torch.tensor([seq])
    return torch.tensor([lo + (seq - lo) * ((b * 7) % batch) // (batch - 1) for b in range(batch)])


def main():
    a = parse_args()
    threads = a.threads if a.threads > 0 else torch.get_num_threads()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[a.rnn]
    model = cls(a.input, a.hidden, num_layers=a.layers, bidirectional=a.bidirectional)
    x = torch.randn(a.seq, a.batch, a.input)
    lengths = lengths_like_cellstate(a.batch, a.seq) if a.variable_lengths else None
    out = {"impl": "pytorch-python", "torch": torch.__version__, "rnn": a.rnn, "layers": a.layers,
           "hidden": a.hidden, "input": a.input, "batch": a.batch, "seq": a.seq,
           "bidirectional": a.bidirectional, "variable_lengths": a.variable_lengths,
           "step": a.step, "threads": threads, "repeat": a.repeat}

    def run(inp):
        if lengths is None:
            return model(inp)
        packed = torch.nn.utils.rnn.pack_padded_sequence(inp, lengths, enforce_sorted=False)
        y, state = model(packed)
        return torch.nn.utils.rnn.pad_packed_sequence(y, total_length=a.seq)[0], state

    if a.step:
        def step_all():
            with torch.no_grad():
                state = None
                for t in range(a.seq):
                    _, state = model(x[t:t + 1], state)
        out["python_step_ms"] = median_ms(step_all, a.warmup, a.repeat)
    else:
        def forward():
            with torch.no_grad():
                run(x)

        def train():
            model.zero_grad()
            xi = x.detach().requires_grad_(True)
            y, state = run(xi)
            loss = y.sum()
            for s in (state if isinstance(state, tuple) else (state,)):
                loss = loss + s.sum()
            loss.backward()
        fwd, trn = [], []
        for _ in range(a.warmup):
            forward()
            train()
        for _ in range(a.repeat):
            t0 = time.perf_counter()
            forward()
            fwd.append((time.perf_counter() - t0) * 1e3)
            t0 = time.perf_counter()
            train()
            trn.append((time.perf_counter() - t0) * 1e3)
        out["python_forward_ms"] = statistics.median(fwd)
        out["python_train_ms"] = statistics.median(trn)
    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    main()
