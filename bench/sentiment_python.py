#!/usr/bin/env python3
"""PyTorch (Python API) peer of `cellstate-sentiment bench`.

Builds the architecture described by a cellstate sentiment model's config
(embedding -> (Bi)LSTM/GRU/RNN -> pooling -> linear -> softmax) with
torch.nn, and times it on the same token ids, batched the same way (sorted
by length, --batch-size), plus one sentence at a time. Tokenisation is
already done (the ids come from `cellstate-sentiment bench --dump-ids`), so
this measures the model alone, while the C++ figure includes tokenisation.

    cellstate-sentiment bench --data DEV --dump-ids ids.json
    /usr/bin/python3 bench/sentiment_python.py ids.json --threads 2
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn as nn


class Classifier(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        m = cfg["model"]
        self.pooling = cfg["classifier"]["pooling"]
        self.bi = m["bidirectional"]
        self.embedding = nn.Embedding(cfg["vocab_size"], m["embed"], padding_idx=0)
        rnn = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[m["rnn"]]
        self.encoder = rnn(m["embed"], m["hidden"], m["layers"], batch_first=True,
                           bidirectional=self.bi, dropout=m["dropout"] if m["layers"] > 1 else 0.0)
        feats = m["hidden"] * (2 if self.bi else 1)
        if self.pooling == "attention":
            self.attention_proj = nn.Linear(feats, m["hidden"])
            self.attention_score = nn.Linear(m["hidden"], 1, bias=False)
        self.output = nn.Linear(feats, len(cfg["labels"]))

    def forward(self, ids, lengths):
        x = self.embedding(ids)
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, state = self.encoder(packed)
        h, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=ids.size(1))
        mask = torch.arange(ids.size(1)).unsqueeze(0) < lengths.unsqueeze(1)
        if self.pooling == "last":
            hn = state[0] if isinstance(state, tuple) else state
            dirs = 2 if self.bi else 1
            pooled = hn[-dirs:].transpose(0, 1).reshape(ids.size(0), -1)
        elif self.pooling == "max":
            pooled = h.masked_fill(~mask.unsqueeze(2), -1e9).max(1).values
        elif self.pooling == "mean":
            pooled = h.sum(1) / lengths.unsqueeze(1).to(h.dtype)
        else:
            scores = self.attention_score(torch.tanh(self.attention_proj(h))).squeeze(2)
            w = torch.softmax(scores.masked_fill(~mask, -1e9), 1).unsqueeze(2)
            pooled = (w * h).sum(1)
        return self.output(pooled)


def batches(ids, batch_size):
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    for s in range(0, len(order), batch_size):
        chunk = order[s:s + batch_size]
        longest = len(ids[chunk[0]])
        t = torch.zeros(len(chunk), longest, dtype=torch.long)
        for k, i in enumerate(chunk):
            t[k, :len(ids[i])] = torch.tensor(ids[i])
        yield t, torch.tensor([len(ids[i]) for i in chunk])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ids", help="JSON written by cellstate-sentiment bench --dump-ids")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: every core)")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with open(args.ids) as f:
        dump = json.load(f)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    # An ensemble model runs every member and averages their probabilities.
    members = [Classifier(dump["config"]).eval() for _ in range(dump["config"].get("ensemble", 1))]

    def model_probs(t, l):
        p = sum(torch.softmax(m(t, l), 1) for m in members)
        return p / len(members)

    ids, bs = dump["ids"], dump["batch_size"]
    rates = []
    with torch.no_grad():
        for t, l in batches(ids[:64], bs):
            model_probs(t, l)
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            for t, l in batches(ids, bs):
                model_probs(t, l)
            rates.append(len(ids) / (time.perf_counter() - t0))
        lat = []
        for s in ids[:200]:
            t0 = time.perf_counter()
            model_probs(torch.tensor([s]), torch.tensor([len(s)]))
            lat.append((time.perf_counter() - t0) * 1000)
    lat.sort()
    print(json.dumps({"impl": "pytorch-python", "threads": torch.get_num_threads(), "members": len(members), "sentences": len(ids),
                      "batch_size": bs, "sentences_per_s": statistics.median(rates),
                      "latency_ms_median": lat[len(lat) // 2], "latency_ms_p90": lat[len(lat) * 9 // 10]}))


if __name__ == "__main__":
    main()
