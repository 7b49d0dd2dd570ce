"""Mask clean-up, prompt parsing, automatic-mode filtering and the preview, on synthetic data."""
import numpy as np
import pytest

from midi_model.errors import MIDIInputError
from midi_model.segmentation import (area_to_pixels, border_fraction, clean_mask, dedupe_masks, fill_holes,
                                     filter_automatic_masks, largest_outline_filled, parse_boxes, parse_labels,
                                     parse_points, remove_specks, render_preview, resolve_overlaps, segment_scene)


def _ring(h=40, w=40):
    m = np.zeros((h, w), bool)
    m[5:25, 5:25] = True
    m[10:20, 10:20] = False      # 100-px hole
    m[13:15, 13:15] = True       # island inside the hole
    return m


def test_area_to_pixels():
    assert area_to_pixels(0, 1000) == 0 and area_to_pixels(None, 1000) == 0
    assert area_to_pixels(0.01, 1000) == 10
    assert area_to_pixels(0.0015, 1000) == 2   # rounds up
    assert area_to_pixels(25, 1000) == 25


def test_remove_specks():
    m = np.zeros((30, 30), bool)
    m[2:12, 2:12] = True            # 100 px
    m[20:22, 20:22] = True          # 4 px speck
    m[25, 25] = m[26, 26] = True    # diagonal pair: one 8-connected piece of 2
    out = remove_specks(m, 5)
    assert out[2:12, 2:12].all() and out.sum() == 100
    assert remove_specks(m, 2).sum() == 100 + 4 + 2
    assert remove_specks(m, 0).sum() == m.sum()


def test_fill_holes_by_size():
    m = _ring()
    small = m.copy()
    small[22, 22] = False           # 1-px hole
    out = fill_holes(small, 5)
    assert out[22, 22] and not out[11, 11]          # small hole filled, big one kept
    assert fill_holes(small, None)[11, 11]          # all holes
    edge = np.zeros((10, 10), bool)
    edge[:, 3:] = True
    edge[0, 5] = False                              # notch on the border is not a hole
    assert not fill_holes(edge, 100)[0, 5]


def test_polygon_refinement_keeps_largest_outline_filled():
    m = _ring()
    m[30:35, 30:35] = True          # second, smaller piece
    out = largest_outline_filled(m)
    assert out[5:25, 5:25].all() and out.sum() == 400  # hole and island filled, small piece gone
    assert not largest_outline_filled(np.zeros((5, 5), bool)).any()


def test_clean_mask_combines_steps():
    m = _ring()
    m[30:32, 30:32] = True
    out = clean_mask(m, min_area_px=10, fill=True, max_hole_px=None)
    assert out.sum() == 400


def test_resolve_overlaps_precedence():
    a = np.zeros((10, 10), bool); a[0:6, 0:6] = True
    b = np.zeros((10, 10), bool); b[4:10, 4:10] = True
    later = resolve_overlaps(np.stack([a, b]), "later")
    assert later[1][5, 5] and not later[0][5, 5] and later[1].sum() == 36 and later[0].sum() == 32
    earlier = resolve_overlaps(np.stack([a, b]), "earlier")
    assert earlier[0][5, 5] and not earlier[1][5, 5] and earlier[0].sum() == 36
    assert later.sum(0).max() == 1 and earlier.sum(0).max() == 1


def test_dedupe_keeps_first():
    a = np.zeros((10, 10), bool); a[0:5, 0:5] = True
    a2 = a.copy(); a2[5, 0] = True      # IoU 25/26
    b = np.zeros((10, 10), bool); b[6:, 6:] = True
    assert dedupe_masks(np.stack([a, b, a2]), 0.9) == [0, 1]
    assert dedupe_masks(np.stack([a, b, a2]), 0) == [0, 1, 2]


def test_automatic_filter_on_synthetic_candidates():
    h, w = 64, 64
    def box(y0, y1, x0, x1):
        m = np.zeros((h, w), bool); m[y0:y1, x0:x1] = True; return m
    cands = np.stack([
        box(10, 20, 10, 20),     # 0: small object (100)
        box(0, 64, 0, 64),       # 1: whole image -> dropped
        box(30, 60, 5, 45),      # 2: large object (1200)
        box(35, 45, 10, 20),     # 3: part of 2 -> dropped (keeps nothing)
        box(0, 64, 0, 8),        # 4: background strip along the border (512 px, 50% of left edge...) 
        box(12, 22, 12, 22),     # 5: near-duplicate of 0 -> keeps 36/100 < 0.5 -> dropped
        box(2, 4, 50, 52),       # 6: speck (4 px)
        box(20, 28, 40, 60),     # 7: medium object (160)
    ])
    assert border_fraction(cands[1]) == 1.0
    scores = np.linspace(0.9, 0.2, len(cands)).astype(np.float32)
    masks, sc, chosen = filter_automatic_masks(cands, scores, min_area_px=10, max_area_fraction=0.8,
                                               max_border_fraction=0.3, min_kept_fraction=0.5, max_instances=7)
    assert chosen == [2, 7, 0]                       # largest first
    assert masks.shape == (3, h, w) and masks.dtype == bool
    assert np.allclose(sc, scores[[2, 7, 0]])
    assert masks.sum(0).max() == 1                   # disjoint
    assert filter_automatic_masks(cands, scores, min_area_px=10, max_border_fraction=0.3, max_instances=2)[2] == [2, 7]


