"""SaveMIDIScene: MESH batch -> one scene GLB (one named node per object) for Preview3D."""
from __future__ import annotations

import os
import re

from . import host
from .decode import core_to_meshes
from ..midi_model import files as files_lib
from ..midi_model import scene as scene_lib
from ..midi_model.errors import MIDIInputError


def object_names(names: str, n: int) -> list[str]:
    """'chair, table' -> ['chair', 'table', 'object_3', ...]; file-name safe, unique (library rule)."""
    given = [s.strip() for s in re.split(r"[,\n]", names or "") if s.strip()][:n]
    return scene_lib.instance_names(n, given + [""] * (n - len(given)))


class SaveMIDIScene:
    DESCRIPTION = ("Saves the objects as one scene GLB with a named node per object (and optionally one GLB per "
                   "object) in the output folder; never overwrites. Connect model_file to Preview3D to view it.")
    CATEGORY = "MIDI"
    FUNCTION = "save"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING", "FILE_3D_GLB")
    RETURN_NAMES = ("model_file", "scene_glb")
    OUTPUT_TOOLTIPS = ("Path of the scene GLB relative to the output folder (Preview3D's model_file).",
                       "The scene as a 3D file (ComfyUI >= 0.27: Preview3D, SaveGLB, Preview3DAdvanced).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "meshes": ("MESH", {"tooltip": "One mesh per object (Decode To Meshes, or any core MESH batch)."}),
            "filename_prefix": ("STRING", {"default": "midi/scene", "tooltip":
                                "File name inside the output folder; sub-folders allowed. A counter is added, "
                                "existing files are never overwritten."}),
            "save_objects": ("BOOLEAN", {"default": False, "tooltip":
                             "Also write one GLB per object (<prefix>_<counter>_<name>.glb), in scene coordinates."}),
        }, "optional": {
            "names": ("STRING", {"default": "", "multiline": False, "tooltip":
                      "Object names, comma separated, in mask order (e.g. the labels output of Segment Scene). "
                      "Missing names become object_<k>, k counted from 1."}),
        }}

    def save(self, meshes, filename_prefix="midi/scene", save_objects=False, names=""):
        items = core_to_meshes(meshes)
        labels = object_names(names, len(items))
        keep = [i for i, m in enumerate(items) if len(m.faces) > 0]
        if not keep:
            raise MIDIInputError(
                f"meshes: all {len(items)} objects are empty; raise octree_depth or check the masks")
        if len(keep) < len(items):
            host.log.warning("MIDI: skipping empty object(s) %s", [labels[i] for i in range(len(items)) if i not in keep])
        kept, kept_names = [items[i] for i in keep], [labels[i] for i in keep]
        # the library's one home for writing: a temporary name, then the first free name
        folder, subfolder, candidates = host.output_names(filename_prefix, "glb")
        data = scene_lib.glb_bytes(kept, names=kept_names)
        path = str(files_lib.write_first_free((os.path.join(folder, n) for n in candidates),
                                              lambda f: f.write(data), "scene GLB"))
        filename = os.path.basename(path)
        files = [{"filename": filename, "subfolder": subfolder, "type": "output"}]
        if save_objects:
            written = [path]
            try:  # all or nothing: a failed object file takes the scene and the others back
                stem = filename[:-len("_.glb")]
                for m, name in zip(kept, kept_names):
                    obj = scene_lib.glb_bytes([m], names=[name])
                    p = files_lib.write_new(os.path.join(folder, f"{stem}_{name}.glb"),
                                            lambda f, obj=obj: f.write(obj), "object GLB")
                    written.append(str(p))
                    files.append({"filename": os.path.basename(p), "subfolder": subfolder, "type": "output"})
            except BaseException:
                files_lib.remove_written(written)
                raise
        rel = f"{subfolder}/{filename}" if subfolder else filename
        return {"ui": {"3d": files}, "result": (rel, host.File3D(path))}
