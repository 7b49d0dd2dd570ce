"""How failures reach the ComfyUI user: the error line the UI shows, missing models caught when the prompt
is validated (with the command that fetches them), and the download CLI run from any folder."""
from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest

from conftest import ROOT, pack_imported_as
from nodes_fixtures import *  # noqa: F401,F403  (fixtures)

from comfyui_midi import nodes
from comfyui_midi.nodes import host

M = nodes.NODE_CLASS_MAPPINGS


def comfy_exception_type(exc: BaseException) -> str:
    """What ComfyUI 0.27 puts before the message in the toast and error panel (execution.full_type_name)."""
    cls = type(exc)
    return cls.__qualname__ if cls.__module__ == "builtins" else cls.__module__ + "." + cls.__qualname__


@pytest.fixture()
def pack_as_comfyui_imports_it(tmp_path):
    """The pack imported the way ComfyUI imports a folder pack: its package name is the folder's path."""
    name = str(tmp_path / "custom_nodes" / "ComfyUI-MIDI").replace(".", "_x_")
    with pack_imported_as(name) as mod:
        yield name, mod


# ------------------------------------------------------------------------------------------------
# item: errors read well in the UI
def test_error_line_starts_with_class_and_problem_not_a_path(pack_as_comfyui_imports_it, comfy_dirs):
    name, mod = pack_as_comfyui_imports_it
    with pytest.raises(Exception) as info:
        mod.NODE_CLASS_MAPPINGS["LoadMIDIModel"]().load("NotThere", "fp32", "sdpa")
    errors = sys.modules[name + ".midi_model.errors"]
    assert isinstance(info.value, errors.MIDILoadError)       # still the pack's class for `except`
    line = f"{comfy_exception_type(info.value)}: {info.value}"
    assert line.startswith("MIDILoadError: MIDI model folder 'NotThere' not found in ComfyUI/models/midi"), line
    assert "custom_nodes" not in line.split(":")[0]
    # the traceback still ends where the error was raised
    tb = info.value.__traceback__
    while tb.tb_next:
        tb = tb.tb_next
    assert tb.tb_frame.f_code.co_filename.endswith(os.path.join("nodes", "loader.py"))


def test_without_the_fix_comfyui_would_print_the_path(pack_as_comfyui_imports_it):
    """The fix is needed: the pack's classes themselves carry the path-like module name."""
    name, _ = pack_as_comfyui_imports_it
    errors = importlib.import_module(name + ".midi_model.errors")
    assert comfy_exception_type(errors.MIDILoadError("x")).startswith(name + ".midi_model.errors")


def test_every_node_reports_readable_errors(pack_as_comfyui_imports_it):
    _, mod = pack_as_comfyui_imports_it
    for key, cls in mod.NODE_CLASS_MAPPINGS.items():
        assert getattr(getattr(cls, cls.FUNCTION), "_readable_errors", False), key


def test_other_libraries_errors_pass_unchanged(comfy_dirs):
    class Foreign(Exception):
        pass
    Foreign.__module__, Foreign.__qualname__ = "some_other_lib.errors", "Foreign"

    class Node:
        FUNCTION = "run"

        def run(self, exc):
            raise exc
    host.readable_errors(Node)
    with pytest.raises(Foreign) as info:
        Node().run(Foreign("boom"))
    assert comfy_exception_type(info.value) == "some_other_lib.errors.Foreign"
    with pytest.raises(ValueError) as info:   # builtins already read well
        Node().run(ValueError("bad"))
    assert type(info.value) is ValueError


# ------------------------------------------------------------------------------------------------
# item: missing models are found when the prompt is validated
def test_missing_midi_folder_fails_validation_with_hf_command(comfy_dirs):
    v = M["LoadMIDIModel"].VALIDATE_INPUTS
    msg = v("NotThere")
    target = comfy_dirs / "models" / "midi" / "NotThere"
    assert msg.startswith("MIDI model folder 'NotThere' not found in ComfyUI/models/midi"), msg
    assert f"`hf download VAST-AI/MIDI-3D --local-dir {target}`" in msg
    assert "huggingface-cli" not in msg
    assert v("NotThere", download=True) is True        # the node will download it
    assert v("MIDI-3D") is True and v("MIDI-3D-tiny") is True
    assert v("../midi/MIDI-3D") != True                # noqa: E712 (a path is no folder name)
    # at run time the same message (for hosts that skip validation)
    with pytest.raises(ValueError, match="MIDI model folder 'NotThere' not found"):
        M["LoadMIDIModel"]().load("NotThere", "fp32", "sdpa")


@pytest.mark.parametrize("mode,sam,dino,expect", [
    ("label_map", "none", "none", None),
    ("masks", "none", "none", None),
    ("label_map", "sam_vit_b_01ec64.pth", "grounding-dino-tiny", None),   # not used by this mode: no error
    ("boxes", "sam_tiny.pth", "none", None),
    ("points", "sam_tiny.pth", "grounding-dino-tiny", None),
    ("text", "sam_tiny.pth", "gdino-tiny", None),
    ("automatic", "none", "none", "Segment Scene: mode automatic needs a SAM checkpoint in ComfyUI/models/sams: "
                                  "download https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth"),
    ("text", "sam_vit_b_01ec64.pth", "gdino-tiny", "Segment Scene: mode text needs SAM checkpoint "
                                                   "'sam_vit_b_01ec64.pth' (not found) in ComfyUI/models/sams"),
    ("text", "sam_tiny.pth", "grounding-dino-tiny", "Segment Scene: mode text needs Grounding DINO folder "
                                                    "'grounding-dino-tiny' (not found) in ComfyUI/models/grounding-dino: "
                                                    "download it with `hf download IDEA-Research/grounding-dino-tiny "
                                                    "--local-dir "),
    ("text", "sam_tiny.pth", "none", "Segment Scene: mode text needs a Grounding DINO folder"),
    ("everything", "none", "none", "mode 'everything': use one of text, boxes"),
])
def test_segment_scene_validates_only_what_the_mode_uses(comfy_dirs, tiny_segmenters, mode, sam, dino, expect):
    verdict = M["SegmentScene"].VALIDATE_INPUTS(mode, sam, dino)
    if expect is None:
        assert verdict is True
    else:
        assert isinstance(verdict, str) and verdict.startswith(expect), verdict


def test_segment_scene_runtime_error_is_the_validation_message(comfy_dirs, scene_image):
    with pytest.raises(ValueError) as info:
        M["SegmentScene"]().segment(scene_image, "boxes", boxes="0,0,10,10", sam_model="none")
    assert str(info.value) == M["SegmentScene"].VALIDATE_INPUTS("boxes", "none", "none")


# ------------------------------------------------------------------------------------------------
# item: a download path that works from anywhere
def test_cli_runs_by_path_from_another_folder(tmp_path):
    """`python <pack>/midi_model download ...` from any folder; offline it is one clear error, nothing written."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    out = tmp_path / "MIDI-3D"
    r = subprocess.run([sys.executable, str(ROOT / "midi_model"), "download", "--out", str(out)],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith(f"error: could not download VAST-AI/MIDI-3D into {out}"), r.stderr
    assert not out.exists()
    r = subprocess.run([sys.executable, str(ROOT / "midi_model"), "--help"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "generate" in r.stdout and "download" in r.stdout
