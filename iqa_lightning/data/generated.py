"""Generated data sets, written atomically and reused when their parameters match.

A set is written to a temporary sibling folder that is renamed into place, so a reader never
sees a half-written set and two processes generating at once are safe. A marker file in the set
holds its generation parameters; a folder with the marker and the same parameters is reused.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["GeneratedSet"]


@dataclass(frozen=True)
class GeneratedSet:
    """One kind of generated set.

    Attributes:
        what: What the set is, for messages, e.g. ``"synthetic dataset"``.
        marker: Name of the file holding the generation parameters.
        content: A file a complete set has beside the marker.
    """

    what: str
    marker: str
    content: str

    def existing(self, root: Path) -> dict | None:
        """The parameters of the complete set in ``root``, or None when there is none."""
        marker = root / self.marker
        if not marker.is_file() or not (root / self.content).is_file():
            return None
        return json.loads(marker.read_text(encoding="utf-8"))

    def check_same(self, root: Path, params: dict) -> None:
        """Raise unless ``root`` holds a set generated with ``params``.

        Raises:
            FileExistsError: The set there has other parameters (or is incomplete).
        """
        existing = self.existing(root)
        if existing != params:
            raise FileExistsError(
                f"'{root}' holds a {self.what} generated with {existing}, not {params}; "
                "use another folder or delete it"
            )

    def write(self, out_dir: Path, params: dict, fill: Callable[[Path], None]) -> Path:
        """Generate the set into ``out_dir`` unless it already holds the same one.

        Args:
            out_dir: Folder of the set.
            params: Generation parameters, stored in the marker file after ``fill``.
            fill: Writes the set's files into the folder it is given (a temporary one).

        Returns:
            ``out_dir``.

        Raises:
            FileExistsError: ``out_dir`` exists with other content or other parameters.
        """
        if self.existing(out_dir) is not None:
            self.check_same(out_dir, params)
            return out_dir
        if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
            raise FileExistsError(
                f"'{out_dir}' exists but is not a complete {self.what} (no {self.marker}); "
                "delete it to regenerate"
            )
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
        try:
            fill(tmp)
            text = json.dumps(params, sort_keys=True, indent=1)
            (tmp / self.marker).write_text(text, encoding="utf-8")
            try:
                os.rename(tmp, out_dir)
            except OSError:
                if self.existing(out_dir) is None:
                    raise
            self.check_same(out_dir, params)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return out_dir
