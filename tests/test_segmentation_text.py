"""Text mode end to end: a tiny random Grounding DINO in Hugging Face layout (loaded by folder,
like the node does) -> boxes -> the tiny SAM -> masks; plus the loader and download errors."""
import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from segment_anything import SamPredictor

from midi_model.errors import MIDIInputError, MIDILoadError
from midi_model.segmentation import (GroundingDinoDetector, download_grounding_dino, load_grounding_dino,
                                     load_sam, segment_scene)
from midi_model.testing import save_tiny_grounding_dino, save_tiny_sam

RAW = dict(polygon_refinement=False, remove_small=False, fill_holes=False)
LOW = dict(box_threshold=0.0, text_threshold=0.0)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    sam_path = root / "sams" / "sam_tiny.pth"
    sam_path.parent.mkdir()
    original_sam = save_tiny_sam(sam_path, seed=0)
    gd_folder = root / "grounding-dino" / "tiny"
    save_tiny_grounding_dino(gd_folder, seed=0, num_queries=3)
    return dict(sam_path=sam_path, original_sam=original_sam, sam=load_sam(sam_path), gd_folder=gd_folder,
                detector=load_grounding_dino(gd_folder, device="cpu"))


@pytest.fixture(scope="module")
def image():
    rs = np.random.RandomState(1)
    img = (rs.rand(96, 128, 3) * 255).astype(np.uint8)
    img[10:50, 60:120] = (40, 160, 60)
    return img


def test_detector_scores_like_the_official_pipeline(models, image):
    det = models["detector"]
    found = det.detect(Image.fromarray(image), ["sofa", "lamp"], **LOW)
    assert len(found) == 6                                   # 3 queries x 2 labels, nothing filtered
    scores = [d.score for d in found]
    assert scores == sorted(scores, reverse=True)           # official order: score, highest first
    for label in ("sofa", "lamp"):
        # score = sigmoid of the best token logit, as the zero-shot pipeline computes it
        inputs = det.processor(images=Image.fromarray(image), text=f"{label}.", return_tensors="pt")
        with torch.no_grad():
            logits = det.model(**inputs).logits[0]
        expect = torch.sigmoid(logits.max(-1).values).tolist()
        got = [d.score for d in found if d.label == label]
        assert np.allclose(sorted(got), sorted(expect), atol=1e-6)
    for d in found:
        x0, y0, x1, y1 = d.box
        assert 0 <= x0 <= x1 <= 128 and 0 <= y0 <= y1 <= 96 and np.array_equal(d.box, np.trunc(d.box))
    # a high box threshold keeps only boxes above it
    strict = det.detect(Image.fromarray(image), ["sofa", "lamp"], box_threshold=0.5, text_threshold=0.0)
    assert [d.score for d in strict] == [s for s in scores if s > 0.5]


def test_old_post_processing_signature_is_supported(models, image):
    det = models["detector"]

    class OldStyleProcessor:
        """transformers 4.49: `box_threshold`, phrases under `labels`."""
        def __init__(self, real):
            self.real, self.tokenizer = real, real.tokenizer

        def __call__(self, *args, **kwargs):
            return self.real(*args, **kwargs)

        def post_process_grounded_object_detection(self, outputs, input_ids=None, box_threshold=0.25,
                                                   text_threshold=0.25, target_sizes=None):
            res = self.real.post_process_grounded_object_detection(
                outputs, input_ids, threshold=box_threshold, text_threshold=text_threshold, target_sizes=target_sizes)
            return [{"scores": r["scores"], "boxes": r["boxes"], "labels": r["text_labels"]} for r in res]

    old = GroundingDinoDetector(det.model, OldStyleProcessor(det.processor))
    a = det.detect(Image.fromarray(image), ["sofa"], box_threshold=0.2, text_threshold=0.0)
    b = old.detect(Image.fromarray(image), ["sofa"], box_threshold=0.2, text_threshold=0.0)
    assert [(d.score, d.box.tolist()) for d in a] == [(d.score, d.box.tolist()) for d in b]


