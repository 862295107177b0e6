#!/usr/bin/env python3
"""PyTorch (Python API) peer of `cellstate-textgen bench --train-data`.

The training loop of PyTorch's word-language-model example
(github.com/pytorch/examples, word_language_model/main.py and model.py) at
its documented sizes: embeddings 200, hidden 200, 2 LSTM layers, dropout
0.2, bptt 35, batch 20, SGD with lr 20, gradient clipping 0.25, untied,
hidden state carried and detached between segments. It runs on the token ids
cellstate tokenised (so the data and the vocabulary size are the same) and
reports training tokens/s over --steps steps after 10 warm-up steps.

    cellstate-textgen bench --train-data TEXT --dump-ids ids.json
    /usr/bin/python3 bench/word_lm.py ids.json --threads 2
"""
import argparse
import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class RNNModel(nn.Module):
    """model.py's RNNModel (LSTM): encoder -> dropout -> LSTM -> dropout -> decoder."""

    def __init__(self, ntoken, ninp, nhid, nlayers, dropout):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(ntoken, ninp)
        self.rnn = nn.LSTM(ninp, nhid, nlayers, dropout=dropout)
        self.decoder = nn.Linear(nhid, ntoken)
        initrange = 0.1
        nn.init.uniform_(self.encoder.weight, -initrange, initrange)
        nn.init.zeros_(self.decoder.bias)
        nn.init.uniform_(self.decoder.weight, -initrange, initrange)

    def forward(self, x, hidden):
        emb = self.drop(self.encoder(x))
        output, hidden = self.rnn(emb, hidden)
        output = self.drop(output)
        decoded = self.decoder(output).view(-1, self.decoder.out_features)
        return F.log_softmax(decoded, dim=1), hidden


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ids", help="JSON from cellstate-textgen bench --dump-ids")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: every core)")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    data = json.load(open(args.ids))
    ntokens, bsz, bptt, lr, clip = data["vocab_size"], 20, 35, 20.0, 0.25
    ids = torch.tensor(data["ids"], dtype=torch.long)
    nbatch = ids.size(0) // bsz
    train = ids[: nbatch * bsz].view(bsz, -1).t().contiguous()  # main.py's batchify
    model = RNNModel(ntokens, 200, 200, 2, 0.2)
    model.train()
    criterion = nn.NLLLoss()
    weight = next(model.parameters())
    hidden = (weight.new_zeros(2, bsz, 200), weight.new_zeros(2, bsz, 200))
    i, warmup = 0, 10
    start = None
    for step in range(warmup + args.steps):
        if step == warmup:
            start = time.perf_counter()
        if i + 1 + bptt > train.size(0):
            i = 0
            hidden = (weight.new_zeros(2, bsz, 200), weight.new_zeros(2, bsz, 200))
        x, y = train[i : i + bptt], train[i + 1 : i + 1 + bptt].reshape(-1)
        hidden = tuple(h.detach() for h in hidden)
        model.zero_grad()
        output, hidden = model(x, hidden)
        loss = criterion(output, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        for p in model.parameters():
            p.data.add_(p.grad, alpha=-lr)
        i += bptt
    seconds = time.perf_counter() - start
    tokens = args.steps * bptt * bsz
    print(json.dumps({"impl": "pytorch-python", "threads": torch.get_num_threads(), "vocab_size": ntokens,
                      "train_steps": args.steps, "train_tokens_per_s": tokens / seconds,
                      "train_ms_per_step": 1000 * seconds / args.steps, "final_loss": loss.item()}))


if __name__ == "__main__":
    main()
