"""The official decode's plain parts on an analytic field (``testing.FieldVAE``): its defaults
(octree depth 8, chunks of 50,000 points), progress over the two passes of the progressive decode,
and the occupied box counting points exactly at 0."""
from __future__ import annotations

import numpy as np
import torch

from midi_model.meshing import BOX_PADDING, decode_grids, occupied_box
from midi_model.testing import FieldVAE


def sphere(p):
    return p.norm(dim=1) - 0.5


def test_defaults_are_depth_8_in_chunks_of_50000():
    vae = FieldVAE([sphere])
    seen = []
    grids = decode_grids(vae, vae.latents(), decoder="dense", callback=lambda d, t: seen.append((d, t)))
    total = 257 ** 3
    assert grids[0][0].shape == (257, 257, 257)
    assert seen[0] == (50_000, total) and seen[1] == (100_000, total) and seen[-1] == (total, total)


def test_progressive_progress_spans_both_passes():
    vae = FieldVAE([sphere, lambda p: p.norm(dim=1) + 1.0])   # the second instance is empty
    seen = []
    decode_grids(vae, vae.latents(), depth=4, decoder="progressive", chunk=1000,
                 callback=lambda d, t: seen.append((d, t)))
    per_pass = 17 ** 3                                           # points per instance (decoded as a batch)
    assert {t for _, t in seen} == {2 * per_pass}
    done = [d for d, _ in seen]
    assert done == sorted(done) and done[-1] == 2 * per_pass
    assert per_pass in done                                      # the first pass ends half way


def test_occupied_box_counts_points_exactly_at_zero():
    points = torch.tensor([[0.0, 0.0, 0.0], [0.5, -0.25, 0.75], [-0.5, 0.5, 0.25]])
    lo, hi = occupied_box(torch.tensor([-1.0, 0.0, 3.0]), points)
    np.testing.assert_allclose(lo, [-BOX_PADDING, -0.25 - BOX_PADDING, -BOX_PADDING], rtol=0, atol=1e-7)
    np.testing.assert_allclose(hi, [0.5 + BOX_PADDING, BOX_PADDING, 0.75 + BOX_PADDING], rtol=0, atol=1e-7)
    assert occupied_box(torch.tensor([1.0, 2.0, 3.0]), points) is None


def test_coarse_to_fine_progress_and_query_counts():
    from midi_model.meshing import PROGRESS_UNITS as U
    from midi_model.meshing import QUERY_ROW_MULTIPLE

    # the third instance has no surface: its finest level queries nothing, so its passes end on
    # the decoder's own end-of-pass report
    vae = FieldVAE([sphere, lambda p: (p - 0.2).norm(dim=1) - 0.3, lambda p: p.norm(dim=1) + 0.5])
    for decoder, passes in (("hierarchical", 1), ("progressive-hierarchical", 2)):
        seen, record = [], {}
        vae.queried = vae.calls = 0
        decode_grids(vae, vae.latents(), depth=6, decoder=decoder, chunk=500, record=record,
                     callback=lambda d, t: seen.append((d, t)))
        # what the official decode would have queried, and what this one did (the VAE also sees
        # the copies that pad each query to whole matrix tiles)
        assert record["dense_points_official"] == passes * 3 * 65 ** 3, decoder
        padding = vae.queried - record["points_queried"]
        assert 0 <= padding < QUERY_ROW_MULTIPLE * vae.calls, decoder
        assert vae.queried < record["dense_points_official"], decoder
        segments = 3 * passes
        assert {t for _, t in seen} == {segments * U}, decoder
        done = [d for d, _ in seen]
        assert done == sorted(done) and 0 < done[0] < U, decoder
        for k in range(segments):
            # each pass of each instance moves the bar within its own share and ends on its mark
            assert any(k * U < d < (k + 1) * U for d in done), (decoder, k)
            assert (k + 1) * U in done, (decoder, k)


