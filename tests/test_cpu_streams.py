"""cpu_streams.map_blocks: the blocks' results in order, each block on one torch thread, errors
raised once every stream has stopped, and the caller's thread settings left as they were."""
from __future__ import annotations

import threading
import time

import pytest
import torch

from midi_model import cpu_streams
from midi_model.cpu_streams import map_blocks


@pytest.fixture
def two_threads():
    """The suite runs on one torch thread; streams need the caller to have more."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_results_come_back_in_block_order_from_one_thread_per_stream(two_threads):
    seen = []

    def fn(b):
        seen.append((threading.get_ident(), torch.get_num_threads(), torch.is_grad_enabled()))
        time.sleep(0.01)  # both streams get blocks
        return b * 10

    assert map_blocks(fn, list(range(7))) == [0, 10, 20, 30, 40, 50, 60]
    assert len({t for t, _, _ in seen}) == 2  # two streams, none of them the caller
    assert threading.get_ident() not in {t for t, _, _ in seen}
    assert {n for _, n, _ in seen} == {1} and not any(g for _, _, g in seen)
    assert torch.get_num_threads() == 2


def test_one_thread_or_one_block_runs_in_the_caller_in_order():
    me = threading.get_ident()
    calls = []
    assert torch.get_num_threads() == 1
    assert map_blocks(lambda b: calls.append(threading.get_ident()) or b + 1, [1, 2, 3]) == [2, 3, 4]
    assert map_blocks(lambda b: calls.append(threading.get_ident()) or b, [5], streams=4) == [5]
    assert calls == [me] * 4


def test_an_error_stops_the_other_streams_and_is_raised_after_they_stop(two_threads):
    """Stream 0 fails in its second block (2) while stream 1 runs block 3; stream 1 then starts no
    other (without the stop it would run all its ten), and the error comes out once it is done."""
    started, running = [], [0]
    lock = threading.Lock()

    def fn(b):
        with lock:
            started.append(b)
            running[0] += 1
        try:
            if b == 2:
                time.sleep(0.02)  # stream 1 is in block 3 by now (0.05-0.10 s)
                raise torch.OutOfMemoryError("out of memory")
            time.sleep(0.05)
            return b
        finally:
            with lock:
                running[0] -= 1

    with pytest.raises(torch.OutOfMemoryError):
        map_blocks(fn, list(range(20)))
    assert running[0] == 0  # no block still running when the error comes out
    assert 2 in started and len(started) <= 5
    assert torch.get_num_threads() == 2


def test_a_new_thread_starts_from_the_callers_thread_count(two_threads):
    map_blocks(lambda b: b, [1, 2, 3, 4])
    got = []
    t = threading.Thread(target=lambda: got.append(torch.get_num_threads()))
    t.start()
    t.join()
    assert got == [2]


def test_box_smooth_in_slabs_on_the_streams_gives_the_whole_grid_s_bits(two_threads, monkeypatch):
    """meshing.box_smooth: slabs of x-planes in the streams, the last one short, against one slab."""
    from midi_model import meshing

    g = torch.randn(23, 21, 22)
    monkeypatch.setattr(meshing, "SMOOTH_SLAB", 100)
    whole = meshing.box_smooth(g)
    for slab in (1, 3, 8):
        monkeypatch.setattr(meshing, "SMOOTH_SLAB", slab)
        assert torch.equal(meshing.box_smooth(g), whole)


def test_streams_run_in_the_callers_inference_mode(two_threads):
    """ComfyUI runs nodes under torch.inference_mode, which is per thread: a stream must be in it too,
    or writing in place into a tensor made by the caller fails (box_smooth's slabs did, in the host)."""
    from midi_model import meshing

    seen = map_blocks(lambda b: torch.is_inference_mode_enabled(), [1, 2, 3, 4])
    assert seen == [False] * 4
    g = torch.randn(23, 21, 22)
    with torch.inference_mode():
        seen = map_blocks(lambda b: torch.is_inference_mode_enabled(), [1, 2, 3, 4])
        smoothed = meshing.box_smooth(g.clone())
    assert seen == [True] * 4
    assert torch.equal(smoothed, meshing.box_smooth(g))


def test_the_pool_grows_for_more_streams(two_threads):
    map_blocks(lambda b: b, [1, 2])
    size = cpu_streams._pool_size
    assert size >= 2
    old = cpu_streams._pool
    assert map_blocks(lambda b: b, list(range(6)), streams=size + 1) == list(range(6))
    assert cpu_streams._pool_size == size + 1
    # the pool it replaced is shut down: its threads end instead of idling for the process's life
    for t in list(old._threads):
        t.join(timeout=10)
    assert not any(t.is_alive() for t in old._threads)
    assert cpu_streams._pool is not old


def test_streamed_queries_equal_the_blocks_run_one_after_another_bit_for_bit(two_threads, golden_pipe, golden):
    """The coarse-to-fine decoders' CPU queries, blocks of at most 4,096 points in single-threaded
    streams, give the values blocks of 4,096 give one after another on the caller's two threads. (Against
    the official chunks: test_decoder_exact, on one thread. On two, the official 50,000-point
    chunk itself rounds a row or so at the threads' split differently: a few ulp, before and
    after streams.)"""
    from midi_model import meshing
    from midi_model.meshing import BBOX_MAX, BBOX_MIN, grid_points

    vae = golden_pipe.vae
    lat = torch.from_numpy(golden["final_latents"])[:1]
    pts = torch.from_numpy(grid_points(BBOX_MIN, BBOX_MAX, 5)[0])  # 35,937 points: 9 blocks
    threads, keyed = [], []
    real = vae.query
    vae.query = lambda ctx, p, keys=None: threads.append(threading.get_ident()) or real(ctx, p, keys)
    attn = vae.decoder.blocks[-1].attn2
    real_keys = attn.context_keys
    attn.context_keys = lambda ctx: keyed.append(1) or real_keys(ctx)
    try:
        query = meshing._field_queries(vae, lat, 50_000)[0]
        streamed = query(pts)
        assert len(set(threads)) == 2 and threading.get_ident() not in threads
        assert len(keyed) == 1  # the context's keys: once for the 9 blocks, not once per block
        context = vae.latent_context(lat)
        one_by_one = torch.cat([meshing._tiled_query(vae, context, pts[None, s:s + meshing.CPU_QUERY_BLOCK])
                                for s in range(0, pts.shape[0], meshing.CPU_QUERY_BLOCK)], dim=1)[0, :, 0]
    finally:
        del vae.query, attn.context_keys
    assert len(keyed) == 10  # the blocks one by one: their own keys each
    assert threads[-1] == threading.get_ident() and torch.get_num_threads() == 2  # in the caller, two threads
    assert torch.equal(streamed, one_by_one)


def test_a_free_stream_takes_the_next_block(two_threads):
    """A stream held up by a slow block (another process on its core) leaves the other blocks to
    the free stream, instead of a fixed share each."""
    ran = {}

    def fn(b):
        ran[b] = threading.get_ident()
        time.sleep(0.4 if b == 0 else 0.01)
        return b

    assert map_blocks(fn, list(range(10))) == list(range(10))
    assert [b for b, t in ran.items() if t == ran[0]] == [0]


@pytest.mark.parametrize("n, most, streams, multiple, expected", [
    (50_000, 4096, 2, 16, [(s, s + 3584) for s in range(0, 13 * 3584, 3584)] + [(46_592, 50_000)]),
    (8192, 4096, 2, 16, [(0, 4096), (4096, 8192)]),
    (8193, 4096, 2, 16, [(0, 2064), (2064, 4128), (4128, 6192), (6192, 8193)]),
    (100, 4096, 2, 16, [(0, 64), (64, 100)]),  # one block's worth, still one per stream
    (20, 4096, 2, 16, [(0, 20)]),  # under two tiles: one block
    (60_000, 50_000, 1, 16, [(0, 30_000), (30_000, 60_000)]),
    (0, 4096, 2, 16, []),
])
def test_even_bounds_give_every_stream_the_same_work(n, most, streams, multiple, expected):
    assert cpu_streams.even_bounds(n, most, streams, multiple) == expected
