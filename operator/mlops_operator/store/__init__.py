"""The model artifact store: versions of fitted pipelines with their metadata."""

from .filesystem import (
    DEFAULT_TRUSTED_MODULES,
    METADATA_FILE,
    METADATA_FORMAT,
    MODEL_FILE,
    REFERENCE_FILE,
    ArtifactError,
    ModelStore,
    VersionNotFound,
    WriteResult,
    is_trusted_type,
    load_skops_bytes,
    sha256_hex,
)
from .trusted_types import TRUSTED_TYPES

__all__ = [
    "DEFAULT_TRUSTED_MODULES",
    "METADATA_FILE",
    "METADATA_FORMAT",
    "MODEL_FILE",
    "REFERENCE_FILE",
    "TRUSTED_TYPES",
    "ArtifactError",
    "ModelStore",
    "VersionNotFound",
    "WriteResult",
    "is_trusted_type",
    "load_skops_bytes",
    "sha256_hex",
]
