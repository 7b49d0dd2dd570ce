"""Seg maps in every form the pack accepts give the same labels (PIL's grey reading); the checks
that refuse maps which are not one are exact at their thresholds; masks <-> label maps."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from midi_model.errors import MIDIInputError
from midi_model.inputs import (check_label_map, masks_from_label_map, masks_to_label_map, split_label_map,
                               to_label_map)
from midi_model.inputs.labels import MAX_LEVELS, TINY_FRACTION

COLOURS = {1: (200, 30, 30), 2: (30, 200, 30), 3: (30, 30, 200)}


def layout():
    """Three flat rectangles on a 48x64 background: (labels 1..3, the same as an RGB colour map)."""
    lab = np.zeros((48, 64), np.uint8)
    lab[4:20, 4:30], lab[24:44, 6:30], lab[10:40, 36:60] = 1, 2, 3
    rgb = np.zeros(lab.shape + (3,), np.uint8)
    for k, c in COLOURS.items():
        rgb[lab == k] = c
    return lab, rgb


def test_every_form_of_a_colour_map_reads_as_pil_grey():
    _, rgb = layout()
    grey = np.asarray(Image.fromarray(rgb).convert("L"))
    assert len(np.unique(grey)) == 4
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2)
    forms = {
        "PIL RGB": Image.fromarray(rgb),
        "PIL P": Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=4),
        "array RGB": rgb,
        "array RGBA": rgba,
        "ComfyUI IMAGE": (rgb[None].astype(np.float32) / 255.0),
    }
    for name, seg in forms.items():
        out = to_label_map(seg)
        assert out.dtype == np.uint8, name
        np.testing.assert_array_equal(out, grey, err_msg=name)


def test_every_form_of_a_grey_map_keeps_its_values():
    lab, _ = layout()
    lab = lab * 60
    forms = {
        "PIL L": Image.fromarray(lab),
        "PIL I;16": Image.fromarray(lab.astype(np.uint16)),
        "PIL I": Image.fromarray(lab.astype(np.int32)),
        "array HxW": lab,
        "array HxWx1": lab[..., None],
        "int64 array": lab.astype(np.int64),
        "ComfyUI IMAGE grey": np.repeat(lab[None, :, :, None], 3, 3).astype(np.float32) / 255.0,
    }
    for name, seg in forms.items():
        out = to_label_map(seg)
        assert out.dtype == np.uint8, name
        np.testing.assert_array_equal(out, lab, err_msg=name)
    # a bilevel image and a bool array: objects are 255 / 1
    np.testing.assert_array_equal(to_label_map(Image.fromarray(lab > 0)), (lab > 0) * 255)
    np.testing.assert_array_equal(to_label_map(lab > 0), (lab > 0).astype(np.uint8))


def test_labels_above_255_are_kept():
    lab, _ = layout()
    big = lab.astype(np.int32) * 300
    for seg in (big, Image.fromarray(big.astype(np.uint16)), Image.fromarray(big)):
        out = to_label_map(seg)
        assert out.dtype == np.int32
        np.testing.assert_array_equal(out, big)
    # 255 itself still fits a byte
    assert to_label_map(np.full((4, 4), 255, np.int32)).dtype == np.uint8


@pytest.mark.parametrize("seg, message", [
    (np.zeros((0, 5), np.uint8), r"expected an HxW or HxWx3 image, got an array of shape \(0, 5\)"),
    (np.zeros((5, 5, 2), np.uint8), r"expected an HxW or HxWx3 image, got an array of shape \(5, 5, 2\)"),
    (np.full((5, 5, 3), 256, np.int32), r"a colour seg map must be 8-bit"),
    (Image.fromarray(np.full((5, 5), -3, np.int32)), r"negative labels"),
    (None, r"no seg map given"),
])
def test_maps_that_are_not_label_maps_are_refused(seg, message):
    with pytest.raises(MIDIInputError, match=message):
        to_label_map(seg)


def test_colours_that_share_a_grey_value_are_refused():
    _, rgb = layout()
    twin = np.asarray(Image.fromarray(np.array([[COLOURS[1]]], np.uint8)).convert("L"))[0, 0]
    # another colour with the same grey value as colour 1
    other = next((r, g, b) for r in range(256) for g in range(0, 256, 5) for b in (0, 50, 100)
                 if (r, g, b) != COLOURS[1]
                 and np.asarray(Image.fromarray(np.array([[(r, g, b)]], np.uint8)).convert("L"))[0, 0] == twin)
    bad = rgb.copy()
    bad[44:48, :] = other
    with pytest.raises(MIDIInputError, match=f"have the same grey value {twin} .* merge into one object"):
        to_label_map(bad)
    dark = rgb.copy()
    dark[44:48, :] = (0, 0, 1)     # grey 0: it would become background
    with pytest.raises(MIDIInputError, match="same grey value 0 .* vanish into the background"):
        to_label_map(dark)
    many = np.random.default_rng(0).integers(0, 256, (20, 20, 3)).astype(np.uint8)
    with pytest.raises(MIDIInputError, match="different colours, which looks like a photo"):
        to_label_map(many)


def test_as_many_colours_as_levels_allowed_are_read():
    rgb = np.zeros((8, 8 * MAX_LEVELS, 3), np.uint8)
    for k in range(MAX_LEVELS):   # 64 greys, each its own colour
        rgb[:, 8 * k:8 * k + 8] = (4 * k, 4 * k, 4 * k)
    assert len(np.unique(to_label_map(rgb))) == MAX_LEVELS


def test_the_speck_threshold_is_exact():
    h = w = 300
    least = max(2, TINY_FRACTION * h * w)        # 18 pixels
    assert least == 18

    def with_region(rows, cols):
        lab = np.zeros((h, w), np.uint8)
        lab[20:200, 20:200] = 1
        lab[250:250 + rows, 250:250 + cols] = 2
        return lab

    check_label_map(with_region(3, 6))          # 18 pixels, 4 of them interior: an object
    with pytest.raises(MIDIInputError, match=r"1 of its 2 grey levels \(2\) cover only specks"):
        check_label_map(with_region(4, 4))      # 16 pixels


def test_many_specks_read_as_an_anti_aliased_map():
    def specks(n):
        lab = np.zeros((100, 100), np.uint8)
        lab[10:60, 10:60] = 200
        for k in range(n):
            lab[80, 5 + 10 * k] = 1 + k
        return lab

    with pytest.raises(MIDIInputError, match=r"7 of its 8 grey levels .* stray pixels"):
        check_label_map(specks(7))
    with pytest.raises(MIDIInputError, match=r"8 of its 9 grey levels \(1, 2, 3, 4, 5, 6, 7, 8\) .* looks like an anti-aliased"):
        check_label_map(specks(8))
    with pytest.raises(MIDIInputError, match=r"9 of its 10 grey levels \(1, 2, 3, 4, 5, 6, 7, 8, \.\.\.\)"):
        check_label_map(specks(9))


def test_split_keeps_the_first_objects_in_grey_order():
    lab, _ = layout()
    lab = np.where(lab > 0, 90 - 30 * lab, 0).astype(np.uint8)   # 60, 30, 0 -> 1: 60, 2: 30, 3: background
    ids, masks = split_label_map(lab)
    assert ids.tolist() == [30, 60] and ids.dtype == np.int64
    np.testing.assert_array_equal(masks, np.stack([lab == 30, lab == 60]))
    ids, masks = split_label_map(lab, max_instances=1)
    assert ids.tolist() == [30] and masks.shape == (1, 48, 64)
    ids, masks = split_label_map(np.zeros((6, 7), np.uint8))
    assert ids.shape == (0,) and masks.shape == (0, 6, 7) and masks.dtype == bool


def test_masks_from_label_map_names_the_input():
    lab, _ = layout()
    ids, masks = masks_from_label_map(lab, (48, 64))
    assert ids.tolist() == [1, 2, 3]
    with pytest.raises(MIDIInputError, match=r"^--seg: 64x48 \(WxH\), but the image is"):
        masks_from_label_map(lab, (40, 64), what="--seg")
    with pytest.raises(MIDIInputError, match=r"^the seg map: 64x48 \(WxH\)"):
        masks_from_label_map(lab, (40, 64))


def test_masks_to_label_map():
    m = np.zeros((3, 4, 5), np.float32)
    m[0, :2], m[1, 1:3], m[2, 3, 4] = 1.0, 0.51, 0.5
    lab = masks_to_label_map(m)
    assert lab.dtype == np.uint8
    expected = np.zeros((4, 5), np.uint8)
    expected[:2], expected[1:3] = 1, 2          # later masks win; 0.5 is not inside
    np.testing.assert_array_equal(lab, expected)
    assert masks_to_label_map(np.ones((255, 2, 2), bool)).max() == 255
    with pytest.raises(MIDIInputError, match="at most 255 instances"):
        masks_to_label_map(np.ones((256, 2, 2), bool))
    with pytest.raises(MIDIInputError, match=r"expected \(N,H,W\), got shape \(4, 5\)"):
        masks_to_label_map(np.ones((4, 5)))


def test_integer_maps_switch_to_int32_above_255():
    lab, _ = layout()
    for top, dtype in ((255, np.uint8), (256, np.int32)):
        arr = ((lab > 0) * top).astype(np.uint16)
        for seg in (Image.fromarray(arr), arr, arr.astype(np.int64)):
            out = to_label_map(seg)
            assert out.dtype == dtype and out.max() == top, (top, type(seg))


def test_more_than_max_levels_colours_are_refused_even_if_only_green_differs():
    rgb = np.zeros((8, 8 * (MAX_LEVELS + 1), 3), np.uint8)
    for k in range(MAX_LEVELS + 1):
        rgb[:, 8 * k:8 * k + 8] = (10, 3 * k, 20)
    with pytest.raises(MIDIInputError, match=f"{MAX_LEVELS + 1} different colours"):
        to_label_map(rgb)


def test_grey_0_and_1_colours_without_a_black_background():
    _, rgb = layout()
    full = rgb.copy()
    full[(rgb == 0).all(-1)] = (0, 0, 1)          # grey 0, but not black: no background colour at all
    with pytest.raises(MIDIInputError, match=r"#000001 have the same grey value 0 .* vanish into the background"):
        to_label_map(full)
    dim = rgb.copy()
    dim[44:48, :] = (1, 1, 1)                     # grey 1 next to a black background: an object
    assert 1 in np.unique(to_label_map(dim))


def test_float_maps_off_the_grey_levels():
    lab, _ = layout()
    # deviations up to 0.02 of a level are rounding noise, even where two values share a level
    x = 0.02 / 255
    assert x * 255.0 == 0.02
    grey = lab.astype(np.float64) * 60 / 255
    grey[0, 0] = x
    np.testing.assert_array_equal(to_label_map(grey), lab * 60)
    noisy = grey.copy()
    noisy[1, 1] = 1e-6
    np.testing.assert_array_equal(to_label_map(noisy), lab * 60)
    # further off: accepted while every distinct value keeps a level of its own (odd-sized maps too)
    shifted = (lab.astype(np.float64) * 60 + 0.3 * (lab > 0))[:47, :63] / 255
    np.testing.assert_array_equal(to_label_map(shifted), (lab * 60)[:47, :63])
    # colours: per colour, not per channel (100.3 and 100.0 share a level in different colours)
    rgb = np.zeros((40, 40, 3))
    rgb[5:20, 5:20] = (100.3, 50, 50)
    rgb[22:38, 5:38] = (100.0, 60, 60)
    want = np.asarray(Image.fromarray(np.round(rgb).astype(np.uint8)).convert("L"))
    np.testing.assert_array_equal(to_label_map(rgb[None] / 255), want)
    # values that do share a level once rounded are a smooth ramp, refused
    ramp = grey.copy()
    ramp[2, 2] = 0.3 / 255
    with pytest.raises(MIDIInputError, match="values between grey levels"):
        to_label_map(ramp)


def test_float_maps_must_be_in_0_1():
    lab, _ = layout()
    with pytest.raises(MIDIInputError, match=r"seg map: values from 0 to 180, but IMAGE values go from 0 to 1"):
        to_label_map(lab.astype(np.float32) * 60)


def _with(h, w, *regions):
    lab = np.zeros((h, w), np.uint8)
    lab[10:60, 10:60] = 200                          # a real object
    for value, (ys, xs) in regions:
        lab[ys, xs] = value
    return lab


def test_lines_two_pixels_thick_are_not_objects():
    for region in ((slice(70, 72), slice(5, 95)),    # horizontal: each pixel has one outside neighbour
                   (slice(5, 95), slice(70, 72))):   # vertical
        with pytest.raises(MIDIInputError, match=r"1 of its 2 grey levels \(9\) cover only specks or 1-2 pixel thin"):
            check_label_map(_with(100, 100, (9, region)))


def test_the_interior_share_is_exact():
    lab = _with(100, 100, (9, (slice(70, 73), slice(70, 74))))
    lab[70, 70] = lab[72, 73] = 0                     # 10 pixels, 2 of them interior: exactly 20 %
    check_label_map(lab)
    blob = _with(100, 100, (9, (slice(70, 73), slice(70, 73))), (9, (slice(71, 72), slice(73, 95))))
    with pytest.raises(MIDIInputError, match=r"\(9\) cover only specks"):
        check_label_map(blob)                         # 31 pixels, 2 interior: a line with a knot


def test_a_map_with_one_speck_is_refused_and_64_levels_are_allowed():
    lab = np.zeros((100, 100), np.uint8)
    lab[50, 50] = 7
    with pytest.raises(MIDIInputError, match=r"1 of its 1 grey levels \(7\)"):
        check_label_map(lab)
    check_label_map(np.zeros((100, 100), np.uint8))   # nothing to check
    levels = np.zeros((80, 8 * MAX_LEVELS), np.uint8)
    for k in range(MAX_LEVELS):
        levels[:, 8 * k:8 * k + 8] = k + 1
    check_label_map(levels)
    levels[:5, :8] = MAX_LEVELS + 1
    with pytest.raises(MIDIInputError, match=f"{MAX_LEVELS + 1} different grey levels"):
        check_label_map(levels)


def test_a_two_pixel_region_in_a_one_pixel_wide_map_is_an_object():
    # both of its pixels are interior (each one's only neighbour is the other), and 2 pixels are
    # not a speck
    check_label_map(np.array([[5], [5]], np.uint8))


def test_masks_to_label_map_takes_a_list():
    m = [np.eye(3, dtype=bool), np.fliplr(np.eye(3, dtype=bool))]
    np.testing.assert_array_equal(masks_to_label_map(m), [[1, 0, 2], [0, 2, 0], [2, 0, 1]])


def test_off_grid_colours_are_compared_as_whole_pixels():
    # two pixels that differ only in G and B (60 vs 50) but share an off-grid R (100.3 vs 100.0):
    # distinct colours, so accepted, whatever way the channel values line up in memory
    px = np.zeros((2, 4, 3))
    px[0, 1] = (100.3, 60, 60)
    px[1, 1] = (100.0, 50, 50)
    want = np.asarray(Image.fromarray(np.round(px).astype(np.uint8)).convert("L"))
    np.testing.assert_array_equal(to_label_map(px[None] / 255), want)