def test_a_field_without_surface_gives_an_empty_mesh():
    from midi_model.meshing import grids_to_meshes, marching_cubes

    for grid in (np.ones((5, 5, 5), np.float32), -np.ones((5, 5, 5), np.float32)):
        v, f = marching_cubes(grid, np.zeros(3), np.ones(3))
        assert v.shape == (0, 3) and v.dtype == np.float32
        assert f.shape == (0, 3) and f.dtype == np.int64
    mesh = grids_to_meshes([(torch.ones(5, 5, 5), np.zeros(3), np.ones(3))])[0]
    assert mesh.vertices.shape == (0, 3) and mesh.faces.shape == (0, 3)


def test_marching_cubes_on_the_crossing_cells_equals_the_full_volume_call():
    from skimage import measure

    from midi_model.meshing import marching_cubes

    ax = np.arange(17, dtype=np.float32) - 8
    X, Y, Z = np.meshgrid(ax, ax, ax, indexing="ij")
    fields = {
        "ball": np.sqrt((X - 2) ** 2 + Y ** 2 + (Z + 1) ** 2) - 4.3,
        "cube with exact zeros": np.maximum(np.maximum(abs(X), abs(Y)), abs(Z)) - 4,
        "minimum exactly 0": (X - 3) ** 2 + Y ** 2 + Z ** 2,
    }
    lo, size = np.array([-1.0, -1.0, -1.0]), np.array([2.0, 2.0, 2.0])
    for name, grid in fields.items():
        grid = grid.astype(np.float32)
        v, f = marching_cubes(grid, lo, size)
        fv, ff, _, _ = measure.marching_cubes(grid, 0.0, method="lewiner")
        np.testing.assert_array_equal(f, ff, err_msg=name)
        np.testing.assert_array_equal(v, (fv / np.array(grid.shape) * size + lo).astype(np.float32), err_msg=name)


def test_meshes_merge_coinciding_vertices_as_the_official_trimesh_call():
    """The official script builds each mesh with trimesh.Trimesh(vertices, faces) (processing
    on): a field with exact zeros at grid points gives marching cubes vertices that coincide,
    and they are merged; a field without gives the marching cubes arrays unchanged."""
    import trimesh

    from midi_model.meshing import grids_to_meshes, marching_cubes

    ax = torch.arange(17, dtype=torch.float32) - 8
    X, Y, Z = torch.meshgrid(ax, ax, ax, indexing="ij")
    lo, size = np.zeros(3), np.ones(3)
    cube = torch.maximum(torch.maximum(X.abs(), Y.abs()), Z.abs()) - 4  # exact zeros on its faces
    ball = (X ** 2 + Y ** 2 + Z ** 2).sqrt() - 4.3
    for grid, merges in ((cube, True), (ball, False)):
        v, f = marching_cubes(grid.numpy(), lo, size)
        official = trimesh.Trimesh(v.astype(np.float32), f)
        got = grids_to_meshes([(grid, lo, size)], smoothing=False)[0]
        np.testing.assert_array_equal(got.vertices, official.vertices)
        np.testing.assert_array_equal(got.faces, official.faces)
        assert (len(got.vertices) < len(v)) == merges
        if not merges:
            np.testing.assert_array_equal(got.vertices, v)


def _same_as_trimesh(v, f):
    import trimesh

    from midi_model.meshing import processed_trimesh

    official = trimesh.Trimesh(v, f)
    got = processed_trimesh(v, f)
    np.testing.assert_array_equal(got.vertices, official.vertices)
    np.testing.assert_array_equal(got.faces, official.faces)
    assert got.vertices.dtype == official.vertices.dtype and got.faces.dtype == official.faces.dtype
    return got


