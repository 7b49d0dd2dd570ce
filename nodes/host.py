"""The one place that talks to ComfyUI.

Every other module in ``nodes/`` goes through these functions, so the nodes import and
run without ComfyUI (tests, scripts). Inside ComfyUI the real services are used:
``folder_paths`` (model/output folders), ``comfy.model_management`` (devices, dtype,
``load_models_gpu``, interrupt), ``comfy.model_patcher.ModelPatcher`` (offloading like
core models), ``comfy.utils.ProgressBar`` and the core 3D types (``Types.MESH``,
``Types.File3D`` on ComfyUI >= 0.27).
"""
from __future__ import annotations

import functools
import inspect
import logging
import os
import re
import weakref

import torch

log = logging.getLogger("ComfyUI-MIDI")

try:  # ComfyUI host
    import folder_paths as _fp
    import comfy.model_management as _mm
    import comfy.model_patcher as _patcher
    import comfy.utils as _cutils
    IN_COMFY = True
except ImportError:  # tests, scripts
    _fp = _mm = _patcher = _cutils = None
    IN_COMFY = False

try:
    from comfy_api.latest import Types as _Types
except Exception:  # no ComfyUI, or a ComfyUI without the V3 API
    _Types = None

MODEL_FOLDER = "midi"          # ComfyUI/models/midi/<model folder>
DEFAULT_MODEL = "MIDI-3D"      # released weights: VAST-AI/MIDI-3D
DEFAULT_REPO = "VAST-AI/MIDI-3D"


# ------------------------------------------------------------------------------------------------
# core 3D types
class _FallbackMESH:
    """Stand-in for ``comfy_api.latest.Types.MESH`` (0.27 field names) outside ComfyUI."""

    def __init__(self, vertices, faces, uvs=None, vertex_colors=None, texture=None,
                 vertex_counts=None, face_counts=None, unlit=False):
        self.vertices, self.faces = vertices, faces
        self.uvs, self.vertex_colors, self.texture, self.unlit = uvs, vertex_colors, texture, unlit
        self.vertex_counts, self.face_counts = vertex_counts, face_counts


class _FallbackFile3D:
    """Stand-in for ``Types.File3D`` (disk-backed only) outside ComfyUI / on ComfyUI < 0.27."""

    def __init__(self, source, file_format=""):
        self.source = source
        self.format = (file_format or os.path.splitext(str(source))[1].lstrip(".")).lower()

    def get_source(self):
        return self.source

    def get_bytes(self):
        with open(self.source, "rb") as f:
            return f.read()


MESH = getattr(_Types, "MESH", None) or _FallbackMESH
File3D = getattr(_Types, "File3D", None) or _FallbackFile3D
try:
    MESH_HAS_COUNTS = "vertex_counts" in inspect.signature(MESH.__init__).parameters
except (TypeError, ValueError):
    MESH_HAS_COUNTS = False


def make_mesh(vertices, faces, vertex_counts, face_counts, uvs=None, texture=None, vertex_colors=None):
    """Core MESH from padded (B,N,3)/(B,M,3) tensors and per-item counts.

    ComfyUI >= 0.27 carries the counts in the object (variable-size batch) and optional
    ``uvs`` (B,N,2, glTF convention), a base-colour ``texture`` (B,H,W,3) and ``vertex_colors``.
    Older hosts (0.8) have ``MESH(vertices, faces)`` only; the rest is then attached as plain
    attributes so this pack still reads it (core nodes see the padded arrays).
    """
    if MESH_HAS_COUNTS:
        return MESH(vertices=vertices, faces=faces, vertex_counts=vertex_counts, face_counts=face_counts,
                    uvs=uvs, texture=texture, vertex_colors=vertex_colors)
    mesh = MESH(vertices, faces)
    mesh.vertex_counts, mesh.face_counts = vertex_counts, face_counts
    mesh.uvs, mesh.texture, mesh.vertex_colors = uvs, texture, vertex_colors
    return mesh


# ------------------------------------------------------------------------------------------------
# folders
_fallback_dirs = {
    "models": os.environ.get("MIDI_MODELS_DIR", os.path.join(os.getcwd(), "models")),
    "output": os.environ.get("MIDI_OUTPUT_DIR", os.path.join(os.getcwd(), "output")),
}


