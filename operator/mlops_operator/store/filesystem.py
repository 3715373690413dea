"""The model store on a filesystem (a PVC in the cluster, a folder locally).

Layout: ``<root>/<namespace>/<model>/<version>/`` holding ``model.skops``,
``metadata.json``, ``reference.json`` and, when the trainer compiled and
verified the model, ``model.onnx`` (its sha256 in metadata.json too).  A version appears in one
``os.rename`` of a fully written temporary directory in the same parent, so a
reader sees a complete version or none; a version is never rewritten.

Models are loaded with skops, never pickle, and only when every type the file
would instantiate is trusted: the ones skops trusts itself (scikit-learn
estimator classes, numpy and scipy ufuncs and dtypes, plain builtins), the
explicit list in :mod:`.trusted_types` (what the models this trainer builds
hold, found by training each of them), and types under the extra module
prefixes the operator allows for non-scikit-learn estimators.  A prefix never
reaches into scikit-learn, numpy, scipy or the standard library, so no
function of theirs (``numpy.lib.format.open_memmap``, ``scipy.io.savemat``,
``sklearn.datasets.fetch_openml``, ``builtins.eval``) is ever trusted.  The
bytes are read once, hashed and checked against ``metadata.json`` (and the
digest the caller expects) before they are parsed, so the file cannot change
between the check and the load.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .trusted_types import TRUSTED_TYPES

MODEL_FILE = "model.skops"
METADATA_FILE = "metadata.json"
REFERENCE_FILE = "reference.json"
METADATA_FORMAT = 1

DEFAULT_TRUSTED_MODULES: tuple[str, ...] = ()
"""Extra module prefixes whose types a stored model may hold: none unless the
operator allows a non-scikit-learn estimator (``--allow-module``)."""

LISTED_PACKAGES = frozenset({"sklearn", "numpy", "scipy"}) | frozenset(sys.stdlib_module_names)
"""Packages trusted only through the explicit list, never by an extra prefix."""

_DENIED_PARTS = frozenset({"f2py", "distutils", "testing", "ctypeslib", "_testing"})
_DENIED_NAMES = frozenset({
    "load", "loads", "save", "savez", "savez_compressed", "savetxt", "loadtxt", "fromfile", "tofile",
    "memmap", "open", "system", "exec", "eval", "compile", "__import__", "getattr", "setattr",
})
"""Even inside an extra prefix: nothing that reads or writes files or runs code."""

_COMPONENT = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,251}[A-Za-z0-9])?$")
_TMP_PREFIX = ".tmp-"
_STALE_TMP_SECONDS = 3600


class ArtifactError(Exception):
    """A stored version is missing, corrupt, or not safe to load."""


class VersionNotFound(ArtifactError):
    """No complete version with this id exists."""


def _check_component(kind: str, value: str) -> str:
    if not isinstance(value, str) or not _COMPONENT.match(value) or ".." in value:
        raise ValueError(f"invalid {kind} {value!r}: use letters, digits, '.', '_' and '-' (at most 253), not starting with '.'")
    return value


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _normalize_digest(digest: str) -> str:
    d = digest.strip().lower()
    return d.split(":", 1)[1] if d.startswith("sha256:") else d


def is_trusted_type(name: str, modules: Iterable[str] = DEFAULT_TRUSTED_MODULES) -> bool:
    """Whether skops may instantiate ``name``, one of the types skops does not trust itself.

    ``modules`` are the extra module prefixes the operator allows; they never
    reach the packages of :data:`LISTED_PACKAGES`.
    """
    if name in TRUSTED_TYPES:
        return True
    parts = name.split(".")
    if parts[0] in LISTED_PACKAGES or any(p in _DENIED_PARTS for p in parts[:-1]) or parts[-1] in _DENIED_NAMES:
        return False
    return any(name.startswith(_prefix(m)) for m in modules)


def _prefix(module: str) -> str:
    return module if module.endswith(".") else module + "."


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@dataclass(frozen=True)
class WriteResult:
    """Where a version is and whether this call created it."""

    path: Path | str
    """A folder, or an s3:// URI."""
    created: bool
    metadata: dict[str, Any]


