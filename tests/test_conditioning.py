"""Instance inputs: validation messages, the official padding, white-outside instance RGB."""
from __future__ import annotations

import numpy as np
import pytest

from midi_model.conditioning import check_masks, pad_scene, prepare_instances, split_instances
from midi_model.errors import MIDIInputError


def rgb(h=64, w=64):
    return np.random.RandomState(0).randint(0, 255, (h, w, 3)).astype(np.uint8)


def box_mask(h, w, y0, y1, x0, x1):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def test_masks_of_another_size():
    with pytest.raises(MIDIInputError, match=r"the masks: 32x32 \(WxH\), but the image is 64x64 \(WxH\): give the masks at the image size"):
        check_masks(rgb(), np.ones((1, 32, 32), bool))


def test_no_instances():
    with pytest.raises(MIDIInputError, match=r"no instances given; segment the image first"):
        check_masks(rgb(), np.zeros((0, 64, 64), bool))


def test_empty_mask_is_named():
    masks = np.stack([box_mask(64, 64, 0, 9, 0, 9), np.zeros((64, 64), bool)])
    with pytest.raises(MIDIInputError, match=r"masks: mask 2 of 2 is empty"):
        check_masks(rgb(), masks)


def test_too_many_instances():
    masks = np.stack([box_mask(64, 64, i, i + 2, 0, 5) for i in range(0, 18, 2)])
    with pytest.raises(MIDIInputError, match=r"9 instances given, more than the allowed 7"):
        check_masks(rgb(), masks, max_instances=7)


def test_max_instances_allows_exactly_that_many():
    masks = np.stack([box_mask(64, 64, i, i + 2, 0, 5) for i in range(0, 14, 2)])
    assert check_masks(rgb(), masks, max_instances=7).shape == (7, 64, 64)


def test_more_instances_than_trained_warn(recwarn):
    masks = np.stack([box_mask(64, 64, i, i + 2, 0, 5) for i in range(0, 16, 2)])
    check_masks(rgb(), masks[:7])
    assert not [w for w in recwarn if "trained with" in str(w.message)]
    with pytest.warns(UserWarning, match=r"masks: 8 instances, more than the 7 MIDI was trained with"):
        check_masks(rgb(), masks)


def test_image_too_small():
    with pytest.raises(MIDIInputError, match=r"image is 16x16 \(WxH\): at least 32 px"):
        check_masks(rgb(16, 16), np.ones((1, 16, 16), bool))


def test_float_masks_and_images_are_accepted():
    img = rgb().astype(np.float32) / 255.0
    inst, mask, scene = prepare_instances(img, box_mask(64, 64, 5, 20, 5, 20).astype(np.float32)[None])
    assert inst.dtype == np.uint8 and mask.max() == 255 and scene.shape == (64, 64, 3)


def test_instance_rgb_is_white_outside():
    im = rgb()
    m = box_mask(64, 64, 10, 20, 30, 40)[None]
    inst, mask = split_instances(im, m)
    assert (inst[0][~m[0]] == 255).all()
    np.testing.assert_array_equal(inst[0][m[0]], im[m[0]])
    assert set(np.unique(mask)) == {0, 255}


def test_padding_grows_and_centres_like_the_official_code():
    im = rgb(100, 100)
    m = box_mask(100, 100, 10, 96, 10, 96)[None]  # rows/cols 10..95: extent 2*45 = 90 > 80
    out, mo = pad_scene(im, m)
    side = int(90 / 4 * 5)  # 112
    off = (side - 100) // 2
    assert out.shape == (side, side, 3)
    np.testing.assert_array_equal(out[off:off + 100, off:off + 100], im)
    assert (out[:off] == 255).all() and (out[:, :off] == 255).all()
    np.testing.assert_array_equal(mo[0, off:off + 100, off:off + 100], m[0])
    assert mo.sum() == m.sum()


def test_padding_on_a_wide_image_keeps_the_official_axis_swap():
    im = rgb(60, 100)
    m = box_mask(60, 100, 20, 30, 40, 60)[None]
    out, mo = pad_scene(im, m)
    # official: rows are compared with width//2 (50) -> extent 60 > 0.8*height -> height 75,
    # the image pasted 7 rows down, then padded right/bottom to 100x100
    assert out.shape == (100, 100, 3)
    np.testing.assert_array_equal(out[7:67], im)
    assert (out[:7] == 255).all() and (out[67:] == 255).all()
    np.testing.assert_array_equal(mo[0, 7:67], m[0])