def test_text_mode_end_to_end(models, image):
    det = models["detector"]
    found = det.detect(Image.fromarray(image), ["sofa", "lamp"], **LOW)
    # reference: SAM straight from segment_anything on the unsaved module, one box at a time
    p = SamPredictor(models["original_sam"])
    p.set_image(image)
    ref = []
    for d in found:
        m, s, _ = p.predict(box=d.box, multimask_output=True)
        ref.append(m[np.argmax(s)])
    expected, labels, claimed = [], [], np.zeros((96, 128), bool)
    for d, m in zip(found, ref):            # overlap='earlier': the higher score keeps shared pixels
        own = m & ~claimed
        claimed |= m
        if own.any():
            expected.append(own)
            labels.append(d.label)
    assert len(expected) >= 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = segment_scene(image, "text", prompt="Sofa. lamp", sam=str(models["sam_path"]),
                            detector=str(models["gd_folder"]), device="cpu", multimask="best", overlap="earlier",
                            dedupe_iou=0, max_instances=7, too_many="keep_first", **LOW, **RAW)
    # detections whose mask is fully covered by higher-scored ones are dropped, with a warning
    assert any("dropped" in str(w.message) for w in caught) == (len(expected) < len(found))
    n = min(len(expected), 7)
    assert res.masks.shape == (n, 96, 128) and res.masks.dtype == bool
    assert res.labels == labels[:n]
    assert np.array_equal(res.masks, np.stack(expected[:n]))
    assert (np.diff(res.scores) <= 0).all()
    assert res.preview.shape == (96, 128, 3)


def test_text_mode_defaults_run(models, image):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")    # random boxes may be dropped as duplicates/empty
        res = segment_scene(image, "text", prompt="sofa", sam=models["sam"], detector=models["detector"],
                            too_many="keep_first", **LOW)
    assert 1 <= len(res) <= 3 and res.masks.sum(0).max() == 1 and set(res.labels) == {"sofa"}


def test_text_mode_errors(models, image):
    kw = dict(sam=models["sam"], detector=models["detector"])
    with pytest.raises(MIDIInputError, match=r"found no objects for prompt 'sofa. lamp': lower box_threshold \(now 1.00\)"):
        segment_scene(image, "text", prompt="sofa. lamp", box_threshold=1.0, **kw)
    # random weights put no label token above the default text threshold: the message says so
    with pytest.raises(MIDIInputError, match=r"lower box_threshold \(now 0.00\) or text_threshold \(now 0.30\)"):
        segment_scene(image, "text", prompt="sofa", box_threshold=0.0, **kw)
    with pytest.raises(MIDIInputError, match=r"found \d+ objects but max_instances is 1: raise box_threshold \(now 0.00\)"), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")   # some of the 9 random boxes are covered by others and dropped
        segment_scene(image, "text", prompt="sofa. lamp. dog", max_instances=1, multimask="best", overlap="earlier",
                      dedupe_iou=0, **LOW, **RAW, **kw)
    with pytest.raises(MIDIInputError, match="needs a prompt naming the objects"):
        segment_scene(image, "text", prompt=" . ", **kw)
    with pytest.raises(MIDIInputError, match="needs a Grounding DINO model folder"):
        segment_scene(image, "text", prompt="sofa", sam=models["sam"])
    with pytest.raises(MIDIInputError, match="mode 'text' needs a SAM model"):
        segment_scene(image, "text", prompt="sofa", detector=models["detector"])


def test_grounding_dino_folder_errors(tmp_path, models):
    with pytest.raises(MIDILoadError, match=r"folder .*missing_gd does not exist"):
        load_grounding_dino(tmp_path / "missing_gd")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MIDILoadError, match="has no config.json"):
        load_grounding_dino(empty)
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    (wrong / "config.json").write_text(json.dumps({"model_type": "clip"}))
    with pytest.raises(MIDILoadError, match=r"holds a 'clip' model, not Grounding DINO"):
        load_grounding_dino(wrong)
    noweights = tmp_path / "noweights"
    noweights.mkdir()
    (noweights / "config.json").write_text((models["gd_folder"] / "config.json").read_text())
    with pytest.raises(MIDILoadError, match="no .safetensors weights"):
        load_grounding_dino(noweights)
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in models["gd_folder"].iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "model.safetensors").write_bytes(b"\0" * 64)
    with pytest.raises(MIDILoadError, match=r"cannot load Grounding DINO from .*broken"):
        load_grounding_dino(broken)


def test_download_fails_offline_with_clear_message(tmp_path):
    # a closed local port stands in for "no internet"
    with pytest.raises(MIDILoadError, match=r"could not download Grounding DINO 'IDEA-Research/grounding-dino-tiny'.*Without internet"):
        download_grounding_dino(tmp_path / "gd", endpoint="http://127.0.0.1:9")
    with pytest.raises(MIDILoadError, match="could not download"):
        load_grounding_dino(tmp_path / "gd2", download=True, endpoint="http://127.0.0.1:9")
