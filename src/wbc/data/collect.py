"""Turn what a user typed (files, folders, globs) into a list of image files, in a stable order.

Folders are walked recursively for image extensions, without following symbolic links to
folders (a link loop cannot hang a run); a glob is expanded by the library, not the shell, so
`"cells/**/*.jpg"` works on every platform. What cannot be used is reported, not fatal: each
problem names the path and the reason, and the caller decides (a batch run skips and reports).
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path

from wbc.data.scan import IMAGE_EXTENSIONS
from wbc.errors import WbcError

GLOB_CHARS = set("*?[")


@dataclass
class Collection:
    files: list[str] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    def require(self, what: str) -> Collection:
        """Itself when it holds a file; else one error naming every input and why it gave none (`what`: "classify")."""
        if not self.files:
            raise WbcError("; ".join(f"{p}: {why}" for p, why in self.problems) or f"no images to {what}")
        return self


def is_image_name(path: str) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def _walk(folder: str, out: Collection) -> None:
    def onerror(e: OSError) -> None:
        out.problems.append((str(e.filename or folder), f"cannot read folder ({e.strerror or e})"))

    for root, dirs, files in os.walk(folder, onerror=onerror, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in sorted(files):
            if not f.startswith(".") and is_image_name(f):
                out.files.append(os.path.join(root, f))


def collect_images(inputs: list[str]) -> Collection:
    """Image files named by `inputs` (files, folders, globs), each once, in the order given."""
    out = Collection()
    for item in inputs:
        if os.path.isdir(item):
            before = len(out.files)
            _walk(item, out)
            if len(out.files) == before:
                out.problems.append((item, f"no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) in this folder"))
        elif os.path.lexists(item):
            out.files.append(item)  # a named file is tried whatever its extension: the decoder judges it
        elif GLOB_CHARS & set(item):
            matches = sorted(glob.glob(item, recursive=True))
            hits = [m for m in matches if os.path.isfile(m) and is_image_name(m)]
            for m in matches:
                if os.path.isdir(m):
                    _walk(m, out)
            out.files += hits
            if not matches:
                out.problems.append((item, "no file matches this pattern"))
        else:
            out.problems.append((item, "no such file or folder"))
    seen: set[str] = set()
    unique = []
    for f in out.files:  # a file named twice (or through a link) is done once
        key = os.path.realpath(f)
        if key not in seen:
            seen.add(key)
            unique.append(f)
    out.files = unique
    return out