def test_processed_trimesh_merges_at_trimeshs_precision_into_the_first_vertex():
    """Vertices 4e-9 apart round to one position at trimesh's merge precision (1e-8) and are
    merged into the first of them; 2e-8 apart they stay apart. Later vertices keep their order
    and faces point at the kept ones, as trimesh.Trimesh(v, f) does."""
    v = np.array([[0.1, 0.2, 0.3], [0.5, 0.5, 0.5], [0.1 + 4e-9, 0.2, 0.3], [0.9, 0.1, 0.4],
                  [0.5, 0.5, 0.5 + 2e-8], [0.5, 0.5, 0.5], [-0.7, 0.2, -0.1],
                  [0.123456784, 0.0, 0.0], [0.123456786, 0.0, 0.0]], np.float64)  # 2e-9 apart, rounded apart
    f = np.array([[2, 3, 4], [5, 6, 0], [1, 2, 6], [0, 1, 3], [7, 8, 0]])
    got = _same_as_trimesh(v, f)
    assert len(got.vertices) == 7  # 2 -> 0 and 5 -> 1 merged; 4 kept, and 8 beside 7
    np.testing.assert_array_equal(got.faces[0], [0, 2, 3])


def test_processed_trimesh_equals_trimesh_on_marching_cubes_meshes_with_and_without_merges():
    from midi_model.meshing import marching_cubes

    ax = torch.arange(17, dtype=torch.float32) - 8
    X, Y, Z = torch.meshgrid(ax, ax, ax, indexing="ij")
    cube = torch.maximum(torch.maximum(X.abs(), Y.abs()), Z.abs()) - 4  # exact zeros: coinciding vertices
    ball = (X ** 2 + Y ** 2 + Z ** 2).sqrt() - 4.3
    for grid, merges in ((cube, True), (ball, False)):
        v, f = marching_cubes(grid.numpy(), np.full(3, -1.005), np.full(3, 2.01))
        assert (len(_same_as_trimesh(v, f).vertices) < len(v)) == merges


def test_processed_trimesh_leaves_unused_non_finite_far_and_empty_meshes_to_trimesh(monkeypatch):
    import trimesh

    from midi_model import meshing

    calls = []
    real = trimesh.Trimesh
    monkeypatch.setattr(trimesh, "Trimesh", lambda *a, **k: calls.append(k.get("process", True)) or real(*a, **k))
    f = np.array([[0, 1, 2]])
    unused = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 1]])
    nan = np.array([[0.0, 0, 0], [1, 0, 0], [np.nan, 1, 0]])
    # beyond +-1.342 a coordinate needs more than the 28 bits packed per axis: these two would share a key
    far = np.array([[-1.34217728, 1.34217728, 0.0], [-1.34217727, -1.34217728, 0.0], [0.0, 0.0, 1.0]])
    for v, faces in ((unused, f), (nan, f), (far, f), (np.zeros((0, 3)), np.zeros((0, 3), np.int64))):
        calls.clear()
        got = meshing.processed_trimesh(v, faces)
        assert calls == [True]  # trimesh's own processing
        official = real(v, faces)
        np.testing.assert_array_equal(got.vertices, official.vertices)
        np.testing.assert_array_equal(got.faces, official.faces)
    calls.clear()
    meshing.processed_trimesh(unused[:3], f)
    assert calls == [False]


def test_meshes_are_smoothed_by_default():
    from midi_model.meshing import grids_to_meshes

    ax = torch.linspace(-1, 1, 17)
    X, Y, Z = torch.meshgrid(ax, ax, ax, indexing="ij")
    grids = [((X ** 2 + 2 * Y ** 2 + Z ** 2).sqrt() - 0.6, np.full(3, -1.0), np.full(3, 2.0))]
    plain = grids_to_meshes(grids)[0]
    smoothed = grids_to_meshes(grids, smoothing=True)[0]
    raw = grids_to_meshes(grids, smoothing=False)[0]
    np.testing.assert_array_equal(plain.vertices, smoothed.vertices)
    assert len(raw.vertices) != len(plain.vertices) or not np.array_equal(raw.vertices, plain.vertices)


def test_whole_tiles_rounds_a_chunk_down_to_a_multiple_of_the_tile():
    from midi_model.meshing import QUERY_ROW_MULTIPLE as T
    from midi_model.meshing import whole_tiles

    for chunk in (1, T - 1, T, T + 1, 700, 3000, 4096, 50_000, 50_007):
        got = whole_tiles(chunk)
        assert got % T == 0 and got >= T, chunk
        assert got == T if chunk < T else chunk - T < got <= chunk, chunk
