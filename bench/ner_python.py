#!/usr/bin/env python3
"""PyTorch (Python API) peer of `cellstate-ner bench` and of its training.

Builds the tagger a cellstate NER model's config describes -- word
embeddings, a bidirectional character LSTM whose last states are the word's
character features, mean-pooled SentencePiece piece embeddings, casing
embeddings, a bidirectional word LSTM, a linear layer to the tags and a
linear-chain CRF with the scheme's forbidden transitions -- with torch.nn
(packed sequences, the CRF's recurrences batched over sentences as tensor
operations, the usual way to write them in PyTorch), and times, on the same
inputs (`cellstate-ner bench --dump-ids`):

* tagging: every sentence, sorted by length, in batches of the dump's batch
  size: emissions, Viterbi, and each entity's CRF span probability (the
  confidences `cellstate-ner predict` prints: forward-backward, then one
  vectorised gather per batch), medians of --repeat passes; then the first
  200 sentences one at a time;
* training (with --train-ids, a dump of the training file): --train-steps
  steps of the recipe's update -- batches of 16 sentences of similar length
  in shuffled order, dropout 0.5, the CRF's negative log-likelihood, Adam
  1e-3, gradient clipping at 5 -- after 5 steps of warm-up. The tags are
  drawn at random (the dump carries no gold tags; the cost of a step does
  not depend on them).

The weights are freshly initialised (speed only). Tokenisation is already
done, so the C++ tagging figure includes work this one does not.

    cellstate-ner bench --data DEV --dump-ids dev.json
    cellstate-ner bench --data TRAIN --dump-ids train.json --repeat 1
    /usr/bin/python3 bench/ner_python.py dev.json --train-ids train.json --threads 2
"""
import argparse
import json
import random
import statistics
import time

import torch
import torch.nn as nn

FORBIDDEN = -10000.0
CASINGS = 8  # cellstate's Casing::kCount


def constraints(tags, scheme):
    """allowed[i][j] (tag i then j), allowed starts and ends, as cellstate's tag_constraints."""
    parsed = [("O", "") if t == "O" else (t[0], t[2:]) for t in tags]
    k = len(tags)
    allowed = torch.ones(k, k, dtype=torch.bool)
    for i, (pf, tf) in enumerate(parsed):
        for j, (pt, tt) in enumerate(parsed):
            same = tf == tt and pf != "O"
            if scheme == "iobes":
                allowed[i, j] = (same and pt in "IE") if pf in "BI" else pt in "OBS"
            elif scheme == "iob1":
                allowed[i, j] = pt != "B" or (same and pf in "BI")
            else:  # bio (IOB2)
                allowed[i, j] = pt != "I" or (same and pf in "BI")
    first = {"iobes": "OBS", "iob1": "OIS", "bio": "OBS"}.get(scheme, "OBS")
    start = torch.tensor([p in first for p, _ in parsed])
    end = torch.tensor([p in "OES" or scheme != "iobes" for p, _ in parsed])
    return allowed, start, end


class CRF(nn.Module):
    def __init__(self, tags, scheme="iobes"):
        super().__init__()
        k = len(tags)
        self.transitions = nn.Parameter(torch.empty(k, k).uniform_(-0.1, 0.1))
        self.start = nn.Parameter(torch.empty(k).uniform_(-0.1, 0.1))
        self.end = nn.Parameter(torch.empty(k).uniform_(-0.1, 0.1))
        allowed, start, end = constraints(tags, scheme)
        self.register_buffer("allowed", allowed)
        self.register_buffer("allowed_start", start)
        self.register_buffer("allowed_end", end)

    def scores(self):
        return (self.transitions.masked_fill(~self.allowed, FORBIDDEN),
                self.start.masked_fill(~self.allowed_start, FORBIDDEN),
                self.end.masked_fill(~self.allowed_end, FORBIDDEN))

    def alphas(self, e, mask):
        A, s, _ = self.scores()
        alpha = s.unsqueeze(0) + e[:, 0]
        out = [alpha]
        for t in range(1, e.size(1)):
            nxt = torch.logsumexp(alpha.unsqueeze(2) + A.unsqueeze(0), 1) + e[:, t]
            alpha = torch.where(mask[:, t].unsqueeze(1), nxt, alpha)
            out.append(alpha)
        return torch.stack(out, 1)

    def log_partition(self, e, mask):
        _, _, f = self.scores()
        return torch.logsumexp(self.alphas(e, mask)[:, -1] + f.unsqueeze(0), 1)

    def betas(self, e, mask, lengths):
        A, _, f = self.scores()
        T = e.size(1)
        fb = f.unsqueeze(0).expand(e.size(0), -1)
        out = [None] * T
        out[T - 1] = fb
        for t in range(T - 2, -1, -1):
            inner = torch.logsumexp(A.unsqueeze(0) + (e[:, t + 1] + out[t + 1]).unsqueeze(1), 2)
            out[t] = torch.where((lengths - 1 > t).unsqueeze(1), inner, fb)
        return torch.stack(out, 1)

    def score(self, e, tags, mask):
        A, s, f = self.scores()
        m = mask.to(e.dtype)
        total = s[tags[:, 0]] + (e.gather(2, tags.unsqueeze(2)).squeeze(2) * m).sum(1)
        total = total + (A[tags[:, :-1], tags[:, 1:]] * m[:, 1:]).sum(1)
        last = tags.gather(1, (mask.sum(1) - 1).unsqueeze(1)).squeeze(1)
        return total + f[last]

    def nll(self, e, tags, mask):
        return (self.log_partition(e, mask) - self.score(e, tags, mask)).mean()

    def viterbi(self, e, mask, lengths):
        A, s, f = self.scores()
        score = s.unsqueeze(0) + e[:, 0]
        history = []
        for t in range(1, e.size(1)):
            best, arg = (score.unsqueeze(2) + A.unsqueeze(0)).max(1)
            history.append(arg)
            score = torch.where(mask[:, t].unsqueeze(1), best + e[:, t], score)
        last = (score + f.unsqueeze(0)).argmax(1).tolist()
        hist = torch.stack(history, 1).tolist() if history else []
        paths = []
        for b, n in enumerate(lengths.tolist()):
            tag = last[b]
            path = [tag]
            for t in range(n - 2, -1, -1):
                tag = hist[b][t][tag]
                path.append(tag)
            paths.append(path[::-1])
        return paths