def set_fallback_dirs(models: str | None = None, output: str | None = None):
    """Outside ComfyUI: where ``models/<folder>`` and the output folder are (tests, scripts)."""
    if models is not None:
        _fallback_dirs["models"] = models
    if output is not None:
        _fallback_dirs["output"] = output


def register_model_folder(name: str = MODEL_FOLDER):
    """Make ``ComfyUI/models/<name>`` a model folder (extra_model_paths.yaml may add more)."""
    if not IN_COMFY:
        return
    default = os.path.join(_fp.models_dir, name)
    _fp.add_model_folder_path(name, default)


def model_folder_paths(name: str = MODEL_FOLDER) -> list[str]:
    if IN_COMFY:
        try:
            return list(_fp.get_folder_paths(name))
        except Exception:
            return [os.path.join(_fp.models_dir, name)]
    return [os.path.join(_fallback_dirs["models"], name)]


def list_subfolders(name: str = MODEL_FOLDER) -> list[str]:
    """Names of the model folders (sub-directories) in every search path of ``models/<name>``."""
    found = set()
    for root in model_folder_paths(name):
        if os.path.isdir(root):
            for entry in os.listdir(root):
                if not entry.startswith(".") and os.path.isdir(os.path.join(root, entry)):
                    found.add(entry)
    return sorted(found)


def find_subfolder(entry: str, name: str = MODEL_FOLDER) -> str | None:
    """Full path of ``models/<name>/<entry>`` (first search path that has it), or None."""
    if not entry or os.path.isabs(entry) or ".." in re.split(r"[\\/]", entry):
        return None
    for root in model_folder_paths(name):
        path = os.path.join(root, entry)
        if os.path.isdir(path):
            return path
    return None


def default_download_dir(entry: str, name: str = MODEL_FOLDER) -> str:
    return os.path.join(model_folder_paths(name)[0], entry)


def list_files(name: str) -> list[str]:
    """Files of a core model folder (e.g. ``loras``), [] when unknown."""
    if IN_COMFY:
        try:
            return list(_fp.get_filename_list(name))
        except Exception:
            return []
    root = os.path.join(_fallback_dirs["models"], name)
    out = []
    if os.path.isdir(root):
        for dirpath, _, files in os.walk(root, followlinks=True):
            for f in files:
                out.append(os.path.relpath(os.path.join(dirpath, f), root).replace(os.sep, "/"))
    return sorted(out)


def file_path(name: str, filename: str) -> str | None:
    if IN_COMFY:
        return _fp.get_full_path(name, filename)
    path = os.path.join(_fallback_dirs["models"], name, filename)
    return path if os.path.isfile(path) else None


def output_directory() -> str:
    return _fp.get_output_directory() if IN_COMFY else _fallback_dirs["output"]


_SAFE_PART = re.compile(r"[^A-Za-z0-9._\- ]+")


