"""Reading manifests: files or folders of (multi-document) YAML."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import yaml

YAML_SUFFIXES = (".yaml", ".yml")


class ManifestError(Exception):
    """Input that cannot be read as YAML at all (missing file, syntax error)."""


@dataclass(frozen=True)
class Document:
    path: Path
    index: int
    obj: Any

    @property
    def where(self) -> str:
        """``file#index kind/name``: enough to find the document again."""
        label = f"{self.path}#{self.index}"
        if isinstance(self.obj, dict):
            name = (self.obj.get("metadata") or {}).get("name", "?") if isinstance(self.obj.get("metadata"), dict) else "?"
            label += f" {self.obj.get('kind', '?')}/{name}"
        return label


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.suffix in YAML_SUFFIXES and p.is_file())
    if not path.exists():
        raise ManifestError(f"{path}: no such file or folder")
    return [path]


def load_text(text: str, path: Path) -> list[Document]:
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        raise ManifestError(f"{path}: not valid YAML: {exc}".replace("\n", " ")) from None
    return [Document(path, i, d) for i, d in enumerate(docs) if d is not None]


def load_paths(paths: Iterable[str | Path]) -> list[Document]:
    """Every non-empty document under the given files and folders, in a stable order."""
    out: list[Document] = []
    for raw in paths:
        for file in _files(Path(raw)):
            try:
                text = file.read_text()
            except (OSError, UnicodeDecodeError) as exc:
                raise ManifestError(f"{file}: cannot read: {exc}") from None
            out.extend(load_text(text, file))
    return out
