"""Grounding DINO through ``transformers``: a model folder in Hugging Face layout
(e.g. ``IDEA-Research/grounding-dino-tiny`` in ``ComfyUI/models/grounding-dino/``) -> text boxes.

Like the official ``scripts/grounding_sam.py`` (which uses the zero-shot detection pipeline),
each label is looked for on its own as ``"label."``; all detections are then ordered by
score, highest first -- that order becomes the instance order.
"""
from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import MIDILoadError

DEFAULT_REPO = "IDEA-Research/grounding-dino-tiny"
_PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")


@dataclass
class Detection:
    label: str          # the query label ("sofa")
    score: float        # box confidence (max token probability), as the official pipeline scores it
    box: np.ndarray     # (4,) x0,y0,x1,y1 in image pixels
    phrase: str = ""    # tokens above text_threshold, as Grounding DINO's post-processing reports them


def download_grounding_dino(folder, repo_id: str = DEFAULT_REPO, endpoint: str | None = None) -> Path:
    """Fetch the model's config, processor, tokenizer and safetensors weights into ``folder``
    (no pickle files). Raises ``MIDILoadError`` saying what to do when offline."""
    folder = Path(folder)
    try:
        from huggingface_hub import snapshot_download

        snapshot_download(repo_id, local_dir=str(folder), endpoint=endpoint,
                          allow_patterns=["*.json", "*.safetensors", "*.txt"])
    except Exception as e:
        raise MIDILoadError(
            f"could not download Grounding DINO {repo_id!r} into {folder} ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:160] if str(e) else 'no detail'}). Without internet, download it "
            f"elsewhere (https://huggingface.co/{repo_id}: config.json, model.safetensors, "
            f"preprocessor_config.json, tokenizer files) and copy it into {folder}") from None
    return folder


def _check_folder(folder: Path) -> None:
    if not folder.is_dir():
        raise MIDILoadError(
            f"Grounding DINO folder {folder} does not exist: put {DEFAULT_REPO} (Hugging Face layout) there "
            f"or allow the download")
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise MIDILoadError(f"Grounding DINO folder {folder} has no config.json: copy the whole {DEFAULT_REPO} folder")
    try:
        model_type = json.loads(cfg_path.read_text()).get("model_type")
    except (OSError, ValueError) as e:
        raise MIDILoadError(f"{cfg_path} is not readable JSON ({e})") from None
    if model_type != "grounding-dino":
        raise MIDILoadError(
            f"{folder} holds a {model_type!r} model, not Grounding DINO (model_type 'grounding-dino'): "
            f"point to a folder such as {DEFAULT_REPO}")
    if not any(folder.glob("*.safetensors")):
        raise MIDILoadError(
            f"Grounding DINO folder {folder} has no .safetensors weights (pickle .bin files are not loaded): "
            f"download model.safetensors from https://huggingface.co/{DEFAULT_REPO}")
    if not any((folder / f).is_file() for f in _PROCESSOR_FILES):
        raise MIDILoadError(f"Grounding DINO folder {folder} has no preprocessor_config.json")
    if not any((folder / f).is_file() for f in _TOKENIZER_FILES):
        raise MIDILoadError(f"Grounding DINO folder {folder} has no tokenizer (tokenizer.json or vocab.txt)")


class GroundingDinoDetector:
    """A loaded model + processor. ``detect`` returns detections in the official order."""

    def __init__(self, model, processor, folder=None):
        self.model = model.eval()
        self.processor = processor
        self.folder = folder

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device):
        self.model.to(device)
        return self

    def _post_process(self, outputs, input_ids, box_threshold, text_threshold, size_hw):
        fn = self.processor.post_process_grounded_object_detection
        params = inspect.signature(fn).parameters
        kw = {"text_threshold": text_threshold, "target_sizes": [tuple(size_hw)]}
        # transformers >= 4.51 calls it `threshold`, earlier releases `box_threshold`
        kw["threshold" if "threshold" in params else "box_threshold"] = box_threshold
        res = fn(outputs, input_ids, **kw)[0]
        phrases = res["text_labels"] if "text_labels" in res else dict.get(res, "labels")
        return res["scores"], res["boxes"], list(phrases) if phrases is not None else None

    def _label_words(self, phrase: str) -> str:
        special = set(getattr(getattr(self.processor, "tokenizer", None), "all_special_tokens", []) or [])
        return " ".join(w for w in phrase.replace(".", " ").split() if w not in special)

    @torch.inference_mode()
    def detect(self, image: Image.Image, labels: list[str], box_threshold: float = 0.3,
               text_threshold: float = 0.3) -> list[Detection]:
        """One pass per label; keep boxes with score > box_threshold whose label tokens reach
        text_threshold (text_threshold=0 reproduces the official pipeline, which checks only
        the box score); then sort by score, highest first (stable)."""
        device = self.device
        h, w = image.height, image.width
        found: list[Detection] = []
        for label in labels:
            inputs = self.processor(images=image, text=f"{label}.", return_tensors="pt")
            inputs = {k: (v.to(device) if hasattr(v, "to") else v) for k, v in inputs.items()}
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
            outputs = self.model(**inputs)
            scores, boxes, phrases = self._post_process(outputs, inputs["input_ids"], box_threshold,
                                                        text_threshold, (h, w))
            for j in range(len(scores)):
                phrase = (phrases[j] if phrases is not None else label) or ""
                # a box matched only by '.', [SEP] & co has no confident label token
                if text_threshold > 0 and not self._label_words(phrase):
                    continue
                box = boxes[j].float().cpu().numpy()
                # the official pipeline hands SAM integer boxes (truncated), clipped here to the image
                box = np.clip(np.trunc(box), 0, [w, h, w, h]).astype(np.float32)
                found.append(Detection(label=label, score=float(scores[j]), box=box, phrase=phrase))
        found.sort(key=lambda d: -d.score)
        return found


def load_grounding_dino(folder, device="cpu", download: bool = False, repo_id: str = DEFAULT_REPO,
                        endpoint: str | None = None) -> GroundingDinoDetector:
    """Model folder (HF layout) -> ``GroundingDinoDetector`` on ``device``; with ``download=True``
    a missing folder is fetched from ``repo_id`` first. Never touches the network otherwise."""
    folder = Path(folder)
    if download and not (folder / "config.json").is_file():
        download_grounding_dino(folder, repo_id, endpoint=endpoint)
    _check_folder(folder)
    try:
        from transformers import AutoProcessor, GroundingDinoForObjectDetection

        processor = AutoProcessor.from_pretrained(str(folder), local_files_only=True)
        model = GroundingDinoForObjectDetection.from_pretrained(str(folder), local_files_only=True,
                                                                use_safetensors=True)
    except Exception as e:
        raise MIDILoadError(
            f"cannot load Grounding DINO from {folder} ({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}): "
            f"the folder is incomplete or damaged; re-copy {DEFAULT_REPO}") from None
    return GroundingDinoDetector(model.to(device), processor, folder)
