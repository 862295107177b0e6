#!/usr/bin/env python3
"""PyTorch (Python API) peer of `cellstate-translate bench` and of its training.

Builds the attention encoder-decoder a cellstate translation model's config
describes -- shared or separate embeddings, a bidirectional LSTM encoder
(packed sequences), the bridge tanh(W [h_fwd; h_bwd]) to the decoder's
first state, an LSTMCell decoder with input feeding, Luong's general (or
Bahdanau's additive) attention over the unpadded source positions,
h~ = tanh(W_c [context; h]), and the output layer (tied to the target
embeddings through a projection, or its own) -- with torch.nn, loads the
model's weights (weights.pt is a TorchScript archive with PyTorch's
parameter names), and times, on the same inputs (`cellstate-translate bench
--dump-ids`):

* translation: every sentence, sorted by length, in batches of the dump's
  batch size, greedy (beam 1) and beam 5 with the same search as
  cellstate's decode/decoding.h -- per input the 2K best continuations of
  its K beams, a hypothesis ending at eos scored log P / ((5 + |y|) / 6)^0.6,
  an input done when K hypotheses have ended or at ceil(2 * source length)
  + 10 tokens -- written the usual PyTorch way (one top-k over [B, K*V] per
  step, finished inputs dropped from the batch); then the first 100
  sentences one at a time. The best beam-5 hypotheses are compared with the
  ones cellstate found (the dump's "beam5"): the share that agree token for
  token says the two run the same model and search;
* training (with --train-ids, a dump with targets): --train-steps steps of
  the recipe's update -- batches of the dump's pairs of similar length
  (--train-batch, 64 in the recipe) in shuffled order, teacher forcing,
  the target embeddings looked up once per batch, dropout, the output layer
  over the real target positions, cross-entropy
  with label smoothing 0.1, Adam 1e-3, gradient clipping at 1 -- after 3
  steps of warm-up; tokens/s counts the predicted target tokens, as
  cellstate's train_log.jsonl does.

    cellstate-translate bench --src DEV --dump-ids dev.json
    cellstate-translate bench --src TRAIN.src --tgt TRAIN.tgt --dump-ids train.json
    /usr/bin/python3 bench/translate_python.py dev.json --weights MODEL/weights.pt --train-ids train.json
"""
import argparse
import json
import math
import random
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Seq2Seq(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        m, s = cfg["model"], cfg["seq2seq"]
        E, H, L = m["embed"], m["hidden"], m["layers"]
        D = 2 * H
        self.layers, self.hidden, self.general = L, H, s["attention"] == "general"
        self.input_feeding, self.tie = s["input_feeding"], s["tie"]
        self.source_embedding = nn.Embedding(s["source_vocab"], E, padding_idx=0)
        if s["share_embeddings"]:
            self.target_embedding = self.source_embedding
        else:
            self.target_embedding = nn.Embedding(s["target_vocab"], E, padding_idx=0)
        self.encoder = nn.LSTM(E, H, L, batch_first=True, bidirectional=True,
                               dropout=m["dropout"] if L > 1 else 0.0)
        for l in range(L):
            setattr(self, f"bridge_h_l{l}", nn.Linear(D, D))
            setattr(self, f"bridge_c_l{l}", nn.Linear(D, D))
            setattr(self, f"decoder_l{l}", nn.LSTMCell((E + (D if self.input_feeding else 0)) if l == 0 else D, D))
        self.attention_key = nn.Linear(D, D, bias=not self.general)
        if not self.general:
            self.attention_query = nn.Linear(D, D, bias=False)
            self.attention_score = nn.Linear(D, 1, bias=False)
        self.combine = nn.Linear(2 * D, D, bias=False)
        if self.tie:
            self.projection = nn.Linear(D, E) if E != D else None
            self.output_bias = nn.Parameter(torch.zeros(s["target_vocab"]))
        else:
            self.output = nn.Linear(D, s["target_vocab"])
        self.drop = nn.Dropout(m["dropout"])

    def encode(self, src, lengths):
        B, S = src.shape
        x = self.drop(self.source_embedding(src))
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, (h, c) = self.encoder(packed)
        memory, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=S)
        h, c = h.view(self.layers, 2, B, self.hidden), c.view(self.layers, 2, B, self.hidden)
        state = {"memory": memory, "keys": self.attention_key(memory),
                 "mask": torch.arange(S).unsqueeze(0) < lengths.unsqueeze(1),
                 "feed": memory.new_zeros(B, memory.size(2))}
        state["h"] = [torch.tanh(getattr(self, f"bridge_h_l{l}")(torch.cat([h[l, 0], h[l, 1]], 1)))
                      for l in range(self.layers)]
        state["c"] = [torch.tanh(getattr(self, f"bridge_c_l{l}")(torch.cat([c[l, 0], c[l, 1]], 1)))
                      for l in range(self.layers)]
        return state

    def attend(self, previous, st):
        return self.attend_embedded(self.drop(self.target_embedding(previous)), st)

    def attend_embedded(self, x, st):
        if self.input_feeding:
            x = torch.cat([x, st["feed"]], 1)
        for l in range(self.layers):
            h, c = getattr(self, f"decoder_l{l}")(x, (st["h"][l], st["c"][l]))
            st["h"][l], st["c"][l] = h, c
            x = self.drop(h) if l + 1 < self.layers else h
        query = st["h"][-1]
        if self.general:
            scores = torch.bmm(st["keys"], query.unsqueeze(2)).squeeze(2)
        else:
            q = self.attention_query(query)
            scores = self.attention_score(torch.tanh(st["keys"] + q.unsqueeze(1))).squeeze(2)
        a = torch.softmax(scores.masked_fill(~st["mask"], float("-inf")), 1)
        context = torch.bmm(a.unsqueeze(1), st["memory"]).squeeze(1)
        st["feed"] = torch.tanh(self.combine(torch.cat([context, query], 1)))
        return st["feed"]

    def logits(self, attended):
        y = self.drop(attended)
        if self.tie:
            if self.projection is not None:
                y = self.projection(y)
            return F.linear(y, self.target_embedding.weight, self.output_bias)
        return self.output(y)


