"""SAM through the same loader the node uses: a tiny random-weight SAM saved as .pth/.safetensors,
box / point / automatic modes, and every checkpoint error."""
import dataclasses
import warnings

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor

import segment_anything
from midi_model.errors import MIDIInputError, MIDILoadError
from midi_model.segmentation import (area_to_pixels, clean_mask, filter_automatic_masks, generate_candidates, infer_sam_config, load_sam,
                                     segment_scene)
from midi_model.testing import TINY_SAM_CONFIG, save_tiny_sam

RAW = dict(polygon_refinement=False, remove_small=False, fill_holes=False)   # masks as SAM gives them
BOX_A, BOX_B = [10, 10, 70, 60], [50, 30, 120, 90]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("sams") / "sam_tiny.pth"
    original = save_tiny_sam(path, seed=0)
    return path, original, load_sam(path, device="cpu")


@pytest.fixture(scope="module")
def image():
    rs = np.random.RandomState(0)
    img = (rs.rand(96, 128, 3) * 255).astype(np.uint8)
    img[20:60, 20:70] = (200, 50, 50)
    return img


def _reference(sam, img, boxes=None, groups=None, select="best"):
    """Masks straight from segment_anything's predictor on the original (unsaved) module."""
    p = SamPredictor(sam)
    p.set_image(img)
    out = []
    for b in boxes or []:
        m, s, _ = p.predict(box=np.asarray(b, np.float32), multimask_output=True)
        out.append(m.any(0) if select == "union" else m[np.argmax(s)])
    for xy, lab in groups or []:
        m, s, _ = p.predict(point_coords=np.asarray(xy, np.float32), point_labels=np.asarray(lab),
                            multimask_output=True)
        out.append(m.any(0) if select == "union" else m[np.argmax(s)])
    return np.stack(out)


ARCH_FIELDS = ("img_size", "patch_size", "encoder_embed_dim", "encoder_depth", "encoder_num_heads",
               "encoder_mlp_ratio", "encoder_window_size", "encoder_global_attn_indexes", "prompt_embed_dim",
               "mask_in_chans", "num_multimask_outputs", "decoder_depth", "decoder_mlp_dim", "decoder_num_heads",
               "decoder_attention_downsample_rate", "iou_head_depth", "iou_head_hidden_dim")


def test_loader_infers_layout_and_loads_exact_weights(tiny):
    path, original, sam = tiny
    for field in ARCH_FIELDS:
        assert getattr(sam.midi_sam_config, field) == getattr(TINY_SAM_CONFIG, field), field
    ref = original.state_dict()
    got = sam.state_dict()
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)


def test_loader_rebuilds_a_non_standard_layout_exactly(tmp_path, image):
    # 3 blocks, 4 heads, window 4, a global block in the middle, 4 decoder heads, downsample 4
    cfg = dataclasses.replace(TINY_SAM_CONFIG, encoder_depth=3, encoder_num_heads=4, encoder_global_attn_indexes=(1,),
                              decoder_num_heads=4, decoder_attention_downsample_rate=4, mask_in_chans=4)
    path = tmp_path / "sam_odd.pth"
    original = save_tiny_sam(path, seed=3, config=cfg)
    # decoder heads leave no trace in the weights: the loader picks 8 unless told
    assert load_sam(path).midi_sam_config.decoder_num_heads == 8
    sam = load_sam(path, config_overrides={"decoder_num_heads": 4})
    for field in ARCH_FIELDS:
        assert getattr(sam.midi_sam_config, field) == getattr(cfg, field), field
    ref = _reference(original, image, boxes=[BOX_A], select="union")
    got = segment_scene(image, "boxes", boxes=[BOX_A], sam=sam, multimask="union", **RAW)
    assert ref[0].any() and np.array_equal(got.masks[0], ref[0])


@pytest.mark.parametrize("builder, name, heads, globals_", [
    ("build_sam_vit_b", "vit_b", 12, (2, 5, 8, 11)),
    ("build_sam_vit_l", "vit_l", 16, (5, 11, 17, 23)),
    ("build_sam_vit_h", "vit_h", 16, (7, 15, 23, 31)),
])
def test_released_layouts_are_recognised(builder, name, heads, globals_):
    # the released architectures, built on the meta device: shapes only, no memory, no download
    with torch.device("meta"):
        sd = getattr(segment_anything, builder)().state_dict()
    cfg = infer_sam_config(sd)
    assert (cfg.model_type, cfg.encoder_num_heads, cfg.encoder_global_attn_indexes) == (name, heads, globals_)
    assert (cfg.img_size, cfg.encoder_window_size, cfg.prompt_embed_dim, cfg.decoder_num_heads) == (1024, 14, 256, 8)