def test_automatic_filter_overlap_earlier_wins():
    h, w = 32, 32
    big = np.zeros((h, w), bool); big[4:24, 4:24] = True
    side = np.zeros((h, w), bool); side[10:30, 20:30] = True   # 200 px, 64 shared with big
    masks, _, chosen = filter_automatic_masks(np.stack([side, big]), max_border_fraction=1.0, max_instances=7)
    assert chosen == [1, 0]
    assert masks[0].sum() == 400 and masks[1].sum() == 200 - 14 * 4


def test_parse_labels():
    assert parse_labels("Sofa. table, lamp;\n dog.") == ["sofa", "table", "lamp", "dog"]
    assert parse_labels("  coffee   table . sofa. sofa") == ["coffee table", "sofa"]
    assert parse_labels("") == [] and parse_labels(None) == []


def test_parse_boxes():
    b = parse_boxes("10,20,110,120; [30 40 5 6]\n0,0,1000,1000", image_hw=(200, 300))
    assert b.dtype == np.float32 and b.tolist() == [[10, 20, 110, 120], [5, 6, 30, 40], [0, 0, 300, 200]]
    assert parse_boxes(np.array([1, 2, 3, 4])).shape == (1, 4)
    with pytest.raises(MIDIInputError, match="box 2 '1,2,3': expected 4 numbers"):
        parse_boxes("0,0,5,5; 1,2,3")
    with pytest.raises(MIDIInputError, match="expected numbers"):
        parse_boxes("a,b,c,d")
    with pytest.raises(MIDIInputError, match=r"box 1 .* has no area inside the image 300x200"):
        parse_boxes("400,10,500,50", image_hw=(200, 300))
    with pytest.raises(MIDIInputError, match="no area"):
        parse_boxes("10,10,10,50", image_hw=(200, 300))


def test_parse_points_grammar():
    g = parse_points("10,20 | 30,40; 50,60,0; 70,80,1", image_hw=(100, 100))
    assert len(g) == 2
    assert g[0][0].tolist() == [[10, 20]] and g[0][1].tolist() == [1]
    assert g[1][0].tolist() == [[30, 40], [50, 60], [70, 80]] and g[1][1].tolist() == [1, 0, 1]
    assert len(parse_points("1,2\n3,4")) == 2                      # new line separates instances too
    assert len(parse_points(np.array([[1, 2, 1], [3, 4, 0]]))) == 1  # (P,3) array: one instance
    assert len(parse_points(np.zeros((3, 2, 2)) + 1)) == 3          # (G,P,2): G instances
    assert len(parse_points([[1, 2], [3, 4]])) == 1
    assert len(parse_points([np.array([[1, 2]]), np.array([[3, 4], [5, 6]])])) == 2
    with pytest.raises(MIDIInputError, match="instance 1 has no point with label 1"):
        parse_points("10,10,0")
    with pytest.raises(MIDIInputError, match="labels must be 1"):
        parse_points("10,10,2")
    with pytest.raises(MIDIInputError, match="outside the image"):
        parse_points("150,10", image_hw=(100, 100))
    with pytest.raises(MIDIInputError, match="expected x,y or x,y,label"):
        parse_points("1,2,3,4")


def test_preview_colours_and_numbers():
    img = np.full((60, 80, 3), 200, np.uint8)
    m = np.zeros((2, 60, 80), bool)
    m[0, 5:40, 5:40] = True
    m[1, 20:55, 45:78] = True
    p = render_preview(img, m)
    assert p.shape == (60, 80, 3) and p.dtype == np.uint8
    assert (p[~m.any(0)] == 200).all()                       # background untouched
    assert not (p[8, 20] == 200).all() and not (p[50, 60] == 200).all()
    assert not np.array_equal(p[8, 20], p[50, 60])           # different colours
    # a number label (white text on black) is drawn inside each mask
    for k in range(2):
        inside = p[m[k]]
        assert (inside == 0).all(1).any() and (inside >= 200).all(1).any()
    grey = render_preview(None, m)
    assert grey.shape == (60, 80, 3)


def test_segment_scene_rejects_bad_settings():
    img = np.zeros((8, 8, 3), np.uint8)
    m = np.ones((1, 8, 8))
    with pytest.raises(MIDIInputError, match="max_instances must be at least 1"):
        segment_scene(img, "masks", masks=m, max_instances=0)
    with pytest.raises(MIDIInputError, match="overlap must be"):
        segment_scene(img, "masks", masks=m, overlap="random")
    with pytest.raises(MIDIInputError, match="too_many must be"):
        segment_scene(img, "masks", masks=np.ones((8, 8, 8)), max_instances=1, too_many="drop")
