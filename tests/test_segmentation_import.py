"""SegmentScene import modes: label maps read exactly as the official code does, and mask batches."""
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from midi_model.errors import MIDIInputError
from midi_model.segmentation import segment_scene

SHARED = Path(os.environ.get("MIDI_SHARED") or Path(__file__).resolve().parents[2] / "shared")
EXAMPLES = sorted((SHARED / "data" / "examples").glob("*/*_seg.png"))
GOLDEN = SHARED / "golden" / "reference_run.npz"


def test_examples_present():
    # the shared data must be there: otherwise the tests below would silently test nothing
    assert len(EXAMPLES) >= 10, f"no example seg maps under {SHARED} (set MIDI_SHARED)"


@pytest.mark.parametrize("seg_path", EXAMPLES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_label_map_import_matches_official_reading(seg_path):
    seg = Image.open(seg_path)
    lmap = np.asarray(seg.convert("L"))
    expected = np.unique(lmap)
    expected = expected[expected != 0]
    rgb_path = seg_path.with_name(seg_path.name.replace("_seg.png", "_rgb.png"))
    image = Image.open(rgb_path) if rgb_path.exists() else None
    res = segment_scene(image, "label_map", seg=seg)
    assert res.ids.tolist() == expected.tolist()
    assert res.masks.dtype == bool and res.masks.shape == (len(expected),) + lmap.shape
    for i, v in enumerate(expected):
        assert np.array_equal(res.masks[i], lmap == v)
    assert res.preview.shape == lmap.shape + (3,) and res.preview.dtype == np.uint8
    assert res.labels == [f"seg {v}" for v in expected]
    # the label map of the result puts instance i at value i+1 and covers the same pixels
    assert np.array_equal(res.label_map > 0, lmap > 0)


def test_label_map_import_matches_golden():
    g = np.load(GOLDEN)
    seg = Image.open(SHARED / "data/examples/Realistic-Style/01_seg.png").convert("L").resize((256, 256), Image.NEAREST)
    rgb = Image.open(SHARED / "data/examples/Realistic-Style/01_rgb.png").convert("RGB").resize((256, 256), Image.BICUBIC)
    assert np.array_equal(np.asarray(seg), g["inputs_seg"])
    res = segment_scene(rgb, "label_map", seg=seg, max_instances=3, too_many="keep_first")
    assert res.ids.tolist() == g["instance_ids"].tolist()
    assert np.array_equal(np.where(res.masks, 255, 0).astype(np.uint8), g["instance_mask"])


def test_label_map_import_as_comfy_image_tensor():
    # ComfyUI hands the seg map as a float (1,H,W,3) IMAGE: values must round back exactly
    seg = Image.open(SHARED / "data/examples/Realistic-Style/00_seg.png")
    rgb = np.asarray(seg.convert("RGB"))
    tensor = torch.from_numpy(rgb.astype(np.float32) / 255.0)[None]
    ref = segment_scene(None, "label_map", seg=seg)
    res = segment_scene(None, "label_map", seg=tensor)
    assert res.ids.tolist() == ref.ids.tolist()
    assert np.array_equal(res.masks, ref.masks)


def test_colour_map_uses_luma_order():
    seg = np.zeros((32, 32, 3), np.uint8)
    seg[0:8, 0:8] = (255, 0, 0)   # luma 76
    seg[16:24, 16:24] = (0, 0, 255)   # luma 29
    seg[24:32, 0:8] = (0, 255, 0)   # luma 150
    res = segment_scene(np.zeros((32, 32, 3), np.uint8), "label_map", seg=seg)
    assert res.ids.tolist() == [29, 76, 150]
    assert res.masks[0][16, 16] and res.masks[1][0, 0] and res.masks[2][24, 0]


def test_label_map_errors():
    img = np.zeros((32, 48, 3), np.uint8)
    with pytest.raises(MIDIInputError, match=r"the seg map: 32x32 \(WxH\), but the image is 48x32 \(WxH\)"):
        segment_scene(img, "label_map", seg=np.ones((32, 32), np.uint8))
    with pytest.raises(MIDIInputError, match="no non-zero values"):
        segment_scene(img, "label_map", seg=np.zeros((32, 48), np.uint8))
    many = np.repeat(np.arange(1, 10, dtype=np.uint8), 6)[None].repeat(32, 0)[:, :48]
    with pytest.raises(MIDIInputError, match="found 8 objects but max_instances is 7.*merge or erase"):
        segment_scene(img, "label_map", seg=many)
    with pytest.raises(MIDIInputError, match="above 7.*allow_more_instances=True"):
        segment_scene(img, "label_map", seg=many, max_instances=8)
    with pytest.warns(UserWarning, match="more than the 7 MIDI was trained with"):
        res = segment_scene(img, "label_map", seg=many, max_instances=8, allow_more_instances=True)
    assert len(res) == 8
    res = segment_scene(img, "label_map", seg=many, max_instances=3, too_many="keep_first")
    assert res.ids.tolist() == [1, 2, 3]


def _batch():
    m = np.zeros((3, 20, 30), np.float32)
    m[0, 2:8, 2:8] = 1.0
    m[1, 5:15, 5:25] = 1.0    # overlaps mask 0
    m[2, 16:19, 1:4] = 1.0
    return m


def test_mask_batch_import_order_and_overlap():
    img = np.zeros((20, 30, 3), np.uint8)
    res = segment_scene(img, "masks", masks=torch.from_numpy(_batch()))
    assert res.masks.shape == (3, 20, 30) and res.masks.dtype == bool
    assert res.ids.tolist() == [1, 2, 3]
    # later wins the shared pixels, as in the official label map
    assert res.masks[1][6, 6] and not res.masks[0][6, 6]
    assert res.masks.sum(0).max() == 1
    early = segment_scene(img, "masks", masks=_batch(), overlap="earlier")
    assert early.masks[0][6, 6] and not early.masks[1][6, 6]
    # imports are not cleaned unless asked: the 9-pixel mask 3 stays
    assert res.masks[2].sum() == 9
    with pytest.warns(UserWarning, match="dropped mask 3: no pixels left"):
        cleaned = segment_scene(img, "masks", masks=_batch(), remove_small=True, min_area=10)
    assert cleaned.ids.tolist() == [1, 2]


def test_mask_batch_empty_and_size_errors():
    img = np.zeros((20, 30, 3), np.uint8)
    m = _batch()
    m[1] = 0
    with pytest.warns(UserWarning, match=r"dropped empty mask\(s\) 2 of 3"):
        res = segment_scene(img, "masks", masks=m)
    assert res.ids.tolist() == [1, 3]
    with pytest.raises(MIDIInputError, match=r"mask\(s\) 2 of 3 are empty"):
        segment_scene(img, "masks", masks=m, empty_masks="error")
    with pytest.raises(MIDIInputError, match="all masks in the batch are empty"):
        segment_scene(img, "masks", masks=np.zeros((2, 20, 30)))
    with pytest.raises(MIDIInputError, match=r"the masks: 30x10 \(WxH\), but the image is 30x20 \(WxH\)"):
        segment_scene(img, "masks", masks=np.ones((2, 10, 30)))
    with pytest.raises(MIDIInputError, match="a batch of 2 images, but MIDI takes one scene image"):
        segment_scene(np.zeros((2, 20, 30, 3), np.float32), "masks", masks=m)
    with pytest.raises(MIDIInputError, match="unknown SegmentScene mode"):
        segment_scene(img, "magic", masks=m)
