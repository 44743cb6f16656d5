"""Artifacts on S3-compatible storage (AWS S3, MinIO, Ceph RGW, ...), complete only with their manifest.

An artifact URI ``s3://bucket/prefix`` holds the same directory artifact as a local one
(see :mod:`kfnlp.storage.manifest`: files plus ``kfnlp-manifest.json`` with sizes and SHA-256), laid
out so that a write never damages the previous complete version::

    prefix/kfnlp-manifest.json            the pointer: the current version's manifest plus
                                          "s3_version"; an artifact exists iff this exists
    prefix/.v/<version>/<file>...         the files of one version
    prefix/.v/<version>/kfnlp-manifest.json   that version's own manifest (exact local bytes)

``<version>`` is ``<UTC time>-<random>``, fresh for every upload. An upload
(:func:`~kfnlp.storage.s3.upload.upload_artifact`) writes every file of the new version, then the version's
manifest, then the pointer (one PUT, atomic and strongly consistent on S3), and only then
deletes the previous version. So a crash, a lost connection or a refused request at any
point leaves either the old complete artifact (before the pointer PUT) or the new complete
one (after it) readable at the URI; what a crash leaves behind is an unreferenced
``.v/<version>/`` that readers never look at and that later uploads prune once it is older
than ``ORPHAN_GRACE_SECONDS`` (a grace period, so that concurrent writers do not delete each
other's in-progress versions; concurrent writers to one URI are last-writer-wins).
A reader (:func:`~kfnlp.storage.s3.download.download_artifact`) reads the pointer, downloads into a hidden staging
directory, checks every size and SHA-256 against the manifest, writes the manifest last
and renames the directory into place; if the version it is reading is replaced and
deleted meanwhile, it starts again from the new pointer. An artifact whose pointer has no
``s3_version`` (e.g. a local artifact copied with ``aws s3 sync``) is read from the prefix
itself.

Configuration is the standard AWS environment: ``AWS_ENDPOINT_URL_S3`` (or
``AWS_ENDPOINT_URL``) for a non-AWS server, ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN`` or ``AWS_PROFILE`` (and every other
credential source boto3 knows), ``AWS_REGION`` / ``AWS_DEFAULT_REGION`` (``us-east-1`` when
none is set). kfnlp's own knobs, all optional (see :class:`~kfnlp.storage.s3.settings.S3Settings`):
``KFNLP_S3_ADDRESSING_STYLE`` (``path`` | ``virtual`` | ``auto``; ``path`` by default when a
custom endpoint is set, as MinIO-like servers need), ``KFNLP_S3_CHECKSUM`` (the per-request
transfer checksum: ``CRC32`` by default, as boto3; ``SHA256`` | ``CRC32C`` | ``CRC64NVME`` | ``SHA1``,
or ``none`` for servers without flexible checksums; end-to-end integrity is the manifest's SHA-256
of every file, checked on every download whatever this is), ``KFNLP_S3_MULTIPART_THRESHOLD`` / ``KFNLP_S3_MULTIPART_CHUNKSIZE``
(bytes, or with a KiB/MiB/GiB suffix), ``KFNLP_S3_MAX_CONCURRENCY``,
``KFNLP_S3_MAX_ATTEMPTS`` and ``KFNLP_S3_RETRY_MODE`` (botocore's per-request retries),
``KFNLP_S3_RETRY_SECONDS`` (how long an outage a transfer rides out).

Errors: transient ones (connection refused or reset, timeouts, 5xx, throttling such as
SlowDown) are retried by botocore per request and then by kfnlp around each whole file
with exponential backoff, until ``KFNLP_S3_RETRY_SECONDS`` have passed since the first
failure; then a :class:`~kfnlp.errors.StorageError` names the URI and the cause. Permanent
ones (no such bucket, access denied, unknown access key, wrong secret, an endpoint that is
malformed or whose host does not resolve) fail at once with the same kind of message.
Messages and log lines never contain the secret key or session token.

Permissions needed: s3:GetObject, s3:PutObject and s3:ListBucket to write;
s3:DeleteObject (and s3:AbortMultipartUpload) to clean up old versions; s3:GetObject
to read.

Modules: ``uri`` (``s3://bucket/key``), ``settings`` (the environment's knobs, cached clients),
``errors`` (transient or permanent), ``transport`` (one operation's retried requests),
``artifacts`` (the versioned layout; reading and deleting whole artifacts), ``upload``,
``download``, ``objects`` (plain input objects) and ``store`` (:class:`~kfnlp.storage.s3.store.S3Store` for
:func:`kfnlp.storage.store_for`). Callers outside the storage wing go through :mod:`kfnlp.storage`.
"""
