"""Independent CPU work items run in parallel streams, each on one thread.

PyTorch splits every CPU operation over its intra-op threads, and the threads wait for
each other at the end of each one. The VAE's point queries are many small operations
(a block of 4,096 points is ~20 of them), so on a few cores much of the time goes to those
waits. Blocks of points are independent: giving each of N streams (N = the caller's thread
count) its own share of the blocks, one thread each, keeps every core busy without waits,
and a core taken by another process slows one stream instead of every operation.
A block's values here are the same on one thread as on two, bit for bit
(tests/test_cpu_streams.py); the math libraries do not promise that on every CPU, and a
difference there would be float32 rounding of single values.
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor, wait

import torch

_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_pool_lock = threading.Lock()


def _executor(streams: int) -> ThreadPoolExecutor:
    """One process-wide pool, grown when more streams are asked for (threads are kept)."""
    global _pool, _pool_size
    with _pool_lock:
        if _pool is None or _pool_size < streams:
            _pool = ThreadPoolExecutor(max_workers=streams, thread_name_prefix="midi-stream")
            _pool_size = streams
        return _pool


def map_blocks(fn, blocks: list, streams: int | None = None) -> list:
    """[fn(b) for b in blocks], the blocks shared out over ``streams`` threads that run one torch
    thread each (default: the caller's torch thread count; 1 runs them here, in order).
    Gradients are off in the streams. The first error stops every stream from starting another
    block and is raised once all have stopped."""
    threads = torch.get_num_threads()
    streams = min(threads if streams is None else streams, len(blocks))
    if streams <= 1:
        return [fn(b) for b in blocks]
    out = [None] * len(blocks)
    failed = threading.Event()

    def stream(first: int) -> None:
        torch.set_num_threads(1)  # this thread's setting only (OpenMP and MKL keep one per thread)
        try:
            with torch.no_grad():
                for i in range(first, len(blocks), streams):
                    if failed.is_set():
                        return
                    try:
                        out[i] = fn(blocks[i])
                    except BaseException:
                        failed.set()
                        raise
        finally:
            torch.set_num_threads(threads)  # new threads start from the last value set: the caller's

    pool = _executor(streams)
    futures = [pool.submit(stream, j) for j in range(streams)]
    wait(futures)
    for f in futures:
        error = f.exception()
        if error is not None:
            raise error
    return out
