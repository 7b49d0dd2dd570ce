"""Optional download of the released weights (for users with internet)."""
from __future__ import annotations

import shlex
from pathlib import Path

from .checkpoint import REPO_ID, check_model_folder
from .errors import MIDILoadError

# what the loader reads; everything else in the repo (images, README) is skipped
ALLOW_PATTERNS = ["model_index.json", "*/config.json", "*/*.safetensors", "*/*.safetensors.index.json",
                  "*/preprocessor_config.json", "*/scheduler_config.json"]


def hf_download_command(local_dir, repo_id: str = REPO_ID) -> str:
    """The shell command that fetches ``repo_id`` into ``local_dir`` (``hf``: huggingface_hub's CLI since 0.34)."""
    return f"hf download {repo_id} --local-dir {shlex.quote(str(local_dir))}"


def download_model(local_dir, repo_id: str = REPO_ID, revision: str | None = None) -> Path:
    """snapshot_download into ``local_dir`` and check the result; one clear error offline."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise MIDILoadError("huggingface_hub is not installed: pip install huggingface_hub") from None
    local_dir = Path(local_dir)
    try:
        snapshot_download(repo_id=repo_id, local_dir=str(local_dir), revision=revision,
                          allow_patterns=ALLOW_PATTERNS)
    except Exception as e:
        raise MIDILoadError(f"could not download {repo_id} into {local_dir} ({type(e).__name__}): without "
                            f"internet, download it on a connected machine and copy the folder there") from None
    return check_model_folder(local_dir)
