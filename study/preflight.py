"""Before anything runs: can the study write where it is told and read what it is given?

Every command that writes (``dejavu run``, ``report pull``, ``data synth``) checks its output
root first, and every command checks its inputs, so a mistake ends in one ``error:`` line naming
the URI and the cause, with nothing written:

- an object store's bucket (S3 bucket, GCS bucket, Azure container) must exist: the product never
  creates one (s3fs's ``makedirs`` would, in the account's default region and with its default
  policies, and the study's outputs include pictures of training records);
- the output root must take a write: on an object store a small probe object is written and
  removed; a local directory (or the nearest existing one above it) must be writable;
- denied access, missing or expired credentials and an endpoint that does not answer each get
  their own line; the probe uses short timeouts and few retries, so an unreachable endpoint
  answers in seconds, not after the client's full retry budget.
"""
from __future__ import annotations

import os
import posixpath
import uuid
from typing import Mapping

from study import storage
from study.errors import StudyError, causes

PROBE = ".dejavu-probe-"  # hidden (dot) name: listings and Arrow's discovery skip it
# Errors of the object-store clients (botocore/aiobotocore, aiohttp, google-auth), by class name so
# that this module imports none of them.
CREDENTIAL_ERRORS = ("NoCredentialsError", "PartialCredentialsError", "DefaultCredentialsError",
                     "CredentialRetrievalError", "RefreshError", "InvalidAccessKeyId", "ExpiredToken",
                     "ExpiredTokenException", "SignatureDoesNotMatch", "TokenRetrievalError")
UNREACHABLE_ERRORS = ("EndpointConnectionError", "ConnectTimeoutError", "ConnectionClosedError",
                      "ReadTimeoutError", "ClientConnectorError", "ServerDisconnectedError",
                      "ClientOSError", "ServerTimeoutError")
QUICK_S3 = {"config_kwargs": {"connect_timeout": 5, "read_timeout": 20, "retries": {"max_attempts": 2}},
            "skip_instance_cache": True}


def bucket_of(uri: str) -> str:
    """The bucket (or container) of an object-store URI."""
    return uri.split("://", 1)[1].split("/", 1)[0]


def _quick_fs(uri: str):
    """The URI's filesystem with short timeouts (S3), and the path in it."""
    import fsspec

    protocol = uri.split("://", 1)[0]
    options = QUICK_S3 if protocol in ("s3", "s3a") else {}
    try:
        return fsspec.core.url_to_fs(uri, **options)
    except (ValueError, ImportError) as exc:  # an unknown protocol, a missing fsspec backend
        raise StudyError(f"cannot open {uri}: {exc}") from None


def _endpoint(uri: str) -> str:
    if uri.startswith(("s3://", "s3a://")):
        return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or "the AWS S3 endpoint"
    return f"the {uri.split('://', 1)[0]}:// endpoint"


def store_error(uri: str | None, exc: BaseException, doing: str) -> StudyError | None:
    """One-line error for a storage failure at ``uri`` (None: somewhere in object storage) while
    ``doing`` something, or None when the failure is not one a user can fix."""
    where = uri or "object storage"
    for err in causes(exc, context=True):
        name = type(err).__name__
        text = str(err).splitlines()[0] if str(err) else name
        if name in CREDENTIAL_ERRORS:
            return StudyError(f"{where}: no credentials for object storage, or not valid ones ({name}: {text}); "
                              "give them the usual way: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ~/.aws, an "
                              "instance profile (gs://: GOOGLE_APPLICATION_CREDENTIALS or a service account)")
        if name in UNREACHABLE_ERRORS:
            return StudyError(f"{where}: cannot reach {_endpoint(uri or 's3://')} while {doing} ({name}: {text}); "
                              "check the network, the endpoint (AWS_ENDPOINT_URL) and the region")
        if isinstance(err, PermissionError) or "AccessDenied" in text or "Forbidden" in text:
            return StudyError(f"{where}: access denied while {doing} ({text}); check the credentials' "
                              "permissions and the bucket policy")
    return None


def _missing_bucket(uri: str) -> StudyError:
    bucket, scheme = bucket_of(uri), uri.split("://", 1)[0]
    how = {"s3": f"aws s3 mb s3://{bucket}", "s3a": f"aws s3 mb s3://{bucket}", "gs": f"gcloud storage buckets "
           f"create gs://{bucket}", "gcs": f"gcloud storage buckets create gs://{bucket}"}.get(scheme)
    hint = f" (for example: {how})" if how else ""
    return StudyError(f"{uri}: the bucket '{bucket}' does not exist; the product never creates one: create it "
                      f"yourself{hint} or correct the name. Nothing was written")


def _check_local_output(uri: str) -> None:
    """The directory, or the nearest one above it that exists, takes new files (nothing is made)."""
    path = storage.absolute(uri)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    if not os.path.isdir(path):
        raise StudyError(f"cannot write to the output location {uri}: {path} is a file, not a directory")
    if not os.access(path, os.W_OK | os.X_OK):
        raise StudyError(f"cannot write to the output location {uri}: permission denied on {path}")


def check_output(uri: str) -> None:
    """The output root can be written: for an object store its bucket exists (never created) and a
    probe object is written and removed; a local directory (or the nearest one above it) must take
    new files."""
    if storage.is_local(uri):
        _check_local_output(uri)
        return
    fs, path = _quick_fs(uri)
    try:
        # A write into a bucket that is not there fails (NoSuchBucket): nothing creates it.
        probe = posixpath.join(path.rstrip("/"), PROBE + uuid.uuid4().hex[:12])
        fs.pipe_file(probe, b"")
        fs.rm_file(probe)
    except FileNotFoundError:
        raise _missing_bucket(uri) from None
    except Exception as exc:
        found = store_error(uri, exc, "checking the output location")
        if found is None:
            raise
        raise found from None


def study_inputs(cfg) -> dict[str, str | None]:
    """The input locations a study config names, by config key (None where not set)."""
    d = cfg.data
    return {"data.path": d.path if d.source != "synthetic" else None, "data.objects": d.objects,
            "data.coco.instances": d.coco.instances if d.source == "coco" else None,
            "data.coco.captions": d.coco.captions if d.source == "coco" else None,
            "data.voc.annotations": d.voc.annotations if d.source == "voc" else None,
            "train.checkpoint": cfg.train.checkpoint}


def check_study(cfg) -> None:
    """A study's output root and inputs, before its first stage."""
    check_output(cfg.output)
    check_inputs(study_inputs(cfg))


def check_inputs(inputs: Mapping[str, str | None], local: bool = True) -> None:
    """Every named input (config key -> URI; None: not set) exists and its store answers; local
    paths only with ``local`` (commands whose own message for a missing local path says more)."""
    for key, uri in inputs.items():
        if not uri or (storage.is_local(uri) and not local):
            continue
        if storage.is_local(uri):
            if not storage.exists(uri):
                raise StudyError(f"{key}: {uri} does not exist")
            continue
        try:
            fs, path = _quick_fs(uri)
        except StudyError as exc:
            raise StudyError(f"{key}: {exc}") from None
        try:
            if not fs.exists(path):
                there = fs.exists(bucket_of(uri))
                raise StudyError(f"{key}: {uri} does not exist" + ("" if there else
                                 f" (no bucket '{bucket_of(uri)}': check the name)"))
        except StudyError:
            raise
        except Exception as exc:
            found = store_error(uri, exc, f"reading {key}")
            if found is None:
                raise
            raise StudyError(f"{key}: {found}") from None