def select(st, rows):
    return {"memory": st["memory"][rows], "keys": st["keys"][rows], "mask": st["mask"][rows],
            "feed": st["feed"][rows], "h": [t[rows] for t in st["h"]], "c": [t[rows] for t in st["c"]]}


def pad(seqs):
    out = torch.zeros(len(seqs), max(len(s) for s in seqs), dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, :len(s)] = torch.tensor(s)
    return out, torch.tensor([len(s) for s in seqs])


def beam_search(model, sources, K, bos, eos, alpha=0.6, ratio=2.0):
    """Best hypothesis (token ids, no bos/eos) per source, as cellstate's beam_search."""
    src, lengths = pad(sources)
    B = len(sources)
    st = select(model.encode(src, lengths), torch.arange(B).repeat_interleave(K))
    max_len = [math.ceil(ratio * n) + 10 for n in lengths.tolist()]
    score = torch.full((B, K), float("-inf"))
    score[:, 0] = 0
    prefix = torch.zeros(B, K, 0, dtype=torch.long)
    previous = torch.full((B * K,), bos, dtype=torch.long)
    active = list(range(B))  # the inputs still searched, in batch order
    finished = [[] for _ in range(B)]  # (score, tokens)
    for t in range(10 ** 9):
        logp = torch.log_softmax(model.logits(model.attend(previous, st)), 1)
        n, V = len(active), logp.size(1)
        total = (score.view(-1, 1) + logp).view(n, K * V)
        values, index = total.topk(min(2 * K, K * V), 1)
        parent, token = index // V, index % V
        valid = values > float("-inf")
        is_eos = token == eos
        going = valid & ~is_eos
        before = going.cumsum(1) - going.to(torch.long)  # continuations ranked above
        seen = valid & (before < K)  # what the search looks at before its K continuations are found
        for b, i in (seen & is_eos).nonzero().tolist():
            tokens = prefix[b, parent[b, i]].tolist()
            finished[active[b]].append((values[b, i].item() / ((5 + len(tokens) + 1) / 6) ** alpha, tokens))
        kept = seen & going
        slot = torch.where(kept, before, torch.full_like(before, K))  # column K collects the rest, then goes
        new_score = torch.full((n, K + 1), float("-inf")).scatter(1, slot, values)[:, :K]
        new_parent = torch.zeros(n, K + 1, dtype=torch.long).scatter(1, slot, parent)[:, :K]
        new_token = torch.full((n, K + 1), eos, dtype=torch.long).scatter(1, slot, token)[:, :K]
        kept_count = kept.sum(1).tolist()
        prefix = torch.cat([prefix.gather(1, new_parent.unsqueeze(2).expand(-1, -1, prefix.size(2))),
                            new_token.unsqueeze(2)], 2)
        keep = []
        for b, i in enumerate(active):
            if len(finished[i]) >= K or kept_count[b] == 0:
                continue
            if t + 1 >= max_len[i]:  # the length limit: the live prefixes end unended
                for k in range(kept_count[b]):
                    tokens = prefix[b, k].tolist()
                    finished[i].append((new_score[b, k].item() / ((5 + len(tokens)) / 6) ** alpha, tokens))
                continue
            keep.append(b)
        if not keep:
            break
        keep_t = torch.tensor(keep)
        rows = (keep_t.unsqueeze(1) * K + new_parent[keep_t]).view(-1)
        st = select(st, rows)
        score, prefix = new_score[keep_t], prefix[keep_t]
        previous = new_token[keep_t].view(-1)
        active = [active[b] for b in keep]
    return [max(f, key=lambda x: x[0])[1] for f in finished]


