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
from .location import StoreURI, open_store, parse_store_uri
from .s3 import S3ModelStore
from .s3client import StoreError
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
    "S3ModelStore",
    "StoreError",
    "StoreURI",
    "VersionNotFound",
    "WriteResult",
    "is_trusted_type",
    "load_skops_bytes",
    "open_store",
    "parse_store_uri",
    "sha256_hex",
]