def _clean_prefix(prefix: str) -> tuple[str, str]:
    """'a/b/name' -> ('a/b', 'name'); refuses absolute paths and '..' (one-line ValueError)."""
    prefix = (prefix or "").strip().replace("\\", "/")
    if not prefix:
        prefix = "midi/scene"
    if prefix.startswith("/") or re.match(r"^[A-Za-z]:", prefix):
        raise ValueError(f"filename_prefix '{prefix}' is an absolute path: use a name relative to the "
                         "output folder, e.g. 'midi/scene'")
    parts = [p for p in prefix.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise ValueError(f"filename_prefix '{prefix}' leaves the output folder: remove '..', e.g. 'midi/scene'")
    parts = [_SAFE_PART.sub("_", p) for p in parts] or ["scene"]
    return "/".join(parts[:-1]), parts[-1]


def output_names(prefix: str, ext: str, suffix: str = ""):
    """-> (folder, subfolder, names): ``names`` yields ``<name>_<counter:05>_<suffix>.<ext>`` from
    past the highest counter of that prefix on; the writer (the library's ``files``) takes the
    first one that is still free, so an existing file is never overwritten."""
    subfolder, name = _clean_prefix(prefix)
    out_root = os.path.realpath(output_directory())
    folder = os.path.realpath(os.path.join(out_root, subfolder))
    if os.path.commonpath([out_root, folder]) != out_root:
        raise ValueError(f"filename_prefix '{prefix}' leaves the output folder: use e.g. 'midi/scene'")
    pat = re.compile(re.escape(name) + r"_(\d{5,})_")
    counter = 1
    if os.path.isdir(folder):
        for f in os.listdir(folder):
            m = pat.match(f)
            if m:
                counter = max(counter, int(m.group(1)) + 1)

    def names():
        for c in range(counter, counter + 100_000):
            yield f"{name}_{c:05d}_{suffix}.{ext}"
    return folder, subfolder, names()


# ------------------------------------------------------------------------------------------------
# devices, dtype, model management
def torch_device() -> torch.device:
    if IN_COMFY:
        return _mm.get_torch_device()
    return torch.device("cpu")


def offload_device() -> torch.device:
    if IN_COMFY:
        return _mm.unet_offload_device()
    return torch.device("cpu")


def intermediate_device() -> torch.device:
    if IN_COMFY:
        return _mm.intermediate_device()
    return torch.device("cpu")


def auto_dtype(device=None) -> torch.dtype:
    """bf16 / fp16 where ComfyUI would use them on the compute device, else fp32;
    outside ComfyUI the library's rule (``midi_model.dtypes.auto_dtype``)."""
    device = device or torch_device()
    if IN_COMFY:
        try:
            if _mm.should_use_bf16(device, prioritize_performance=True):
                return torch.bfloat16
            if _mm.should_use_fp16(device, prioritize_performance=True):
                return torch.float16
        except Exception:
            pass
        return torch.float32
    from ..midi_model.dtypes import auto_dtype as library_auto_dtype

    return library_auto_dtype(device)


class _Holder(torch.nn.Module):
    """Owns one library module for ModelPatcher (which sets attributes such as ``device`` on
    the module it manages; transformers models have a read-only ``device`` property)."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.inner = module


_holder_classes: dict = {}


def _holder(module: torch.nn.Module, name: str) -> _Holder:
    # one class per part, so ComfyUI's log says "Requested to load MIDI_transformer"
    cls = _holder_classes.get(name)
    if cls is None:
        cls = _holder_classes[name] = type(f"MIDI_{name}", (_Holder,), {})
    return cls(module)


class ManagedModule:
    """One library module under ComfyUI's model management (or plain ``.to`` outside it).

    Weight patches (LoRA) live on the manager, not in the weights: :meth:`with_lora` returns a
    clone that shares the module and adds the patch; the weights are patched when the clone is
    loaded and restored when another clone (e.g. another strength) is loaded, as core's
    ModelPatcher does for LoRAs. Changing a strength therefore costs one patch, not a reload.
    """

    def __init__(self, module: torch.nn.Module, name: str, patcher=None, patches: tuple = ()):
        self.module, self.name = module, name
        self.patches = patches  # ((updates {layer name: lora.LoraUpdate}, strength), ...)
        self.patcher = patcher
        if IN_COMFY and patcher is None:
            self.patcher = _patcher.ModelPatcher(_holder(module, name), load_device=torch_device(),
                                                 offload_device=offload_device())

    def with_lora(self, updates: dict, strength: float) -> "ManagedModule":
        patcher = None
        if IN_COMFY:
            patcher = self.patcher.clone()
            added = patcher.add_patches({f"inner.{layer}.weight": _comfy_lora_patch(u) for layer, u in updates.items()},
                                        float(strength))
            if len(added) != len(updates):
                raise RuntimeError(f"{self.name}: ComfyUI took {len(added)} of {len(updates)} LoRA patches")
        return ManagedModule(self.module, self.name, patcher, self.patches + ((updates, float(strength)),))


def _comfy_lora_patch(update):
    """A library LoraUpdate as core's LoRA weight adapter (core computes up @ down * alpha/rank)."""
    try:
        from comfy.weight_adapter import LoRAAdapter
    except ImportError:  # older core: a plain weight difference
        return (update.delta(),)
    return LoRAAdapter(set(), (update.up, update.down, update.alpha, None, None, None))


# Outside ComfyUI: the patch set each module's weights carry now, and their unpatched values.
_applied: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _same_patches(a: tuple, b: tuple) -> bool:
    return len(a) == len(b) and all(x[0] is y[0] and x[1] == y[1] for x, y in zip(a, b))


def _apply_patches(m: ManagedModule):
    from ..midi_model.lora import merge_lora

    current = _applied.get(m.module)
    if current is not None and _same_patches(current[0], m.patches):
        return
    with torch.no_grad():
        if current is not None:  # back to the plain weights first
            for layer, w in current[1].items():
                m.module.get_submodule(layer).weight.copy_(w)
        originals = {layer: m.module.get_submodule(layer).weight.detach().clone()
                     for updates, _ in m.patches for layer in updates}
        for updates, strength in m.patches:
            merge_lora(m.module, updates, strength)
    _applied[m.module] = (m.patches, originals)


def load_models(managed: list[ManagedModule], memory_required: int = 0):
    """Put these modules on the compute device, weight patches applied. ``memory_required``: bytes
    the stage needs beyond the weights (ComfyUI offloads other models to make that much room)."""
    if IN_COMFY:
        _mm.load_models_gpu([m.patcher for m in managed if m.patcher is not None],
                            memory_required=int(memory_required))
        return
    dev = torch_device()
    for m in managed:
        m.module.to(dev)
        _apply_patches(m)


# ------------------------------------------------------------------------------------------------
# errors as the UI shows them
# ComfyUI reports an exception as ``<module>.<qualname>: <message>`` (``builtins`` modules print the
# class name only), and it names a folder pack's modules after the folder's path. So our errors would
# read '/…/custom_nodes/ComfyUI-MIDI.midi_model.errors.MIDILoadError: …' in the toast and error panel.
_PACK = __name__.rpartition(".nodes.host")[0]  # the pack's package name (a path inside ComfyUI)
_readable_types: dict = {}


def _is_ours(cls) -> bool:
    return bool(_PACK) and (getattr(cls, "__module__", "") or "").startswith(_PACK + ".")


def _readable_type(cls):
    """A subclass of ``cls`` that ComfyUI prints as just ``MIDILoadError`` (``except cls`` still catches it)."""
    t = _readable_types.get(cls)
    if t is None:
        t = type(cls.__name__, (cls,), {"__module__": "builtins", "__qualname__": cls.__qualname__,
                                        "__doc__": cls.__doc__})
        _readable_types[cls] = t
    return t


def readable_errors(node_cls):
    """Make the pack's own exceptions raised by ``node_cls``'s FUNCTION read '<Class>: <message>' in ComfyUI.

    The exception object is kept (same message, traceback, cause); only its class becomes a subclass
    whose module name ComfyUI leaves out. Errors from other libraries pass unchanged.
    """
    fn = getattr(node_cls, node_cls.FUNCTION)
    if getattr(fn, "_readable_errors", False):
        return node_cls

    @functools.wraps(fn)
    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            if _is_ours(type(e)):
                e.__class__ = _readable_type(type(e))
            raise

    run._readable_errors = True
    setattr(node_cls, node_cls.FUNCTION, run)
    return node_cls


# ------------------------------------------------------------------------------------------------
# progress and cancel
class Interrupted(Exception):
    """Raised outside ComfyUI when :func:`request_interrupt` was called (ComfyUI raises its own)."""


_state = {"interrupt": False, "progress_hook": None}


def request_interrupt(value: bool = True):
    """Outside ComfyUI: ask the running node to stop at its next step/chunk (tests)."""
    _state["interrupt"] = value


def set_progress_hook(fn):
    """Outside ComfyUI: fn(value, total, node_id) is called on every progress update (tests)."""
    _state["progress_hook"] = fn


def check_interrupt():
    """Raise if the user pressed Cancel (ComfyUI) / :func:`request_interrupt` was called."""
    if IN_COMFY:
        _mm.throw_exception_if_processing_interrupted()
        return
    if _state["interrupt"]:
        _state["interrupt"] = False
        raise Interrupted("processing interrupted")


class Progress:
    """ComfyUI progress bar; also checks Cancel on every update."""

    def __init__(self, total: int, node_id=None):
        self.total, self.node_id = max(int(total), 1), node_id
        self._bar = _cutils.ProgressBar(self.total, node_id=node_id) if IN_COMFY else None

    def set(self, value: int, total: int | None = None):
        if total is not None:
            self.total = max(int(total), 1)
        if self._bar is not None:
            self._bar.update_absolute(int(value), self.total)
        elif _state["progress_hook"] is not None:
            _state["progress_hook"](int(value), self.total, self.node_id)
        check_interrupt()

    def callback(self):
        """The library's progress, ``callback(done, total)``, drives this bar."""
        def cb(done, total):
            self.set(int(done), total)
        return cb