class Tagger(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        m, t = cfg["model"], cfg["tagger"]
        self.word_embedding = nn.Embedding(t["word_vocab"], m["embed"], padding_idx=0)
        self.char_embedding = nn.Embedding(t["char_vocab"], t["char_embed"], padding_idx=0)
        self.char_rnn = nn.LSTM(t["char_embed"], t["char_hidden"], batch_first=True, bidirectional=True)
        self.piece_embedding = nn.EmbeddingBag(t["piece_vocab"], t["piece_embed"], mode="mean")
        self.casing_embedding = nn.Embedding(CASINGS, t["casing_embed"])
        features = m["embed"] + 2 * t["char_hidden"] + t["piece_embed"] + t["casing_embed"]
        self.rnn = nn.LSTM(features, m["hidden"], m["layers"], batch_first=True, bidirectional=True)
        self.output = nn.Linear(2 * m["hidden"], len(cfg["tags"]))
        self.drop = nn.Dropout(m["dropout"])
        self.crf = CRF(cfg["tags"], cfg.get("tag_scheme", "iobes"))

    def emissions(self, b):
        B, T = b["words"].shape
        parts = [self.word_embedding(b["words"])]
        chars = self.char_embedding(b["chars"])
        packed = nn.utils.rnn.pack_padded_sequence(chars, b["char_lengths"], batch_first=True, enforce_sorted=False)
        _, (h, _) = self.char_rnn(packed)
        per_word = [torch.cat([h[0], h[1]], 1), self.piece_embedding(b["pieces"], b["piece_offsets"])]
        for w in per_word:
            out = w.new_zeros(B, T, w.size(1))
            out[b["mask"]] = w
            parts.append(out)
        parts.append(self.casing_embedding(b["casing"]))
        x = self.drop(torch.cat(parts, 2))
        packed = nn.utils.rnn.pack_padded_sequence(x, b["lengths"], batch_first=True, enforce_sorted=False)
        h, _ = self.rnn(packed)
        h, _ = nn.utils.rnn.pad_packed_sequence(h, batch_first=True, total_length=T)
        return self.output(self.drop(h)) * b["mask"].unsqueeze(2).to(h.dtype)


def make_batch(sentences):
    B, T = len(sentences), max(len(s["words"]) for s in sentences)
    words = torch.zeros(B, T, dtype=torch.long)
    casing = torch.zeros(B, T, dtype=torch.long)
    chars_list, pieces, offsets = [], [], []
    for i, s in enumerate(sentences):
        n = len(s["words"])
        words[i, :n] = torch.tensor(s["words"])
        casing[i, :n] = torch.tensor(s["casing"])
        chars_list.extend(s["chars"])
        for p in s["pieces"]:
            offsets.append(len(pieces))
            pieces.extend(p)
    L = max(len(c) for c in chars_list)
    chars = torch.zeros(len(chars_list), L, dtype=torch.long)
    for i, c in enumerate(chars_list):
        chars[i, :len(c)] = torch.tensor(c)
    lengths = torch.tensor([len(s["words"]) for s in sentences])
    return {"words": words, "casing": casing, "chars": chars,
            "char_lengths": torch.tensor([len(c) for c in chars_list]),
            "pieces": torch.tensor(pieces), "piece_offsets": torch.tensor(offsets),
            "lengths": lengths, "mask": torch.arange(T).unsqueeze(0) < lengths.unsqueeze(1)}


def spans(path, tags):
    """(begin, end exclusive) of each entity of a tag path: a run of tags of
    one type, cut where a tag begins an entity (B- or S-) or after an E-/S-."""
    out, begin, kind = [], None, None
    for t, k in enumerate(path + [None]):
        name = tags[k] if k is not None else "O"
        p, typ = name[0], name[2:]
        if begin is not None and (p in "OBS" or typ != kind):
            out.append((begin, t))
            begin = None
        if p != "O" and begin is None:
            begin, kind = t, typ
        if p in "ES" and begin is not None:
            out.append((begin, t + 1))
            begin = None
    return out


def span_probabilities(crf, e, mask, lengths, entities):
    """P(exactly these tags on this span) for each (sentence, begin, end, path) of a batch."""
    if not entities:
        return []
    A, s, f = crf.scores()
    alpha, beta = crf.alphas(e, mask), crf.betas(e, mask, lengths)
    log_z = torch.logsumexp(alpha[torch.arange(e.size(0)), lengths - 1] + f.unsqueeze(0), 1)
    b = torch.tensor([x[0] for x in entities])
    begin = torch.tensor([x[1] for x in entities])
    end = torch.tensor([x[2] for x in entities]) - 1
    first = torch.tensor([x[3][x[1]] for x in entities])
    last = torch.tensor([x[3][x[2] - 1] for x in entities])
    before = torch.logsumexp(alpha[b, (begin - 1).clamp(min=0)] + A[:, first].t(), 1)
    left = torch.where(begin == 0, s[first], before)
    # Inside the span: emissions and transitions, summed per entity.
    owner, pos, tag, prev = [], [], [], []
    for k, (bb, lo, hi, path) in enumerate(entities):
        for t in range(lo, hi):
            owner.append(k), pos.append(t), tag.append(path[t]), prev.append(path[t - 1] if t > lo else -1)
    owner_t, pos_t, tag_t, prev_t = (torch.tensor(v) for v in (owner, pos, tag, prev))
    inside = e[b[owner_t], pos_t, tag_t] + torch.where(prev_t >= 0, A[prev_t.clamp(min=0), tag_t], torch.zeros(()))
    inner = torch.zeros(len(entities), dtype=e.dtype).index_add_(0, owner_t, inside)
    after = (end + 1).clamp(max=e.size(1) - 1)
    nxt = torch.logsumexp(A[last] + e[b, after] + beta[b, after], 1)
    right = torch.where(end == lengths[b] - 1, f[last], nxt)
    return torch.exp(left + inner + right - log_z[b]).tolist()


def tag_all(model, sentences, order, batch_size, tags):
    results = 0
    for i in range(0, len(order), batch_size):
        batch = [sentences[k] for k in order[i:i + batch_size]]
        b = make_batch(batch)
        e = model.emissions(b)
        paths = model.crf.viterbi(e, b["mask"], b["lengths"])
        entities = [(k, lo, hi, p) for k, p in enumerate(paths) for lo, hi in spans(p, tags)]
        results += len(span_probabilities(model.crf, e, b["mask"], b["lengths"], entities))
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ids", help="cellstate-ner bench --dump-ids output (the sentences to tag)")
    ap.add_argument("--train-ids", help="a dump of the training file: also time training steps")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--train-steps", type=int, default=150)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    dump = json.load(open(args.ids))
    cfg, sentences, batch_size = dump["config"], dump["sentences"], dump["batch_size"]
    tags = cfg["tags"]
    model = Tagger(cfg)
    tokens = sum(len(s["words"]) for s in sentences)
    order = sorted(range(len(sentences)), key=lambda k: -len(sentences[k]["words"]))
    result = {"impl": "python", "threads": args.threads, "sentences": len(sentences), "tokens": tokens,
              "batch_size": batch_size}
    model.eval()
    with torch.no_grad():
        tag_all(model, sentences, order[:batch_size], batch_size, tags)  # warm-up
        rates = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            tag_all(model, sentences, order, batch_size, tags)
            rates.append(tokens / (time.perf_counter() - t0))
        lat = []
        for k in range(min(200, len(sentences))):
            t0 = time.perf_counter()
            tag_all(model, sentences, [k], 1, tags)
            lat.append((time.perf_counter() - t0) * 1e3)
    result["tokens_per_s"] = statistics.median(rates)
    result["latency_ms_median"] = statistics.median(lat)
    if args.train_ids:
        train = json.load(open(args.train_ids))["sentences"]
        rng = random.Random(args.seed)
        by_length = sorted(range(len(train)), key=lambda k: (len(train[k]["words"]), rng.random()))
        batches = [by_length[i:i + 16] for i in range(0, len(by_length), 16)]
        rng.shuffle(batches)
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        params = [p for p in model.parameters()]
        step_tokens, t0 = 0, None
        for step in range(5 + args.train_steps):
            if step == 5:
                step_tokens, t0 = 0, time.perf_counter()
            batch = [train[k] for k in batches[step % len(batches)]]
            b = make_batch(batch)
            gold = torch.randint(len(tags), b["words"].shape) * b["mask"]
            opt.zero_grad()
            loss = model.crf.nll(model.emissions(b), gold, b["mask"])
            loss.backward()
            nn.utils.clip_grad_norm_(params, 5.0)
            opt.step()
            step_tokens += int(b["lengths"].sum())
        seconds = time.perf_counter() - t0
        result["train_tokens_per_s"] = step_tokens / seconds
        result["train_ms_per_step"] = seconds * 1e3 / args.train_steps
    print(json.dumps(result))


if __name__ == "__main__":
    main()
