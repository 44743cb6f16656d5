"""Stored artifacts: directories that are complete only when their manifest exists, in a local
directory or on S3 (:mod:`kfnlp.storage.manifest`, :mod:`kfnlp.storage.s3`).

The one door of the storage wing: callers import from here, hand every operation the reference
they were given, and never look at its scheme (:func:`store_for` does).
"""

from kfnlp.storage.local import private_temp_dir
from kfnlp.storage.manifest import (
    MANIFEST,
    ArtifactWriter,
    fingerprint,
    read_manifest,
    sha256_file,
    verify_checksums,
)
from kfnlp.storage.s3.store import S3Store
from kfnlp.storage.store import ArtifactStore
from kfnlp.storage.stores import (
    check_input,
    check_output,
    files_uri,
    local_input,
    open_artifact,
    read_any_manifest,
    shared_uri,
    store_for,
    write_artifact,
)

__all__ = [
    "MANIFEST",
    "ArtifactStore",
    "ArtifactWriter",
    "S3Store",
    "check_input",
    "check_output",
    "files_uri",
    "fingerprint",
    "local_input",
    "open_artifact",
    "private_temp_dir",
    "read_any_manifest",
    "read_manifest",
    "sha256_file",
    "shared_uri",
    "store_for",
    "verify_checksums",
    "write_artifact",
]
