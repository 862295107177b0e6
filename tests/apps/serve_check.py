"""Checks a running cellstate-serve over HTTP (tests/apps/serve.sh starts it).

  serve_check.py shipped URL BIN_DIR DATA_DIR   every endpoint against the CLI,
                                                concurrency, streaming, bad requests
  serve_check.py limits URL KEY_FILE            API key, body limit, time limit,
                                                a model that is not loaded
  serve_check.py drain URL PID                  SIGTERM while a request is in flight

Prints "FAIL: ..." per failed check; exits 1 if any failed.
"""
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse

fails = 0


def fail(message):
    global fails
    fails += 1
    print("FAIL: " + message, flush=True)


def request(url, method, path, body=None, headers=None, raw=None):
    """(status, parsed JSON or text) of one request on a new connection."""
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    conn.request(method, path, body=data, headers=headers or {})
    resp = conn.getresponse()
    text = resp.read().decode("utf-8", "replace")
    conn.close()
    try:
        return resp.status, json.loads(text)
    except ValueError:
        return resp.status, text


def post(url, path, body, **kw):
    return request(url, "POST", path, body, **kw)


def cli_jsonl(args):
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    records = [json.loads(line) for line in out.splitlines() if line.strip()]
    for r in records:
        r.pop("file", None)
        r.pop("line", None)
    return records


def close(a, b, tol):
    """JSON values equal, numbers within `tol`."""
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return abs(a - b) <= tol
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k], tol) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y, tol) for x, y in zip(a, b))
    return a == b


def same_as_cli(what, served, cli, tol):
    if not close(served, cli, tol):
        fail(f"{what}: the server's answer differs from the CLI's:\n  served {json.dumps(served)[:400]}\n"
             f"  cli    {json.dumps(cli)[:400]}")


def lines_of(path):
    with open(path, encoding="utf-8") as f:
        return f.read().splitlines()


