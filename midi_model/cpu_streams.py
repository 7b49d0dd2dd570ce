"""Independent CPU work items run in parallel streams, each on one thread.

PyTorch splits every CPU operation over its intra-op threads, and the threads wait for
each other at the end of each one. The VAE's point queries are many small operations
(a block of 4,096 points is ~20 of them), so on a few cores much of the time goes to those
waits. Blocks of points are independent: N streams (N = the caller's thread count), one
thread each, take the next block whenever they are free. That keeps every core busy without
waits, and a core taken by another process slows one stream while the others take more
blocks. ``even_bounds`` cuts a call's points into blocks of one size, so the streams end
together.
A block's values here are the same on one thread as on two, bit for bit
(tests/test_cpu_streams.py); the math libraries do not promise that on every CPU, and a
difference there would be float32 rounding of single values.
"""
from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor, wait

import torch

_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_pool_lock = threading.Lock()


def _submit(fn, count: int) -> list:
    """``count`` runs of ``fn`` on the process-wide pool, grown first when it has fewer threads. The
    pool it replaces is shut down (its threads end once idle); submitting under the lock means
    no caller can hold a pool that another is shutting down."""
    global _pool, _pool_size
    with _pool_lock:
        if _pool is None or _pool_size < count:
            old, _pool = _pool, ThreadPoolExecutor(max_workers=count, thread_name_prefix="midi-stream")
            _pool_size = count
            if old is not None:
                old.shutdown(wait=False)  # work already on it finishes
        return [_pool.submit(fn) for _ in range(count)]


def stream_count(streams: int | None = None) -> int:
    """The streams ``map_blocks`` runs: ``streams``, by default the caller's torch thread count."""
    return torch.get_num_threads() if streams is None else max(1, int(streams))


def even_bounds(n: int, most: int, streams: int, multiple: int = 1) -> list[tuple[int, int]]:
    """[0, n) cut into blocks of at most ``most`` items, a whole multiple of ``streams`` blocks when
    there is more than one, all of one size rounded up to ``multiple`` (the last one shorter):
    every stream gets the same work. ``most`` must be a multiple of ``multiple``."""
    if n <= 0:
        return []
    count = math.ceil(n / most)
    if count > 1 or n >= 2 * multiple:
        count = math.ceil(count / streams) * streams
    size = math.ceil(math.ceil(n / count) / multiple) * multiple
    return [(s, min(s + size, n)) for s in range(0, n, size)]


def map_blocks(fn, blocks: list, streams: int | None = None) -> list:
    """[fn(b) for b in blocks], computed by ``streams`` threads that run one torch thread each
    (``stream_count``; 1 runs them here, in order) and take the next block when they are free.
    Gradients are off in the streams, and inference mode is the caller's (it is per thread: ComfyUI
    runs nodes in it, and a tensor made there can be written in place only inside it). The first
    error stops every stream from starting another block and is raised once all have stopped."""
    threads = torch.get_num_threads()
    inference = torch.is_inference_mode_enabled()
    streams = min(stream_count(streams), len(blocks))
    if streams <= 1:
        return [fn(b) for b in blocks]
    out = [None] * len(blocks)
    failed = threading.Event()
    lock = threading.Lock()
    taken = [0]

    def next_block() -> int:
        with lock:
            i = taken[0]
            taken[0] += 1
            return i

    def stream() -> None:
        torch.set_num_threads(1)  # this thread's setting only (OpenMP and MKL keep one per thread)
        try:
            with torch.inference_mode(inference), torch.no_grad():
                while not failed.is_set():
                    i = next_block()
                    if i >= len(blocks):
                        return
                    try:
                        out[i] = fn(blocks[i])
                    except BaseException:
                        failed.set()
                        raise
        finally:
            torch.set_num_threads(threads)  # new threads start from the last value set: the caller's

    futures = _submit(stream, streams)
    wait(futures)
    for f in futures:
        error = f.exception()
        if error is not None:
            raise error
    return out
