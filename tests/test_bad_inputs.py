"""The bad-input table: ordinary mistakes and odd inputs against the CLI, the library and the nodes.

Every row asserts the exact message (it names the input and the fix) and that nothing was
written. CLI rows also prove the check ran before the slow stages: loading the model is
replaced by a trap that fails the row. Rows that must give a correct result say what it is.
"""
from __future__ import annotations

import errno
import io
import os
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import EXAMPLES
from midi_model import inputs
from midi_model.__main__ import main
from midi_model.errors import MIDIInputError, MIDIOutputError

EX = EXAMPLES / "Realistic-Style"


# ------------------------------------------------------------------------------------------------
# input files, made once
def _save(path, arr, **kw):
    Image.fromarray(arr).save(path, **kw)
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad_inputs")
    seg = np.asarray(Image.open(EX / "01_seg.png").convert("L"))  # 1024x1024, values 0/29/76/150
    f = {"image": str(EX / "01_rgb.png"), "seg": str(EX / "01_seg.png"), "dir": str(d)}
    Image.open(EX / "01_seg.png").convert("RGB").save(d / "seg.jpg", quality=90)
    f["seg_jpg"] = str(d / "seg.jpg")
    f["seg_aa"] = _save(d / "seg_aa.png", np.asarray(Image.fromarray(seg).resize((300, 300), Image.BILINEAR)
                                                     .resize((1024, 1024), Image.BILINEAR)))
    specks = seg.copy()
    specks[5, 5], specks[9, 900], specks[700, 3] = 200, 201, 202
    f["seg_specks"] = _save(d / "seg_specks.png", specks)
    colours = np.zeros((1024, 1024, 3), np.uint8)
    colours[100:300, 100:300] = (255, 0, 0)     # grey 76
    colours[500:700, 500:700] = (76, 76, 76)    # grey 76 too: would merge with the red
    f["seg_merge"] = _save(d / "seg_merge.png", colours)
    f["seg_small"] = _save(d / "seg_small.png", seg[::4, ::4].copy())
    f["seg_wide"] = _save(d / "seg_wide.png", seg[:512].copy())
    f["seg_empty"] = _save(d / "seg_empty.png", np.zeros((1024, 1024), np.uint8))
    many = np.zeros((1024, 1024), np.uint8)
    for k in range(9):
        many[100 * k:100 * k + 80, 100:400] = 20 * (k + 1)
    f["seg_nine"] = _save(d / "seg_nine.png", many)
    m1 = np.zeros((1024, 1024), np.uint8)
    m1[100:400, 100:400] = 255
    m2 = np.zeros((1024, 1024), np.uint8)
    m2[500:900, 500:900] = 255
    f["mask1"], f["mask2"] = _save(d / "m1.png", m1), _save(d / "m2.png", m2)
    f["mask_empty"] = _save(d / "m_empty.png", np.zeros((1024, 1024), np.uint8))
    f["mask_small"] = _save(d / "m_small.png", m1[::2, ::2].copy())
    dark = (np.arange(1024 * 1024).reshape(1024, 1024) % 100).astype(np.uint8)  # 100 grey levels, none > 127
    f["mask_dark"] = _save(d / "m_dark.png", dark)
    inside = np.zeros((1024, 1024), np.uint8)
    inside[150:250, 150:250] = 255                                       # all under m_big below
    f["mask_inside"] = _save(d / "m_inside.png", inside)
    f["mask_big"] = _save(d / "m_big.png", m1)
    f["tiny_image"] = _save(d / "tiny.png", np.zeros((16, 16, 3), np.uint8))
    f["strip_image"] = _save(d / "strip.png", np.zeros((100, 1024, 3), np.uint8))
    (d / "text.png").write_text("not an image")
    f["text"] = str(d / "text.png")
    png = (EX / "01_rgb.png").read_bytes()
    (d / "truncated.png").write_bytes(png[: len(png) // 3])
    f["truncated"] = str(d / "truncated.png")
    np.save(d / "pts_bad.npy", np.zeros((10, 2), np.float32))
    f["pts_bad"] = str(d / "pts_bad.npy")
    np.save(d / "pts_obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    f["pts_obj"] = str(d / "pts_obj.npy")
    (d / "afile").write_text("x")
    f["afile"] = str(d / "afile")
    os.symlink(d / "nowhere.glb", d / "dangling.glb")
    f["dangling"] = str(d / "dangling.glb")
    (d / "exists.glb").write_bytes(b"keep me")
    (d / "exists.npz").write_bytes(b"keep me too")
    f["exists_glb"], f["exists_npz"] = str(d / "exists.glb"), str(d / "exists.npz")
    return f


def _listing(root):
    """Every file under root (hidden ones too) with its bytes; a link as where it points."""
    out = {}
    for dirpath, _, filenames in os.walk(root):
        for n in filenames:
            p = os.path.join(dirpath, n)
            out[p] = os.readlink(p) if os.path.islink(p) else open(p, "rb").read()
    return out


@pytest.fixture()
def no_model_load(monkeypatch):
    """The rows are user mistakes: they must be caught before the model is loaded."""
    from midi_model import pipeline

    def trap(*a, **k):
        raise AssertionError("the model was loaded before the mistake was reported")
    monkeypatch.setattr(pipeline.MIDIPipeline, "from_pretrained", classmethod(trap))


# ------------------------------------------------------------------------------------------------
# CLI: (id, extra argv with {names} from `files`, the message, how it ends)
# "argparse": argparse refuses it (usage + message, exit 2); "error": one line "error: ...", exit 2.
CLI = [
    ("image-missing", ["--image", "{dir}/none.png"], r"error: --image \S+none.png: no such file", "error"),
    ("image-folder", ["--image", "{dir}"], r"error: --image \S+: is a folder, not an image file", "error"),
    ("image-not-an-image", ["--image", "{text}"], r"not an image PIL can read \(use PNG or JPEG\)", "error"),
    ("image-truncated", ["--image", "{truncated}"], r"a damaged or truncated image .*: save it again", "error"),
    ("image-too-small", ["--image", "{tiny_image}", "--seg", "{tiny_image}"],
     r"--image is 16x16 \(WxH\): at least 32 px per side is needed; upscale it", "error"),
    ("size-makes-image-too-small", ["--image", "{strip_image}", "--masks", "{mask1}", "--size", "200"],
     r"the image resized to 200 is 200x20 \(WxH\): at least 32 px", "error"),
    ("seg-jpeg", ["--seg", "{seg_jpg}"], r"--seg \S+seg.jpg: \d+ different colours, which looks like a photo, "
     r"a JPEG or an anti-aliased map, not a seg map: save the seg map as PNG", "error"),
    ("seg-photo", ["--seg", "{image}"], r"different colours, which looks like a photo", "error"),
    ("seg-anti-aliased", ["--seg", "{seg_aa}"], r"different grey levels, which looks like a photo, a JPEG or an "
     r"anti-aliased map", "error"),
    ("seg-stray-pixels", ["--seg", "{seg_specks}"], r"3 of its 6 grey levels \(200, 201, 202\) cover only specks "
     r"or 1-2 pixel thin lines, anti-aliased edges, JPEG noise or stray pixels", "error"),
    ("seg-colours-merge", ["--seg", "{seg_merge}"], r"colours #4c4c4c and #ff0000 have the same grey value 76 .*"
     r"would merge into one object: repaint one of them", "error"),
    ("seg-other-size", ["--seg", "{seg_small}"], r"--seg \S+: 256x256 \(WxH\), but the image is 1024x1024 \(WxH\): "
     r"give --seg \S+ at the image size", "error"),
    ("seg-other-aspect-with-size", ["--seg", "{seg_wide}", "--size", "256"],
     r"1024x512 \(WxH\), but the image is 1024x1024 \(WxH\), another aspect ratio: resizing would stretch", "error"),
    ("seg-other-shape", ["--seg", "{seg_wide}"], r"1024x512 \(WxH\), but the image is 1024x1024", "error"),
    ("seg-empty", ["--seg", "{seg_empty}"], r"no instance \(all pixels are background 0\): give each object a "
     r"non-zero value", "error"),
    ("seg-more-than-trained", ["--seg", "{seg_nine}"], r"has 9 objects, more than the 7 MIDI was trained with: "
     r"merge or erase objects, pass --max-instances N to keep the first N, or --allow-more-instances", "error"),
    ("max-instances-above-7", ["--max-instances", "8"], r"--max-instances=8 is above 7, the most MIDI was trained "
     r"with: lower it, or set --allow-more-instances", "error"),
    ("max-instances-0", ["--max-instances", "0"], r"argument --max-instances: 0: use 1 or more", "argparse"),
    ("mask-empty", ["--masks", "{mask1}", "{mask_empty}"], r"--masks: mask 2 of 2 is empty", "error"),
    ("mask-dark", ["--masks", "{mask_dark}"], r"--masks file 1 \S+: no pixel is brighter than half \(the "
     r"brightest is 99 of 255\): paint the object white", "error"),
    ("mask-under-later", ["--masks", "{mask_inside}", "{mask_big}"], r"--masks: mask 1 of 2 lies entirely under "
     r"later masks: remove it, or reorder", "error"),
    ("mask-other-size", ["--masks", "{mask1}", "{mask_small}"], r"--masks file 2 \(\S+\): 512x512 \(WxH\), but the "
     r"image is 1024x1024", "error"),
    ("mask-missing", ["--masks", "{mask1}", "{dir}/m3.png"], r"--masks file 2 \S+m3.png: no such file", "error"),
    ("size-0", ["--size", "0"], r"argument --size: size 0: use at least 32", "argparse"),
    ("size-16", ["--size", "16"], r"argument --size: size 16: use at least 32", "argparse"),
    ("steps-0", ["--steps", "0"], r"argument --steps: steps 0: use 1..1000", "argparse"),
    ("steps-negative", ["--steps", "-3"], r"argument --steps: steps -3: use 1..1000", "argparse"),
    ("steps-not-a-number", ["--steps", "many"], r"argument --steps: 'many' is not a number", "argparse"),
    ("seed-negative", ["--seed", "-1"], r"argument --seed: seed -1: use 0..18446744073709551615", "argparse"),
    ("seed-above-2^64-1", ["--seed", str(2**64)], r"seed 18446744073709551616: use 0..18446744073709551615",
     "argparse"),
    ("guidance-nan", ["--guidance", "nan"], r"argument --guidance: guidance nan: use a number from 0 to 100", "argparse"),
    ("guidance-inf", ["--guidance", "inf"], r"guidance inf: use a number from 0 to 100", "argparse"),
    ("guidance-negative", ["--guidance", "-1"], r"guidance -1.0: use a number from 0 to 100", "argparse"),
    ("octree-depth-11", ["--octree-depth", "11"], r"octree_depth 11: use 2..10", "argparse"),
    ("octree-depth-1", ["--octree-depth", "1"], r"octree_depth 1: use 2..10", "argparse"),
    ("decoder-unknown", ["--decoder", "marching"], r"argument --decoder: invalid choice: 'marching'", "argparse"),
    ("attention-unknown", ["--attention", "flash3"], r"argument --attention: invalid choice: 'flash3'", "argparse"),
    ("dtype-unknown", ["--dtype", "fp8"], r"argument --dtype: invalid choice: 'fp8'", "argparse"),
    ("fp16-on-cpu", ["--dtype", "fp16", "--device", "cpu"], r"--dtype fp16 runs only on a GPU: use --dtype fp32 or "
     r"bf16 on the CPU", "error"),
    ("device-not-present", ["--device", "cuda:99"], r"--device cuda:99: (this machine has no CUDA GPU that torch can "
     r"use|there are only \d+ CUDA devices)", "error"),
    ("device-unknown", ["--device", "gpu0"], r"--device 'gpu0': not a device name; use cpu, cuda or cuda:N", "error"),
    ("out-exists", ["--out", "{exists_glb}"], r"--out \S+exists.glb already exists: choose another name "
     r"\(nothing is overwritten\)", "error"),
    ("out-dangling-symlink", ["--out", "{dangling}"], r"--out \S+dangling.glb is a broken symbolic link", "error"),
    ("out-under-proc", ["--out", "/proc/midi/scene.glb"], r"--out /proc/midi/scene.glb: cannot write in /proc", "error"),
    ("out-parent-is-a-file", ["--out", "{afile}/scene.glb"], r"--out \S+: \S+afile is a file, not a folder", "error"),
    ("out-not-glb", ["--out", "{dir}/scene.obj"], r"--out \S+scene.obj: the file is written as .glb: give a name "
     r"ending in .glb", "error"),
    ("out-is-a-folder", ["--out", "{dir}"], r"--out \S+ is a folder: give a file name inside it", "error"),
    ("dump-exists", ["--dump", "{exists_npz}"], r"--dump \S+exists.npz already exists", "error"),
    ("dump-equals-out", ["--out", "{dir}/same.glb", "--dump", "{dir}/same.glb"], r"--dump \S+same.glb: the file is "
     r"written as .npz", "error"),
    ("query-points-without-dump", ["--query-points", "{pts_bad}"], r"--query-points writes its values into the "
     r"--dump file: add --dump run.npz", "error"),
    ("query-points-shape", ["--query-points", "{pts_bad}", "--dump", "{dir}/d.npz"], r"--query-points \S+: shape "
     r"\(10, 2\), expected \(P,3\) or \(3,P,3\)", "error"),
    ("query-points-pickle", ["--query-points", "{pts_obj}", "--dump", "{dir}/d.npz"], r"--query-points \S+: not a "
     r"numpy .npy array", "error"),
    ("model-missing", ["--model", "{dir}/no_model"], r"model folder '\S+no_model' does not exist", "error"),
    ("reroll-without-keep-from", ["--reroll", "1"], r"--reroll, --remove and --add change a recorded run", "error"),
]


def _argv(files, extra, golden_model_dir):
    base = {"--model": str(golden_model_dir), "--image": files["image"], "--out": os.path.join(files["dir"], "o.glb"),
            "--device": "cpu"}
    extra = [a.format(**files) for a in extra]
    src = [] if ("--seg" in extra or "--masks" in extra) else ["--seg", files["seg"]]
    argv = ["generate"]
    for k, v in base.items():
        if k not in extra:
            argv += [k, v]
    return argv + src + extra


@pytest.mark.parametrize("case", CLI, ids=[c[0] for c in CLI])
def test_cli_refuses_before_the_model(case, files, golden_model_dir, no_model_load, capsys):
    _, extra, message, kind = case
    before = _listing(files["dir"])
    argv = _argv(files, extra, golden_model_dir)
    if kind == "argparse":
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
    else:
        assert main(argv) == 2
    err = capsys.readouterr().err
    assert __import__("re").search(message, err), err
    if kind == "error":  # one line, no traceback
        assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err
    assert _listing(files["dir"]) == before, "something was written"


def test_cli_debug_shows_the_traceback(files, golden_model_dir, no_model_load):
    with pytest.raises(MIDIInputError, match="no such file"):
        main(_argv(files, ["--image", "{dir}/none.png", "--debug"], golden_model_dir))
    with pytest.raises(MIDIInputError, match="no such file"):
        main(["--debug"] + _argv(files, ["--image", "{dir}/none.png"], golden_model_dir))


def test_cli_unexpected_error_is_one_line(files, golden_model_dir, monkeypatch, capsys):
    from midi_model import cli_checks

    def bug(*a, **k):
        raise ZeroDivisionError("a bug")
    monkeypatch.setattr(cli_checks, "load_scene_inputs", bug)
    assert main(_argv(files, [], golden_model_dir)) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: unexpected ZeroDivisionError: a bug (run again with --debug") and "Traceback" not in err


# ------------------------------------------------------------------------------------------------
# CLI: full runs that must end well or leave nothing behind
def _small_run(files, golden_model_dir, tmp_path, *extra):
    return ["generate", "--model", str(golden_model_dir), "--image", files["image"], "--size", "64",
            "--steps", "1", "--octree-depth", "3", "--decoder", "dense", "--device", "cpu", "--max-instances", "2",
            "--out", str(tmp_path / "s.glb"), *extra]


def test_cli_full_disk_while_dumping_leaves_nothing(files, golden_model_dir, tmp_path, monkeypatch, capsys):
    def full(f, **arrays):
        f.write(b"PK partial")
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(np, "savez", full)
    rc = main(_small_run(files, golden_model_dir, tmp_path, "--seg", files["seg"], "--dump", str(tmp_path / "d.npz")))
    assert rc == 2
    assert "--dump " in capsys.readouterr().err
    assert os.listdir(tmp_path) == []  # the scene was taken back, no temporary file left: a re-run works
    monkeypatch.undo()
    assert main(_small_run(files, golden_model_dir, tmp_path, "--seg", files["seg"])) == 0
    assert os.listdir(tmp_path) == ["s.glb"]


def test_cli_interrupt_while_writing_leaves_nothing(files, golden_model_dir, tmp_path, monkeypatch, capsys):
    from midi_model import scene

    def ctrl_c(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(scene, "glb_bytes", ctrl_c)
    assert main(_small_run(files, golden_model_dir, tmp_path, "--seg", files["seg"])) == 130
    assert "interrupted: nothing was written" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_cli_overlapping_masks_get_the_node_contract(files, golden_model_dir, tmp_path):
    """Overlapping --masks are made disjoint as SegmentScene does (a later mask wins), with a warning."""
    with pytest.warns(UserWarning, match=r"--masks: mask 1 overlap later masks"):
        assert main(_small_run(files, golden_model_dir, tmp_path, "--masks", files["mask_big"], files["mask_inside"],
                               "--dump", str(tmp_path / "d.npz"))) == 0
    m = np.load(tmp_path / "d.npz")["instance_mask"] > 0
    assert not (m[0] & m[1]).any() and m[1].any()


# ------------------------------------------------------------------------------------------------
# library: the input layer
def _img_png(arr, mode=None, **info):
    buf = io.BytesIO()
    im = Image.fromarray(arr, mode) if mode else Image.fromarray(arr)
    im.save(buf, format="PNG", **info)
    buf.seek(0)
    return Image.open(buf)


LIBRARY = [
    ("image-nan", lambda: inputs.as_rgb_uint8(np.full((40, 40, 3), np.nan, np.float32)),
     r"image: 4800 values are NaN or infinite: fix the node that made this IMAGE"),
    ("image-0-255-floats", lambda: inputs.as_rgb_uint8(np.full((40, 40, 3), 200.0, np.float32)),
     r"image: values from 200 to 200, but IMAGE values go from 0 to 1: clamp or normalise it first"),
    ("image-batch", lambda: inputs.as_rgb_uint8(np.zeros((2, 40, 40, 3), np.float32)),
     r"image: a batch of 2 images, but MIDI takes one scene image: pick one"),
    ("image-5-channels", lambda: inputs.as_rgb_uint8(np.zeros((40, 40, 5), np.uint8)),
     r"image: expected an HxWx3 image, got an array of shape \(40, 40, 5\)"),
    ("image-negative-ints", lambda: inputs.as_rgb_uint8(np.full((40, 40, 3), -5, np.int32)),
     r"image: integer pixels from -5 to -5: give 8-bit"),
    ("image-none", lambda: inputs.as_rgb_uint8(None), r"image: no image given"),
    ("masks-none-given", lambda: inputs.prepare_masks(np.zeros((0, 40, 40), bool), (40, 40)),
     r"masks: no instances given; segment the image first"),
    ("masks-nan", lambda: inputs.prepare_masks(np.full((1, 40, 40), np.nan, np.float32), (40, 40)),
     r"masks: 1600 values are NaN or infinite"),
    ("masks-0-255-floats", lambda: inputs.prepare_masks(np.full((1, 40, 40), 255.0, np.float32), (40, 40)),
     r"masks: values from 255 to 255, but MASK values go from 0 to 1"),
    ("masks-other-size", lambda: inputs.prepare_masks(np.ones((1, 20, 40), bool), (40, 40)),
     r"the masks: 40x20 \(WxH\), but the image is 40x40 \(WxH\)"),
    ("masks-list-of-sizes", lambda: inputs.as_mask_stack([np.ones((4, 4)), np.ones((5, 5))]),
     r"masks: the masks have different sizes"),
    ("masks-empty-numbered-from-1", lambda: inputs.prepare_masks(np.stack([np.ones((40, 40)), np.zeros((40, 40)),
                                                                           np.zeros((40, 40))]), (40, 40)),
     r"masks: mask 2, 3 of 3 is empty"),
    ("seg-between-grey-levels", lambda: inputs.to_label_map(
        (0.5 + np.random.RandomState(0).uniform(-1e-3, 1e-3, (40, 40))).astype(np.float32)),
     r"seg map: values between grey levels \(a smoothed or resized map, or a photo\)"),
    ("seg-float-image", lambda: inputs.to_label_map(Image.fromarray(np.zeros((40, 40), np.float32))),
     r"seg map: a floating-point image is not a label map"),
    ("seg-negative", lambda: inputs.to_label_map(np.full((40, 40), -1, np.int32)),
     r"seg map: negative labels; use 0 for background"),
    ("seg-batch", lambda: inputs.to_label_map(np.zeros((3, 40, 40, 3), np.float32)),
     r"seg map: expected one image, got a batch of 3"),
    ("seg-noise-levels", lambda: inputs.masks_from_label_map(np.random.RandomState(0).randint(0, 100, (64, 64))
                                                              .astype(np.uint8)),
     r"seg map: 99 different grey levels, which looks like a photo, a JPEG or an anti-aliased map"),
    ("seg-thin-lines", lambda: inputs.masks_from_label_map(_thin_lines()),
     r"seg map: 1 of its 2 grey levels \(9\) cover only specks or 1-2 pixel thin lines"),
    ("seg-image-size", lambda: inputs.masks_from_label_map(np.ones((40, 40), np.uint8), (40, 60)),
     r"the seg map: 40x40 \(WxH\), but the image is 60x40 \(WxH\)"),
    ("max-instances-0", lambda: inputs.check_max_setting(0, False), r"max_instances must be at least 1, got 0"),
    ("steps-0", lambda: inputs.check_steps(0), r"steps 0: use 1..1000 \(official: 50\)"),
    ("steps-fraction", lambda: inputs.check_steps(2.5), r"steps 2.5: give a whole number"),
    ("seed-too-big", lambda: inputs.check_seed(2**64), r"seed 18446744073709551616: use 0..18446744073709551615"),
    ("guidance-nan", lambda: inputs.check_guidance(float("nan")), r"guidance nan: use a number from 0 to 100"),
    ("octree-depth-0", lambda: inputs.check_octree_depth(0), r"octree_depth 0: use 2..10"),
    ("size-20", lambda: inputs.fit_size((100, 100), 20), r"size 20: use at least 32"),
]


def _thin_lines():
    label = np.zeros((64, 64), np.uint8)
    label[10:40, 10:40] = 3          # a real object
    label[50, 5:60] = 9              # a one-pixel line: an anti-aliased edge, not an object
    return label


@pytest.mark.parametrize("case", LIBRARY, ids=[c[0] for c in LIBRARY])
def test_library_refuses(case):
    _, call, message = case
    with pytest.raises(MIDIInputError, match=message) as e:
        call()
    assert "\n" not in str(e.value)


# library rows with a correct result instead of an error
def test_16bit_image_is_not_white():
    grey = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)  # 0..65520
    rgb = inputs.as_rgb_uint8(_img_png(grey))
    assert rgb.dtype == np.uint8 and rgb.min() == 0 and rgb.max() >= 250 and len(np.unique(rgb)) > 200


def test_16bit_seg_keeps_its_objects(tmp_path):
    label = np.zeros((64, 64), np.uint16)
    label[5:25, 5:25], label[30:60, 30:60], label[5:25, 40:60] = 1000, 30000, 60000
    p = _save(tmp_path / "seg16.png", label)
    assert Image.open(p).mode.startswith("I")
    ids, masks = inputs.masks_from_label_map(inputs.read_label_map(p))
    assert ids.tolist() == [1000, 30000, 60000] and masks.sum((1, 2)).tolist() == [400, 900, 400]


def test_exif_rotated_photo_is_upright(tmp_path):
    img = np.zeros((40, 60, 3), np.uint8)
    img[:, :30] = 255                                   # left half white, as stored
    exif = Image.Exif()
    exif[0x0112] = 6                                     # "rotate 90 CW to view"
    p = tmp_path / "phone.jpg"
    Image.fromarray(img).save(p, exif=exif.tobytes(), quality=95)
    rgb = inputs.read_image(p)
    assert rgb.shape == (60, 40, 3)                      # upright: portrait
    assert rgb[:25].mean() > 200 and rgb[35:].mean() < 50  # the white half is now on top


def test_transparent_and_palette_images_become_white_where_transparent():
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[..., 3] = 0
    rgba[10:30, 10:30] = (255, 0, 0, 255)
    rgb = inputs.as_rgb_uint8(_img_png(rgba))
    assert (rgb[0, 0] == 255).all() and tuple(rgb[20, 20]) == (255, 0, 0)
    pal = Image.fromarray(np.where(np.arange(40)[None] < 20, 0, 1).astype(np.uint8).repeat(40, 0), "P")
    pal.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    buf = io.BytesIO()
    pal.save(buf, format="PNG", transparency=0)
    buf.seek(0)
    rgb = inputs.as_rgb_uint8(Image.open(buf))
    assert (rgb[:, :20] == 255).all() and (rgb[:, 20:] == (0, 0, 255)).all()


@pytest.mark.parametrize("kind", ["red-on-black", "alpha-only", "zero-one"])
def test_masks_that_are_not_white_on_black(kind, tmp_path):
    m = np.zeros((40, 40), bool)
    m[10:30, 5:20] = True
    if kind == "red-on-black":
        arr = np.zeros((40, 40, 3), np.uint8)
        arr[m] = (255, 0, 0)
    elif kind == "alpha-only":
        arr = np.zeros((40, 40, 4), np.uint8)
        arr[..., 3] = m * 255
    else:
        arr = m.astype(np.uint8)                         # saved straight from numpy: 0 and 1
    p = _save(tmp_path / f"{kind}.png", arr)
    np.testing.assert_array_equal(inputs.read_mask(p), m)


def test_overlapping_masks_resolved_like_a_label_map():
    a = np.zeros((40, 40), bool)
    a[5:25, 5:25] = True
    b = np.zeros((40, 40), bool)
    b[15:35, 15:35] = True
    with pytest.warns(UserWarning, match=r"masks: mask 1 overlap later masks; the shared pixels go to the later"):
        out = inputs.prepare_masks(np.stack([a, b]), (40, 40))
    np.testing.assert_array_equal(out[1], b)
    np.testing.assert_array_equal(out[0], a & ~b)


def test_more_than_trained_is_allowed_with_a_warning():
    from midi_model.conditioning import check_masks

    masks = np.zeros((8, 64, 64), bool)
    for i in range(8):
        masks[i, 8 * i:8 * i + 6, 4:40] = True
    with pytest.warns(UserWarning, match=r"masks: 8 instances, more than the 7 MIDI was trained with"):
        assert check_masks(np.zeros((64, 64, 3), np.uint8), masks).shape == (8, 64, 64)


def test_wide_image_warns_about_objects_the_encoders_do_not_see():
    from midi_model.conditioning import prepare_instances

    rgb = np.zeros((64, 128, 3), np.uint8)
    masks = np.zeros((2, 64, 128), bool)
    masks[0, 10:50, 40:80] = True    # inside the centre 64x64 square (columns 32..95)
    masks[1, 10:50, 100:120] = True  # outside it
    with pytest.warns(UserWarning, match=r"the image is 128x64 \(WxH\), not square: the image encoders see only "
                                         r"its centre 64x64 square, and object\(s\) 2 reach outside it: set "
                                         r"image_padding"):
        prepare_instances(rgb, masks)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prepare_instances(rgb, masks, image_padding=True)  # padded to a square: nothing is cut
        prepare_instances(rgb, masks[:1])


def test_pipeline_refuses_settings_before_sampling(golden_pipe, golden, monkeypatch):
    cond = golden_pipe.encode(golden["inputs_rgb"], inputs.split_label_map(golden["inputs_seg"], 1)[1])
    calls = []
    monkeypatch.setattr(golden_pipe.transformer, "forward", lambda *a, **k: calls.append(1))
    for kw, msg in [({"seed": -1}, r"seed -1: use 0"), ({"steps": 0}, r"steps 0: use 1..1000"),
                    ({"guidance_scale": float("inf")}, r"guidance inf: use a number from 0 to 100"),
                    ({"guidance_scale": -2.0}, r"guidance -2.0")]:
        with pytest.raises(MIDIInputError, match=msg):
            golden_pipe.sample(cond, **kw)
    assert calls == []


def test_conditioning_and_latents_from_another_model(golden_pipe, golden):
    from midi_model.conditioning import MIDIConditioning

    cond = golden_pipe.encode(golden["inputs_rgb"], inputs.split_label_map(golden["inputs_seg"], 1)[1])
    other = MIDIConditioning(torch.zeros(1, 1, 13), cond.image_embeds_2, cond.instance_rgb, cond.instance_mask,
                             cond.scene_rgb)
    with pytest.raises(MIDIInputError, match=r"conditioning has embeddings of width 13/\d+ but this model takes "
                                             r"\d+/\d+: it was encoded with another model; encode again with this one"):
        golden_pipe.sample(other, steps=1)
    lat = torch.from_numpy(golden["final_latents"])
    with pytest.raises(MIDIInputError, match=r"latents are \d+ tokens x 5 channels but this model makes .*sampled "
                                             r"with another model"):
        golden_pipe.decode(lat[..., :5], octree_depth=3)
    with pytest.raises(MIDIInputError, match=r"latents contain NaN or infinite values"):
        golden_pipe.decode(torch.full_like(lat, float("nan")), octree_depth=3)
    with pytest.raises(MIDIInputError, match=r"octree_depth 11: use 2..10"):
        golden_pipe.decode(lat, octree_depth=11)


# ------------------------------------------------------------------------------------------------
# library: writing files
def test_write_new_never_overwrites_and_leaves_no_temp(tmp_path):
    from midi_model.files import write_new_bytes

    (tmp_path / "a.glb").write_bytes(b"mine")
    with pytest.raises(MIDIOutputError, match=r"already exists: choose another name \(nothing is overwritten\)"):
        write_new_bytes(tmp_path / "a.glb", b"new")
    assert (tmp_path / "a.glb").read_bytes() == b"mine" and os.listdir(tmp_path) == ["a.glb"]


@pytest.mark.parametrize("failure", ["disk-full", "interrupt", "error"])
def test_write_new_failure_leaves_nothing(failure, tmp_path):
    from midi_model.files import write_new

    def writer(f):
        f.write(b"half")
        if failure == "disk-full":
            raise OSError(errno.ENOSPC, "No space left on device")
        raise KeyboardInterrupt if failure == "interrupt" else RuntimeError("boom")
    target = tmp_path / "new" / "deeper" / "x.npz"
    expected = {"disk-full": MIDIOutputError, "interrupt": KeyboardInterrupt, "error": RuntimeError}[failure]
    with pytest.raises(expected) as e:
        write_new(target, writer, "--dump")
    if failure == "disk-full":
        assert "the disk is full: free some space and run again (nothing was written)" in str(e.value)
    assert os.listdir(tmp_path) == []  # no file, no temporary file, not even the folders it made


def test_export_glb_refuses_an_existing_file(tmp_path):
    import trimesh

    from midi_model.scene import export_glb

    (tmp_path / "s.glb").write_bytes(b"mine")
    with pytest.raises(MIDIOutputError, match="already exists"):
        export_glb([trimesh.creation.box()], tmp_path / "s.glb")
    assert (tmp_path / "s.glb").read_bytes() == b"mine"


# ------------------------------------------------------------------------------------------------
# nodes (the pack as ComfyUI imports it); the same input layer, so the same words
from nodes_fixtures import comfy_dirs, midi_model  # noqa: E402,F401  (fixtures)


def _node(name):
    from comfyui_midi import nodes

    return nodes.NODE_CLASS_MAPPINGS[name]()


def _img(h=64, w=64, value=0.5):
    return torch.full((1, h, w, 3), value)


def _masks(n=1, h=64, w=64):
    m = torch.zeros(n, h, w)
    for i in range(n):
        m[i, 4 + 10 * i:12 + 10 * i, 4:40] = 1
    return m


NODES = [
    ("encode-image-nan", "EncodeMultiInstanceCondition", lambda: dict(image=_img(value=float("nan")), masks=_masks()),
     r"image: 12288 values are NaN or infinite"),
    ("encode-image-0-255", "EncodeMultiInstanceCondition", lambda: dict(image=_img(value=255.0), masks=_masks()),
     r"image: values from 255 to 255, but IMAGE values go from 0 to 1"),
    ("encode-image-batch", "EncodeMultiInstanceCondition",
     lambda: dict(image=torch.zeros(2, 64, 64, 3), masks=_masks()), r"image: a batch of 2 images"),
    ("encode-mask-size", "EncodeMultiInstanceCondition", lambda: dict(image=_img(), masks=_masks(1, 32, 64)),
     r"the masks: 64x32 \(WxH\), but the image is 64x64 \(WxH\)"),
    ("encode-mask-empty-from-1", "EncodeMultiInstanceCondition",
     lambda: dict(image=_img(), masks=torch.cat([_masks(), torch.zeros(1, 64, 64)])), r"masks: mask 2 of 2 is empty"),
    ("encode-no-masks", "EncodeMultiInstanceCondition", lambda: dict(image=_img(), masks=torch.zeros(0, 64, 64)),
     r"masks: no instances given"),
    ("encode-image-too-small", "EncodeMultiInstanceCondition",
     lambda: dict(image=_img(16, 16), masks=_masks(1, 16, 16)[:, :, :16]), r"image is 16x16 \(WxH\): at least 32 px"),
    ("segment-seg-map-photo", "SegmentScene",
     lambda: dict(image=_img(), mode="label_map",
                  seg_map=torch.randint(0, 256, (1, 64, 64, 3), generator=torch.Generator().manual_seed(0)) / 255.0),
     r"seg map: \d+ different colours, which looks like a photo, a JPEG or an anti-aliased map"),
    ("segment-seg-map-smoothed", "SegmentScene",
     lambda: dict(image=_img(), mode="label_map",
                  seg_map=0.3 + 1e-3 * torch.rand((1, 64, 64, 3), generator=torch.Generator().manual_seed(0))),
     r"seg map: values between grey levels"),
    ("segment-image-0-255", "SegmentScene", lambda: dict(image=_img(value=7.0), mode="masks", masks=_masks()),
     r"image: values from 7 to 7, but IMAGE values go from 0 to 1"),
    ("segment-masks-nan", "SegmentScene",
     lambda: dict(image=_img(), mode="masks", masks=torch.full((1, 64, 64), float("nan"))),
     r"masks: 4096 values are NaN or infinite"),
    ("sampler-guidance-nan", "MIDISampler",
     lambda: dict(conditioning=_foreign_conditioning(), seed=0, steps=1, guidance=float("nan")),
     r"guidance nan: use a number from 0 to 100"),
    ("sampler-conditioning-of-another-model", "MIDISampler",
     lambda: dict(conditioning=_foreign_conditioning(), seed=0, steps=1, guidance=7.0),
     r"conditioning has embeddings of width 3/5 but this model takes"),
    ("decode-latents-of-another-model", "DecodeToMeshes",
     lambda: dict(latents={"samples": torch.zeros(1, 16, 5)}, octree_depth=4),
     r"latents are 16 tokens x 5 channels but this model makes"),
]


def _foreign_conditioning():
    from comfyui_midi.midi_model.conditioning import MIDIConditioning

    return MIDIConditioning(torch.zeros(1, 1, 3), torch.zeros(1, 4, 5), np.zeros((1, 8, 8, 3), np.uint8),
                            np.zeros((1, 8, 8), np.uint8), np.zeros((8, 8, 3), np.uint8))


@pytest.mark.parametrize("case", NODES, ids=[c[0] for c in NODES])
def test_nodes_refuse(case, midi_model, comfy_dirs):
    from comfyui_midi.midi_model.errors import MIDIInputError as PackInputError

    _, name, kwargs, message = case
    node = _node(name)
    kw = kwargs()
    before = _listing(comfy_dirs / "output")
    fn = getattr(node, node.FUNCTION)
    if name != "SegmentScene":
        kw["midi_model"] = midi_model
    with pytest.raises(PackInputError, match=message) as e:
        fn(**kw)
    assert "\n" not in str(e.value)
    assert _listing(comfy_dirs / "output") == before


def test_save_node_full_disk_leaves_nothing(comfy_dirs, monkeypatch):
    import trimesh

    from comfyui_midi.midi_model import files as files_lib
    from comfyui_midi.midi_model.errors import MIDIOutputError as PackOutputError
    from comfyui_midi.nodes.decode import meshes_to_core

    mesh = meshes_to_core([trimesh.creation.box(extents=(0.2, 0.2, 0.2)), trimesh.creation.icosphere(1)])
    before = _listing(comfy_dirs / "output")
    real = files_lib.write_new
    calls = []

    def second_fails(path, write, what="output"):  # the scene is written, then the disk fills up
        calls.append(path)
        if len(calls) == 2:
            raise PackOutputError(f"{what} {path}: the disk is full: free some space and run again")
        return real(path, write, what)
    monkeypatch.setattr(files_lib, "write_new", second_fails)
    with pytest.raises(PackOutputError, match="the disk is full"):
        _node("SaveMIDIScene").save(mesh, "full/s", True, "box, ball")
    assert _listing(comfy_dirs / "output") == before  # the scene and the first object were taken back


def test_seg_map_shifted_by_the_host_decoder_keeps_its_objects():
    """ComfyUI 0.27's LoadImage (PyAV) returns a flat grey 29 as 28.887/255 and 150 as 149.4/255:
    off-grid but still one distinct value per object, so the same objects come out, in order."""
    exact = np.zeros((48, 48), np.uint8)
    exact[4:20, 4:20], exact[24:44, 6:30], exact[10:40, 32:44] = 29, 76, 150
    shift = {0: 0.0, 29: -0.113, 76: 0.21, 150: -0.6}
    decoded = (exact.astype(np.float64) + np.vectorize(shift.get)(exact)) / 255.0
    rgb = np.repeat(decoded[None, :, :, None], 3, axis=3).astype(np.float32)  # a ComfyUI IMAGE
    labels = inputs.to_label_map(rgb)
    want = inputs.masks_from_label_map(exact)
    got = inputs.masks_from_label_map(labels)
    assert len(got[0]) == 3
    np.testing.assert_array_equal(got[1], want[1])
