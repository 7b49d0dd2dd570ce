"""The pictures README.md and docs/nodes.md show exist, are images, and stay small."""
from __future__ import annotations

import re

from PIL import Image

from conftest import ROOT


def test_every_doc_picture_exists_and_is_small():
    seen = 0
    for doc in (ROOT / "README.md", ROOT / "docs" / "nodes.md"):
        for target in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", doc.read_text()):
            path = (doc.parent / target).resolve()
            assert path.is_file(), f"{doc.name}: {target} missing"
            assert path.stat().st_size < 400_000, f"{target}: keep pictures under 400 KB"
            with Image.open(path) as im:
                assert im.format in ("PNG", "JPEG") and max(im.size) <= 2100, target
            seen += 1
    assert seen >= 6
