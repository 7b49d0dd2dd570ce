"""Validate-first for the CLI: everything that can be checked without the model is checked
before it is loaded, in the order a user would fix things (settings, devices, output
locations, model folder, then the input files). Sub-commands call these; new flags add
their check here."""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import inputs
from .errors import MIDIInputError
from .files import check_new_file


def arg(check):
    """A library range check as an argparse ``type``: the same words, reported by argparse."""
    def parse(text: str):
        try:
            value = float(text) if check is inputs.check_guidance else int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        try:
            return check(value)
        except MIDIInputError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    parse.__name__ = check.__name__.replace("check_", "")
    return parse


def positive_size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < inputs.MIN_IMAGE_SIDE:
        raise argparse.ArgumentTypeError(f"size {value}: use at least {inputs.MIN_IMAGE_SIDE} "
                                         f"(the longer side in pixels)")
    return value


def at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: use 1 or more")
    return value


def check_device(device: str) -> str:
    """The device exists on this machine (not only in torch's vocabulary)."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise MIDIInputError(f"--device {device!r}: not a device name; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise MIDIInputError(f"--device {device}: this machine has no CUDA GPU that torch can use: "
                                 f"use --device cpu (or install a CUDA build of torch)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise MIDIInputError(f"--device {device}: there are only {torch.cuda.device_count()} CUDA devices "
                                 f"(cuda:0..cuda:{torch.cuda.device_count() - 1})")
    elif dev.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise MIDIInputError(f"--device {device}: Apple MPS is not available here: use --device cpu")
    elif dev.type != "cpu":
        raise MIDIInputError(f"--device {device}: use cpu, cuda, cuda:N or mps")
    return device


def check_dtype_fits(dtype: str, device: str) -> None:
    import torch

    dev = torch.device(device)
    if dtype == "fp16" and dev.type == "cpu":
        raise MIDIInputError("--dtype fp16 runs only on a GPU: use --dtype fp32 or bf16 on the CPU (or auto)")
    if dtype == "bf16" and dev.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise MIDIInputError(f"--dtype bf16: {torch.cuda.get_device_name(dev)} has no bf16 support: "
                             f"use fp16 or auto")


def check_outputs(out, dump=None, query_points=None) -> tuple[Path, Path | None]:
    """--out (.glb) and --dump (.npz) are new files in writable folders."""
    out_p = check_new_file(out, "--out", ".glb")
    # the two suffixes differ, so --dump can never name the --out file
    dump_p = check_new_file(dump, "--dump", ".npz") if dump is not None else None
    if query_points is not None and dump is None:
        raise MIDIInputError("--query-points writes its values into the --dump file: add --dump run.npz")
    return out_p, dump_p


def check_model_folder(folder) -> Path:
    from .checkpoint import check_model_folder as check

    return check(folder)


@dataclass
class SceneInputs:
    rgb: np.ndarray  # (H,W,3) uint8
    masks: np.ndarray  # (n,H,W) bool, disjoint
    ids: np.ndarray  # (n,) int64: seg value, or mask number from 1
    seg: np.ndarray | None  # (H,W) labels as used, or None for --masks


def _resize(arr: np.ndarray, hw, resample) -> np.ndarray:
    from PIL import Image

    if arr.shape[:2] == tuple(hw):
        return arr
    return np.asarray(Image.fromarray(arr).resize((hw[1], hw[0]), resample))


def load_scene_inputs(image, seg=None, masks=None, size=None, max_instances=None,
                      allow_more_instances=False) -> SceneInputs:
    """Files -> checked arrays, exactly the inputs the model will see."""
    from PIL import Image

    rgb = inputs.read_image(image, "--image")
    src_hw = rgb.shape[:2]
    if size:
        hw = inputs.fit_size(src_hw, size)
    else:
        hw = src_hw
        inputs.check_image_size(hw, "--image")
    if max_instances is not None:
        inputs.check_max_setting(max_instances, allow_more_instances, "--max-instances", "--allow-more-instances")
    if seg is not None:
        label = inputs.read_label_map(seg, "--seg")
        what = f"--seg {seg}"
        (inputs.check_aspect if size else inputs.check_same_size)(src_hw, label.shape, what)
        if label.dtype != np.uint8:  # 16-bit labels: PIL resizes them as 32-bit integers
            label = _resize(label.astype(np.int32), hw, Image.NEAREST)
        else:
            label = _resize(label, hw, Image.NEAREST)
        inputs.check_label_map(label, what)
        ids, stack = inputs.split_label_map(label)
        keep = inputs.check_instance_count(len(ids), max_instances, allow_more_instances, what)
        ids, stack = ids[:keep], stack[:keep]
    else:
        stack = []
        for k, path in enumerate(masks, 1):
            m = inputs.read_mask(path, f"--masks file {k}")
            what = f"--masks file {k} ({path})"
            (inputs.check_aspect if size else inputs.check_same_size)(src_hw, m.shape, what)
            stack.append(_resize(m.astype(np.uint8) * 255, hw, Image.NEAREST) > 127)
        keep = inputs.check_instance_count(len(stack), max_instances, allow_more_instances, "--masks")
        stack = np.stack(stack[:keep])
        ids = np.arange(1, keep + 1, dtype=np.int64)
        label = None
    rgb = _resize(rgb, hw, Image.BICUBIC)
    inputs.check_image_size(rgb.shape, "--image")
    stack = inputs.prepare_masks(stack, rgb.shape[:2], "--masks" if label is None else "--seg")
    return SceneInputs(rgb, stack, ids, label)


def load_query_points(path, n: int) -> np.ndarray:
    """.npy of (P,3) or (n,P,3) finite points -> float32 array (never unpickled)."""
    p = Path(path)
    if not p.is_file():
        raise MIDIInputError(f"--query-points {path}: no such file")
    try:
        pts = np.load(p, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise MIDIInputError(f"--query-points {path}: not a numpy .npy array ({e})") from None
    if not isinstance(pts, np.ndarray) or not (pts.ndim == 2 or (pts.ndim == 3 and pts.shape[0] == n)) \
            or pts.shape[-1] != 3 or not np.issubdtype(pts.dtype, np.number):
        raise MIDIInputError(f"--query-points {path}: shape {getattr(pts, 'shape', '?')}, expected (P,3) or "
                             f"({n},P,3) numbers (one set per object)")
    if not np.isfinite(pts).all():
        raise MIDIInputError(f"--query-points {path}: contains NaN or infinite values")
    return pts.astype(np.float32)