def official_padding(im: np.ndarray, masks: np.ndarray):
    """``do_image_padding`` as midi_facts.md describes it, on PIL images: the extent of all objects
    around the centre (rows against width//2, columns against height//2), a side grown to
    int(1.25 L) when L > 0.8 of it, the image pasted centred on white, then padded right/bottom."""
    from PIL import Image

    height, width = im.shape[:2]
    rows, cols = np.nonzero(masks.any(0))
    L = max(max(abs(int(rows.max()) - width // 2), abs(int(rows.min()) - width // 2)) * 2,
            max(abs(int(cols.max()) - height // 2), abs(int(cols.min()) - height // 2)) * 2)
    new_w = int(L / 4 * 5) if L > width * 0.8 else width
    new_h = int(L / 4 * 5) if L > height * 0.8 else height
    canvas = Image.new("RGB", (new_w, new_h), (255, 255, 255))
    canvas.paste(Image.fromarray(im), ((new_w - width) // 2, (new_h - height) // 2))
    side = max(new_w, new_h)
    square = Image.new("RGB", (side, side), (255, 255, 255))
    square.paste(canvas, (0, 0))
    out_masks = []
    for m in masks:
        c = Image.new("L", (new_w, new_h), 0)
        c.paste(Image.fromarray(m.astype(np.uint8) * 255), ((new_w - width) // 2, (new_h - height) // 2))
        s = Image.new("L", (side, side), 0)
        s.paste(c, (0, 0))
        out_masks.append(np.asarray(s) > 0)
    return np.asarray(square), np.stack(out_masks)


def padding_cases():
    r = np.random.RandomState(3)
    cases = [((100, 100), [(10, 90, 10, 90)]),      # extent exactly 80 = 0.8 x 100: not grown
             ((100, 100), [(10, 91, 10, 91)]),      # 82: grown
             ((100, 100), [(50, 51, 50, 51)]),      # one pixel at the centre
             ((100, 100), [(0, 1, 0, 1)]),          # one pixel in the corner
             ((60, 100), [(20, 30, 40, 60)]),       # wide, the axis swap decides
             ((100, 60), [(5, 95, 20, 40)]),        # tall
             ((80, 120), [(0, 80, 0, 120)]),        # the objects fill the frame
             ((101, 101), [(0, 60, 40, 60)]),       # odd sides: the centre is side // 2
             ((101, 101), [(40, 101, 40, 60)]),
             ((101, 101), [(40, 60, 0, 60)]),
             ((101, 101), [(40, 60, 40, 101)])]
    for _ in range(12):
        h, w = r.randint(40, 130, 2)
        boxes = []
        for _ in range(r.randint(1, 4)):
            y0, x0 = r.randint(0, h - 1), r.randint(0, w - 1)
            boxes.append((y0, r.randint(y0 + 1, h + 1), x0, r.randint(x0 + 1, w + 1)))
        cases.append(((int(h), int(w)), boxes))
    return cases


@pytest.mark.parametrize("size, boxes", padding_cases())
def test_padding_equals_the_official_paste(size, boxes):
    h, w = size
    im = rgb(h, w)
    masks = np.stack([box_mask(h, w, *b) for b in boxes])
    want_rgb, want_masks = official_padding(im, masks)
    out, mo = pad_scene(im, masks)
    assert out.dtype == np.uint8 and mo.dtype == bool
    np.testing.assert_array_equal(out, want_rgb)
    np.testing.assert_array_equal(mo, want_masks)


def test_padding_without_object_pixels_keeps_the_scene():
    im = rgb(40, 60)
    masks = np.zeros((2, 40, 60), bool)
    out, mo = pad_scene(im, masks)
    assert out is im and mo is masks


def test_prepare_instances_pads_when_asked_and_warns_about_cut_objects(recwarn):
    im = rgb(60, 100)
    masks = np.stack([box_mask(60, 100, 20, 30, 40, 60), box_mask(60, 100, 5, 50, 85, 99)])
    with pytest.warns(UserWarning, match=r"100x60 \(WxH\), not square: .* centre 60x60 square, and object\(s\) 2 reach"):
        inst, mask, scene = prepare_instances(im, masks)
    np.testing.assert_array_equal(scene, im)
    assert inst.shape == (2, 60, 100, 3) and mask.shape == (2, 60, 100)
    recwarn.clear()
    inst, mask, scene = prepare_instances(im, masks, image_padding=True)
    want_rgb, want_masks = pad_scene(im, masks)
    assert scene.shape[0] == scene.shape[1]
    np.testing.assert_array_equal(scene, want_rgb)
    np.testing.assert_array_equal(mask, want_masks.astype(np.uint8) * 255)
    assert not [w for w in recwarn if "not square" in str(w.message)]