def test_safetensors_checkpoint_loads_the_same(tmp_path, tiny):
    _, original, _ = tiny
    path = tmp_path / "sam_tiny.safetensors"
    save_tiny_sam(path, seed=0, safetensors=True)
    sam = load_sam(path)
    assert all(torch.equal(v, sam.state_dict()[k]) for k, v in original.state_dict().items())


def test_box_mode_matches_predictor_and_keeps_prompt_order(tiny, image):
    _, original, sam = tiny
    ref = _reference(original, image, boxes=[BOX_A, BOX_B])
    assert ref[0].any() and (ref[1] & ~ref[0]).any()           # non-trivial, so the check means something
    res = segment_scene(image, "boxes", boxes="10,10,70,60; 50,30,120,90", sam=sam, multimask="best",
                        overlap="earlier", **RAW)
    assert res.masks.shape == (2, 96, 128) and res.masks.dtype == bool
    assert res.labels == ["box 1", "box 2"] and res.ids.tolist() == [1, 2]
    assert np.array_equal(res.masks[0], ref[0])
    assert np.array_equal(res.masks[1], ref[1] & ~ref[0])
    assert res.preview.shape == (96, 128, 3) and res.preview.dtype == np.uint8
    # the other order swaps the instances
    rev = segment_scene(image, "boxes", boxes=np.array([BOX_B, BOX_A]), sam=sam, multimask="best",
                        overlap="earlier", **RAW)
    assert np.array_equal(rev.masks[0], ref[1]) and np.array_equal(rev.masks[1], ref[0] & ~ref[1])
    assert np.allclose(rev.scores, res.scores[::-1])


def test_box_mode_defaults_union_refined_disjoint(tiny, image):
    _, original, sam = tiny
    union = _reference(original, image, boxes=[BOX_A, BOX_B], select="union")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # random weights may leave box 1 nothing; that warning is tested below
        res = segment_scene(image, "boxes", boxes=[BOX_A, BOX_B], sam=sam)
    assert res.masks.dtype == bool and res.masks.shape[1:] == (96, 128) and 1 <= len(res) <= 2
    assert res.masks.sum(0).max() == 1
    # the last box keeps its whole cleaned mask: union of SAM's 3 candidates, largest outline
    # filled, holes and specks under 0.1 % of the image handled; earlier boxes lose shared pixels
    px = area_to_pixels(0.001, 96 * 128)
    cleaned = [clean_mask(u, min_area_px=px, fill=True, max_hole_px=px, refine=True) for u in union]
    assert res.labels[-1] == "box 2" and np.array_equal(res.masks[-1], cleaned[1])
    if len(res) == 2:
        assert not (res.masks[0] & ~cleaned[0]).any()


def test_point_mode_groups_and_order(tiny, image):
    _, original, sam = tiny
    groups = [([[30, 30]], [1]), ([[90, 20]], [1]), ([[60, 80], [20, 20]], [1, 0])]
    ref = _reference(original, image, groups=groups)
    assert all(r.any() for r in ref)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = segment_scene(image, "points", points="30,30 | 90,20 | 60,80; 20,20,0", sam=sam, multimask="best",
                            overlap="later", **RAW)
    # later groups win shared pixels; what is left of each earlier group stays in place, and a
    # group left with nothing is dropped with a warning naming it
    expected = [ref[i] & ~ref[i + 1:].any(0) for i in range(3)]
    kept = [i for i in range(3) if expected[i].any()]
    dropped = [f"points {i + 1}" for i in range(3) if i not in kept]
    assert [str(w.message) for w in caught if "dropped" in str(w.message)] == (
        [f"SegmentScene: dropped {', '.join(dropped)}: no pixels left after clean-up and overlap resolution "
         f"(overlap='later')"] if dropped else [])
    assert kept[-1] == 2 and len(kept) >= 2
    assert res.labels == [f"points {i + 1}" for i in kept] and res.masks.dtype == bool
    for k, i in enumerate(kept):
        assert np.array_equal(res.masks[k], expected[i])