class ModelStore:
    """Versions of models under ``root``; see the module docstring for the layout."""

    def __init__(self, root: str | os.PathLike[str], trusted_modules: Sequence[str] = DEFAULT_TRUSTED_MODULES) -> None:
        self.root = Path(root)
        self.trusted_modules = tuple(trusted_modules)

    def __repr__(self) -> str:
        return f"ModelStore({str(self.root)!r})"

    # -- paths ---------------------------------------------------------------

    def model_dir(self, namespace: str, model: str) -> Path:
        return self.root / _check_component("namespace", namespace) / _check_component("model", model)

    def version_dir(self, namespace: str, model: str, version: str) -> Path:
        return self.model_dir(namespace, model) / _check_component("version", version)

    def uri(self, namespace: str, model: str, version: str) -> str:
        return self.version_dir(namespace, model, version).absolute().as_uri()

    # -- reading -------------------------------------------------------------

    def exists(self, namespace: str, model: str, version: str) -> bool:
        return (self.version_dir(namespace, model, version) / METADATA_FILE).is_file()

    def list_versions(self, namespace: str, model: str) -> list[str]:
        """Complete versions, oldest first (by the time they were written)."""
        base = self.model_dir(namespace, model)
        if not base.is_dir():
            return []
        found = []
        for entry in base.iterdir():
            if entry.name.startswith(".") or not (entry / METADATA_FILE).is_file():
                continue
            found.append((entry.stat().st_mtime, entry.name))
        return [name for _, name in sorted(found)]

    def _read_json(self, namespace: str, model: str, version: str, name: str) -> dict[str, Any]:
        path = self.version_dir(namespace, model, version) / name
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            if not (path.parent / METADATA_FILE).is_file():
                raise VersionNotFound(f"model {namespace}/{model} has no version {version!r} in the store") from None
            raise ArtifactError(f"{namespace}/{model}/{version}: {name} is missing") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ArtifactError(f"{namespace}/{model}/{version}: {name} is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ArtifactError(f"{namespace}/{model}/{version}: {name} is not a JSON object")
        return data

    def read_metadata(self, namespace: str, model: str, version: str) -> dict[str, Any]:
        """``metadata.json`` of a version; :class:`VersionNotFound` when there is none."""
        meta = self._read_json(namespace, model, version, METADATA_FILE)
        fmt = meta.get("format")
        if fmt != METADATA_FORMAT:
            raise ArtifactError(f"{namespace}/{model}/{version}: metadata format {fmt!r} is not supported (expected {METADATA_FORMAT})")
        return meta

    def read_reference(self, namespace: str, model: str, version: str) -> dict[str, Any]:
        """``reference.json`` of a version (the drift reference)."""
        return self._read_json(namespace, model, version, REFERENCE_FILE)

    def load_model(
        self,
        namespace: str,
        model: str,
        version: str,
        expected_sha256: str | None = None,
        *,
        trusted_modules: Sequence[str] | None = None,
    ) -> Any:
        """Load a version's fitted pipeline after checking its digest and types.

        Raises :class:`ArtifactError` when the file's sha256 differs from
        ``metadata.json`` or from ``expected_sha256`` (hex, or ``sha256:hex``),
        or when the file holds an untrusted type (see :func:`load_skops_bytes`);
        ``trusted_modules`` replaces the store's extra module prefixes.
        """
        meta = self.read_metadata(namespace, model, version)
        path = self.version_dir(namespace, model, version) / MODEL_FILE
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ArtifactError(f"{namespace}/{model}/{version}: {MODEL_FILE} is missing") from None
        verify_digest(f"{namespace}/{model}/{version}", MODEL_FILE, data, meta, expected_sha256)
        modules = self.trusted_modules if trusted_modules is None else tuple(trusted_modules)
        try:
            return load_skops_bytes(data, modules)
        except ArtifactError as exc:
            raise ArtifactError(f"{namespace}/{model}/{version}: {exc}") from None

    def read_artifact(self, namespace: str, model: str, version: str, name: str) -> bytes:
        """The bytes of another file of a version (e.g. ``model.onnx``), checked against its sha256 in metadata.json.

        Raises :class:`ArtifactError` when the file is missing, unrecorded or altered.
        """
        _check_component("file", name)
        meta = self.read_metadata(namespace, model, version)
        recorded = (meta.get("sha256") or {}).get(name)
        if not recorded:
            raise ArtifactError(f"{namespace}/{model}/{version}: metadata.json records no sha256 for {name}")
        try:
            data = (self.version_dir(namespace, model, version) / name).read_bytes()
        except FileNotFoundError:
            raise ArtifactError(f"{namespace}/{model}/{version}: {name} is missing") from None
        actual = sha256_hex(data)
        if _normalize_digest(recorded) != actual:
            raise ArtifactError(f"{namespace}/{model}/{version}: {name} has sha256 {actual}, metadata.json says {recorded}; refusing to load")
        return data

    # -- writing -------------------------------------------------------------

    def write_version(
        self,
        namespace: str,
        model: str,
        version: str,
        model_bytes: bytes,
        metadata: Mapping[str, Any],
        reference: Mapping[str, Any],
        extra_files: Mapping[str, bytes] | None = None,
    ) -> WriteResult:
        """Write a version atomically; an existing version is left as it is.

        ``metadata`` gets ``format`` and ``sha256`` filled in; ``extra_files``
        (e.g. the compiled ``model.onnx``) are written beside the model and
        hashed the same way (read them back with :meth:`read_artifact`).  Returns the
        version's path, whether this call created it and the metadata now on
        disk (the existing one when the version was already there).
        """
        final = self.version_dir(namespace, model, version)
        if (final / METADATA_FILE).is_file():
            return WriteResult(final, False, self.read_metadata(namespace, model, version))
        parent = final.parent
        parent.mkdir(parents=True, exist_ok=True)
        self._remove_stale_tmp(parent)
        meta = dict(metadata)
        meta["format"] = METADATA_FORMAT
        ref_bytes = (json.dumps(reference, sort_keys=True, allow_nan=False, separators=(",", ":")) + "\n").encode()
        extra = dict(extra_files or {})
        for name in extra:
            if name in (MODEL_FILE, REFERENCE_FILE, METADATA_FILE) or "/" in name:
                raise ValueError(f"extra file name {name!r} is reserved or not a plain file name")
            _check_component("file", name)
        meta["sha256"] = {MODEL_FILE: sha256_hex(model_bytes), REFERENCE_FILE: sha256_hex(ref_bytes)}
        meta["sha256"].update({name: sha256_hex(data) for name, data in extra.items()})
        meta_bytes = (json.dumps(meta, indent=2, allow_nan=False) + "\n").encode()
        tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{version}-", dir=parent))
        try:
            files = ((MODEL_FILE, model_bytes), *extra.items(), (REFERENCE_FILE, ref_bytes), (METADATA_FILE, meta_bytes))
            for name, data in files:
                with open(tmp / name, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
            os.chmod(tmp, 0o755)
            _fsync_dir(tmp)
            try:
                os.rename(tmp, final)
            except OSError:
                # Someone else completed the same version first (a retried pod).
                if (final / METADATA_FILE).is_file():
                    shutil.rmtree(tmp, ignore_errors=True)
                    return WriteResult(final, False, self.read_metadata(namespace, model, version))
                raise
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _fsync_dir(parent)
        return WriteResult(final, True, meta)

    @staticmethod
    def _remove_stale_tmp(parent: Path) -> None:
        """Delete temporary directories a crashed writer left behind long ago."""
        now = time.time()
        for entry in parent.iterdir():
            if entry.name.startswith(_TMP_PREFIX):
                try:
                    if now - entry.stat().st_mtime > _STALE_TMP_SECONDS:
                        shutil.rmtree(entry, ignore_errors=True)
                except OSError:
                    pass


def verify_digest(where: str, name: str, data: bytes, meta: Mapping[str, Any], expected_sha256: str | None = None) -> None:
    """Raise :class:`ArtifactError` unless ``data`` has the sha256 ``metadata.json`` records for ``name`` (and ``expected_sha256``)."""
    actual = sha256_hex(data)
    recorded = (meta.get("sha256") or {}).get(name)
    if not recorded:
        raise ArtifactError(f"{where}: metadata.json records no sha256 for {name}")
    if _normalize_digest(recorded) != actual:
        raise ArtifactError(f"{where}: {name} has sha256 {actual}, metadata.json says {recorded}; refusing to load")
    if expected_sha256 is not None and _normalize_digest(expected_sha256) != actual:
        raise ArtifactError(f"{where}: {name} has sha256 {actual}, expected {expected_sha256}; refusing to load")


def untrusted_types(data: bytes, modules: Sequence[str] = DEFAULT_TRUSTED_MODULES) -> tuple[list[str], list[str]]:
    """The types in a skops file that skops does not trust itself, split into
    those trusted here (the list, or an extra prefix in ``modules``) and the rest."""
    import skops.io as sio

    try:
        names = sio.get_untrusted_types(data=data)
    except Exception as exc:  # a corrupt or foreign file
        raise ArtifactError(f"not a readable skops file: {exc}") from None
    ok = [n for n in names if is_trusted_type(n, modules)]
    bad = [n for n in names if not is_trusted_type(n, modules)]
    return ok, bad


def load_skops_bytes(data: bytes, modules: Sequence[str] = DEFAULT_TRUSTED_MODULES) -> Any:
    """Load skops bytes when every type in them is trusted.

    ``modules`` are the extra module prefixes the operator allows (for a
    non-scikit-learn estimator); the rest is the explicit list.
    """
    import skops.io as sio

    ok, bad = untrusted_types(data, modules)
    if bad:
        extra = ", ".join(_prefix(m) for m in modules if m) or "none"
        raise ArtifactError(
            f"{MODEL_FILE} contains untrusted type(s) {', '.join(sorted(bad))}; a model may hold only the types "
            f"of the scikit-learn models this trainer builds (store/trusted_types.py) and types under the "
            f"operator's allowed modules (now: {extra}; scikit-learn, numpy, scipy and the standard library "
            f"are never trusted by prefix)"
        )
    try:
        return sio.loads(data, trusted=ok)
    except Exception as exc:
        raise ArtifactError(f"{MODEL_FILE} could not be loaded: {type(exc).__name__}: {exc}") from None