def translate_all(model, sentences, order, batch_size, beam, bos, eos):
    out = {}
    for i in range(0, len(order), batch_size):
        ids = order[i:i + batch_size]
        for k, hyp in zip(ids, beam_search(model, [sentences[k]["source"] for k in ids], beam, bos, eos)):
            out[k] = hyp
    return out


def train_steps(model, pairs, batch_size, steps, seed, label_smoothing=0.1, lr=1e-3, clip=1.0):
    rng = random.Random(seed)
    by_length = sorted(range(len(pairs)), key=lambda k: (max(len(pairs[k]["source"]), len(pairs[k]["target"])),
                                                         rng.random()))
    batches = [by_length[i:i + batch_size] for i in range(0, len(by_length), batch_size)]
    rng.shuffle(batches)
    model.train()
    params = list(model.parameters())
    opt = torch.optim.Adam(params, lr=lr)
    tokens, t0 = 0, None
    for step in range(3 + steps):
        if step == 3:
            tokens, t0 = 0, time.perf_counter()
        batch = [pairs[k] for k in batches[step % len(batches)]]
        src, lengths = pad([p["source"] for p in batch])
        tgt, _ = pad([p["target"] for p in batch])
        st = model.encode(src, lengths)
        embedded = model.drop(model.target_embedding(tgt[:, :-1]))  # all positions at once
        states = torch.stack([model.attend_embedded(embedded[:, t], st) for t in range(tgt.size(1) - 1)], 1)
        gold = tgt[:, 1:]
        real = gold != 0
        loss = F.cross_entropy(model.logits(states[real]), gold[real], label_smoothing=label_smoothing)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        tokens += int(real.sum())
    seconds = time.perf_counter() - t0
    return tokens / seconds, seconds * 1e3 / steps


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ids", help="cellstate-translate bench --dump-ids output (the sentences to translate)")
    ap.add_argument("--weights", help="the model's weights.pt (default: freshly initialised weights)")
    ap.add_argument("--train-ids", help="a dump with --tgt: also time training steps")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--singles", type=int, default=100)
    ap.add_argument("--train-steps", type=int, default=30)
    ap.add_argument("--train-batch", type=int, default=64)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    dump = json.load(open(args.ids))
    cfg, sentences, batch_size = dump["config"], dump["sentences"], dump["batch_size"]
    bos, eos = dump["bos"], dump["eos"]
    model = Seq2Seq(cfg)
    if args.weights:
        stored = dict(torch.jit.load(args.weights).named_parameters())
        own = dict(model.named_parameters())
        if set(stored) != set(own):
            raise SystemExit(f"{args.weights}: tensors {sorted(set(stored) ^ set(own))} do not fit the config")
        with torch.no_grad():
            for name, p in own.items():
                p.copy_(stored[name].float())
    order = sorted(range(len(sentences)), key=lambda k: len(sentences[k]["source"]))
    result = {"impl": "python", "threads": args.threads, "sentences": len(sentences), "batch_size": batch_size}
    model.eval()
    with torch.no_grad():
        translate_all(model, sentences, order[:batch_size], batch_size, 5, bos, eos)  # warm-up
        for beam in (1, 5):
            t0 = time.perf_counter()
            found = translate_all(model, sentences, order, batch_size, beam, bos, eos)
            result[f"sentences_per_s_beam{beam}"] = len(sentences) / (time.perf_counter() - t0)
            lat = []
            for k in range(min(args.singles, len(sentences))):
                t0 = time.perf_counter()
                translate_all(model, sentences, [k], 1, beam, bos, eos)
                lat.append((time.perf_counter() - t0) * 1e3)
            result[f"latency_ms_beam{beam}"] = statistics.median(lat)
        with_ref = [k for k, s in enumerate(sentences) if "beam5" in s]
        if with_ref:
            result["beam5_same_as_cellstate"] = sum(found[k] == sentences[k]["beam5"] for k in with_ref) / len(with_ref)
    if args.train_ids:
        pairs = json.load(open(args.train_ids))["sentences"]
        if not all("target" in p for p in pairs):
            raise SystemExit(f"{args.train_ids}: no target ids (dump it with --tgt)")
        rate, ms = train_steps(model, pairs, args.train_batch, args.train_steps, args.seed)
        result["train_tokens_per_s"], result["train_ms_per_step"] = rate, ms
    print(json.dumps(result))


if __name__ == "__main__":
    main()