def shipped(url, bin_dir, data_dir):
    status, health = request(url, "GET", "/health")
    if status != 200 or health.get("status") != "ok" or len(health.get("models", [])) != 4:
        fail(f"/health: {status} {health}")
    status, models = request(url, "GET", "/v1/models")
    if status != 200 or set(models.get("models", {})) != {"sentiment", "ner", "translate", "textgen"}:
        fail(f"/v1/models: {status} {str(models)[:300]}")

    # Every endpoint answers what the app's JSONL output says for the same input.
    texts = lines_of(os.path.join(data_dir, "predict_lines.txt")) + ["a dull , lifeless film", "superb"]
    path = os.path.join(os.environ["TMPDIR"], "sentiment_in.txt")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(texts) + "\n")
    status, got = post(url, "/v1/sentiment", {"texts": texts})
    if status != 200:
        fail(f"/v1/sentiment: {status} {got}")
    else:
        same_as_cli("sentiment", got["results"],
                    cli_jsonl([bin_dir + "/cellstate-sentiment", "predict", "--format", "jsonl", path]), 2e-6)

    ner_texts = [t for t in lines_of(os.path.join(data_dir, "ner_raw.txt"))]
    status, got = post(url, "/v1/ner", {"texts": ner_texts})
    if status != 200:
        fail(f"/v1/ner: {status} {got}")
    else:
        same_as_cli("ner", got["results"], cli_jsonl([bin_dir + "/cellstate-ner", "predict", "--format", "jsonl",
                                                       os.path.join(data_dir, "ner_raw.txt")]), 2e-4)
        if not any(e["text"] == "Peter Blackburn" and e["start"] == 0 for e in got["results"][0]["entities"]):
            fail(f"ner: no PER 'Peter Blackburn' at offset 0: {got['results'][0]['entities']}")

    src = os.path.join(data_dir, "translate_tiny.en")
    status, got = post(url, "/v1/translate", {"texts": lines_of(src), "beam": 4, "nbest": 2})
    if status != 200:
        fail(f"/v1/translate: {status} {got}")
    else:
        same_as_cli("translate n-best", got["results"],
                    cli_jsonl([bin_dir + "/cellstate-translate", "translate", "--format", "jsonl", "--beam", "4",
                               "--nbest", "2", src]), 2e-4)
        if len(got["results"][0]["sentences"][0]["nbest"]) != 2:
            fail("translate: nbest 2 did not give two hypotheses")

    status, got = post(url, "/v1/generate", {"prompt": "ROMEO:", "max_tokens": 40, "seed": 7, "num_samples": 2,
                                             "temperature": 0.8})
    if status != 200:
        fail(f"/v1/generate: {status} {got}")
    else:
        same_as_cli("generate", got["results"],
                    cli_jsonl([bin_dir + "/cellstate-textgen", "generate", "--prompt", "ROMEO:", "--max-tokens", "40",
                               "--seed", "7", "--num-samples", "2", "--temperature", "0.8", "--format", "jsonl"]),
                    2e-4)

    # Concurrent clients: each gets its own answer, the one it gets alone,
    # while the server batches them together.
    before = request(url, "GET", "/v1/models")[1]["models"]
    sentences = [f"the {w} film was {v}" for w in ("first", "second", "third", "last")
                 for v in ("great", "awful", "fine", "boring")]
    alone = {t: post(url, "/v1/sentiment", {"texts": [t]})[1]["results"][0] for t in sentences}
    en = lines_of(src)
    alone_tr = {t: post(url, "/v1/translate", {"texts": [t]})[1]["results"][0] for t in en}
    mixed = []

    def client(k):
        for r in range(6):
            t = sentences[(k * 7 + r) % len(sentences)]
            status, got = post(url, "/v1/sentiment", {"texts": [t]})
            if status != 200 or not close(got["results"][0], alone[t], 2e-6):
                mixed.append(f"sentiment {t!r}: {status} {str(got)[:200]}")
            s = en[(k + r) % len(en)]
            status, got = post(url, "/v1/translate", {"texts": [s]})
            if status != 200 or not close(got["results"][0], alone_tr[s], 2e-4):
                mixed.append(f"translate {s!r}: {status} {str(got)[:200]}")

    threads = [threading.Thread(target=client, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for m in mixed[:5]:
        fail("concurrent client got another answer than alone: " + m)
    after = request(url, "GET", "/v1/models")[1]["models"]
    for task in ("sentiment", "translate"):
        b = after[task]["batching"]
        requests = b["requests"] - before[task]["batching"]["requests"]
        batches = b["batches"] - before[task]["batching"]["batches"]
        if not batches < requests:
            fail(f"{task}: {requests} concurrent requests ran in {batches} batches (no batching)")
        print(f"{task}: {requests} requests in {batches} batches, largest {b['largest_batch']} items")

    # Streaming: tokens arrive while the generation is still running.
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
    start = time.time()
    conn.request("POST", "/v1/generate", body=json.dumps({"prompt": "KING:", "max_tokens": 600, "seed": 3,
                                                          "stream": True}))
    resp = conn.getresponse()
    if resp.status != 200 or "text/event-stream" not in resp.getheader("Content-Type", ""):
        fail(f"stream: {resp.status} {resp.getheader('Content-Type')}")
    first = None
    pieces, done, event = [], None, ""
    while True:
        line = resp.readline()
        if not line:
            break
        line = line.decode("utf-8").rstrip("\n")
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data = json.loads(line[6:])
            if event == "done":
                done = data
            elif event == "":
                pieces.append(data["text"])
                if first is None:
                    first = time.time() - start
        elif line == "":
            event = ""
    total = time.time() - start
    conn.close()
    if done is None:
        fail("stream: no 'done' event")
    else:
        if "".join(pieces) != done["results"][0]["text"]:
            fail("stream: the pieces do not add up to the final text")
        if first is None or first > 0.5 * total:
            fail(f"stream: first token after {first} s of {total:.2f} s (not streamed)")
        print(f"stream: {len(pieces)} pieces, first after {first * 1000:.0f} ms, all after {total * 1000:.0f} ms")

    # Bad requests: a 4xx naming what was wrong, and the server goes on.
    bad = [
        ("/v1/sentiment", b"{bad", 400, "malformed JSON"),
        ("/v1/sentiment", b"", 400, "empty request body"),
        ("/v1/sentiment", b"[1, 2]", 400, "expected a JSON object"),
        ("/v1/sentiment", b'{"text": ["x"]}', 400, "unknown field 'text'"),
        ("/v1/sentiment", b'{}', 400, "missing field 'texts'"),
        ("/v1/sentiment", b'{"texts": "x"}', 400, "'texts' must be an array of strings"),
        ("/v1/sentiment", b'{"texts": []}', 400, "'texts' is empty"),
        ("/v1/sentiment", b'{"texts": ["a", 3]}', 400, "texts[1] must be a string"),
        ("/v1/sentiment", b'{"texts": ["a\\u0000b"]}', 400, "texts[0] contains a NUL character"),
        ("/v1/sentiment", b'{"texts": ["a \xff b"]}', 400, "invalid UTF-8 at byte 15"),
        ("/v1/sentiment", b'{"texts": ["x"], "threshold": 2}', 400, "'threshold' must be in [0, 1], got 2"),
        ("/v1/sentiment", json.dumps({"texts": ["x"] * 300}).encode(), 413, "300 texts; at most 256"),
        ("/v1/translate", b'{"texts": ["x"], "beam": 0}', 400, "'beam' must be in [1, 64], got 0"),
        ("/v1/translate", b'{"texts": ["x"], "beam": 2, "nbest": 3}', 400, "'nbest' must be in [1, 2], got 3"),
        ("/v1/translate", b'{"texts": ["x"], "beam": 1.5}', 400, "'beam' must be an integer"),
        ("/v1/ner", b'{"texts": ["x"], "input_format": "conll"}', 400, "'input_format' must be one of raw, tokens"),
        ("/v1/generate", b'{"max_tokens": 5}', 400, "missing field 'prompt'"),
        ("/v1/generate", b'{"prompt": "x", "max_tokens": 100000}', 400, "'max_tokens' must be in [1, 2048]"),
        ("/v1/generate", b'{"prompt": "x", "temperature": 0}', 400, "'temperature' must be in (0, 100]"),
        ("/v1/generate", b'{"prompt": "x", "stream": "yes"}', 400, "'stream' must be true or false"),
        ("/v1/nothing", b'{}', 404, "no such endpoint: POST /v1/nothing"),
    ]
    for path, body, want, message in bad:
        status, got = request(url, "POST", path, raw=body)
        if status != want or not isinstance(got, dict) or message not in got.get("error", ""):
            fail(f"POST {path} {body[:60]!r}: expected {want} '{message}', got {status} {str(got)[:200]}")
    status, got = request(url, "GET", "/v1/translate")
    if status != 405 or "takes POST" not in got.get("error", ""):
        fail(f"GET /v1/translate: expected 405, got {status} {got}")
    if request(url, "GET", "/health")[0] != 200:
        fail("the server does not answer after the bad requests")


def limits(url, key_file):
    with open(key_file) as f:
        key = f.read().strip()
    auth = {"Authorization": "Bearer " + key}
    for headers, want in (({}, 401), ({"Authorization": "Bearer wrong-key-0123456789"}, 401),
                          ({"Authorization": key}, 401), (auth, 200)):
        status, got = request(url, "GET", "/health", headers=headers)
        if status != want:
            fail(f"/health with {headers}: {status}, expected {want}")
    status, got = post(url, "/v1/sentiment", {"texts": ["a fine film"]})
    if status != 401 or "API key" not in got.get("error", ""):
        fail(f"sentiment without the key: {status} {got}")
    status, got = post(url, "/v1/sentiment", {"texts": ["a fine film"]}, headers=auth)
    if status != 503 or "time limit" not in got.get("error", ""):
        fail(f"a request waiting longer than --request-timeout-ms: {status} {got}")
    status, got = request(url, "POST", "/v1/sentiment", raw=b'{"texts": ["' + b"x" * 5000 + b'"]}', headers=auth)
    if status != 413 or "--max-request-bytes" not in got.get("error", ""):
        fail(f"a body over --max-request-bytes: {status} {got}")
    status, got = post(url, "/v1/ner", {"texts": ["x"]}, headers=auth)
    if status != 404 or "no ner model is loaded" not in got.get("error", ""):
        fail(f"a model that is not loaded: {status} {got}")


def drain(url, pid):
    result = {}

    def long_request():
        result["reply"] = post(url, "/v1/generate", {"prompt": "A", "max_tokens": 1500, "seed": 1})

    t = threading.Thread(target=long_request)
    t.start()
    time.sleep(0.5)
    os.kill(pid, signal.SIGTERM)
    t.join()
    status, got = result.get("reply", (None, None))
    if status != 200 or len(got["results"][0]["ids"]) < 1:
        fail(f"the request in flight at SIGTERM was not answered: {status} {str(got)[:200]}")


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "shipped":
        shipped(sys.argv[2], sys.argv[3], sys.argv[4])
    elif mode == "limits":
        limits(sys.argv[2], sys.argv[3])
    elif mode == "drain":
        drain(sys.argv[2], int(sys.argv[3]))
    sys.exit(1 if fails else 0)