def test_automatic_mode_produces_masks(tiny, image):
    _, _, sam = tiny
    kw = dict(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    res = segment_scene(image, "automatic", sam=sam, min_kept_fraction=0.2, **kw, **RAW)
    assert len(res) >= 1 and res.masks.dtype == bool and res.masks.shape[1:] == (96, 128)
    assert res.labels == [f"object {i + 1}" for i in range(len(res))]
    areas = res.masks.reshape(len(res), -1).sum(1)
    assert (np.diff(areas) <= 0).all() and res.masks.sum(0).max() == 1
    # same as generator + filter by hand
    cands, scores = generate_candidates(sam, image, **kw)
    expected, _, _ = filter_automatic_masks(cands, scores, min_area_px=0, min_kept_fraction=0.2)
    assert np.array_equal(res.masks, expected)


def test_automatic_mode_nothing_found_says_what_to_change(tiny, image):
    _, _, sam = tiny
    # random weights never reach SAM's default quality thresholds
    with pytest.raises(MIDIInputError, match=r"kept no objects: lower pred_iou_thresh \(now 0.88\)"):
        segment_scene(image, "automatic", sam=sam, points_per_side=4)


def test_sam_missing_and_path_given_as_string(tiny, image):
    path, _, _ = tiny
    with pytest.raises(MIDIInputError, match="mode 'boxes' needs a SAM model"):
        segment_scene(image, "boxes", boxes="1,1,20,20")
    res = segment_scene(image, "boxes", boxes="10,10,70,60", sam=str(path), device="cpu", multimask="best", **RAW)
    assert len(res) == 1
    # a ComfyUI IMAGE (1,H,W,3) float tensor gives the same masks as the uint8 array
    comfy = torch.from_numpy(image.astype(np.float32) / 255.0)[None]
    same = segment_scene(comfy, "boxes", boxes="10,10,70,60", sam=str(path), multimask="best", **RAW)
    assert np.array_equal(same.masks, res.masks)
    with pytest.raises(MIDIInputError, match="every box gave an empty mask after clean-up: lower min_area"):
        segment_scene(image, "boxes", boxes="10,10,70,60", sam=str(path), min_area=100000)
    with pytest.raises(MIDIInputError, match="needs at least one box"):
        segment_scene(image, "boxes", boxes="", sam=str(path))
    with pytest.raises(MIDIInputError, match="mode 'points' needs points"):
        segment_scene(image, "points", points=" ", sam=str(path))


def test_checkpoint_errors_name_the_file(tmp_path, tiny):
    path, original, _ = tiny
    with pytest.raises(MIDILoadError, match=r"nope\.pth does not exist"):
        load_sam(tmp_path / "nope.pth")
    other = tmp_path / "not_sam.pth"
    torch.save({"fc.weight": torch.zeros(3, 3)}, other)
    with pytest.raises(MIDILoadError, match=r"not_sam\.pth is not a SAM v1 checkpoint.*sam_vit_b"):
        load_sam(other)
    hf = tmp_path / "hf_sam.pth"
    torch.save({"vision_encoder.patch_embed.projection.weight": torch.zeros(2)}, hf)
    with pytest.raises(MIDILoadError, match="Hugging Face transformers SAM"):
        load_sam(hf)
    trunc = tmp_path / "trunc.pth"
    trunc.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(MIDILoadError, match=r"cannot read SAM checkpoint .*trunc\.pth"):
        load_sam(trunc)
    pickled = tmp_path / "pickled.pth"
    torch.save({"cfg": warnings.WarningMessage}, pickled)   # a class: weights_only must refuse it
    with pytest.raises(MIDILoadError, match=r"pickled\.pth.*not a plain weights file"):
        load_sam(pickled)
    sd = dict(original.state_dict())
    sd["mask_decoder.hf_token.weight"] = torch.zeros(1, 32)   # a SAM-HQ style extra
    hq = tmp_path / "hq.pth"
    torch.save(sd, hq)
    with pytest.raises(MIDILoadError, match=r"hq\.pth does not match.*hf_token.*not supported"):
        load_sam(hq)
    sd = dict(original.state_dict())
    sd["prompt_encoder.no_mask_embed.weight"] = torch.zeros(1, 7)
    bad = tmp_path / "bad_shape.pth"
    torch.save(sd, bad)
    with pytest.raises(MIDILoadError, match=r"bad_shape\.pth.*size mismatch.*no_mask_embed"):
        load_sam(bad)
