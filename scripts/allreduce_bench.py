#!/usr/bin/python3
"""Gloo all-reduce time over loopback, for the data-parallel scaling model.

  /usr/bin/python3 scripts/allreduce_bench.py [--ranks 2] [--repeat 30] FLOATS...

Starts RANKS processes on 127.0.0.1 with PyTorch's Gloo backend (the same
Gloo that cellstate's c10d process group runs on), times an all-reduce (sum)
of a float32 tensor of each size, and prints one JSON line per size:
{"floats": N, "bytes": B, "ranks": R, "median_ms": M, "algbw_gbit_s": ...}.
A tool for the README's measurements, not part of the product.
"""
import argparse
import json
import os
import socket
import statistics
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def worker(rank, ranks, port, sizes, repeat, queue):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=ranks)
    for n in sizes:
        t = torch.ones(n)
        for _ in range(3):
            dist.all_reduce(t)
        times = []
        for _ in range(repeat):
            dist.barrier()
            start = time.perf_counter()
            dist.all_reduce(t)
            times.append(time.perf_counter() - start)
        if rank == 0:
            ms = statistics.median(times) * 1000
            queue.put({"floats": n, "bytes": 4 * n, "ranks": ranks, "median_ms": round(ms, 3),
                       "algbw_gbit_s": round(4 * n * 8 / (ms / 1000) / 1e9, 3)})
    dist.destroy_process_group()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--repeat", type=int, default=30)
    p.add_argument("floats", type=int, nargs="+")
    a = p.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(r, a.ranks, port, a.floats, a.repeat, queue)) for r in range(a.ranks)]
    for proc in procs:
        proc.start()
    for _ in a.floats:
        print(json.dumps(queue.get(timeout=600)), flush=True)
    for proc in procs:
        proc.join()
    return 0 if all(proc.exitcode == 0 for proc in procs) else 1


if __name__ == "__main__":
    sys.exit(main())
