"""Which S3 failures are worth retrying, and a description of each without secrets."""

from __future__ import annotations

import socket
from collections.abc import Iterator

from kfnlp.storage.s3.uri import S3Location

# Error codes S3 and S3-compatible servers answer for load, throttling and server trouble.
TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "ServiceUnavailable",
        "PriorRequestNotComplete",
        "XMinioServerNotInitialized",
    }
)
_MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})


def _exception_chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    stack = [exc]
    while stack:
        current = stack.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        stack.extend([getattr(current, "last_exception", None), current.__cause__, current.__context__])


def _error_code(exc: BaseException) -> tuple[str, int, str]:
    response = getattr(exc, "response", None) or {}
    error = response.get("Error", {})
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return str(error.get("Code", "")), int(status or 0), str(error.get("Message", ""))


def classify(exc: BaseException, loc: S3Location, endpoint: str) -> tuple[str | None, str]:
    """("transient" | "permanent" | "foreign" | None, a description without secrets); None: not an S3
    error; "foreign": an error of the caller's (e.g. its progress callback) that botocore wrapped."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        EndpointConnectionError,
        HTTPClientError,
        IncompleteReadError,
        NoCredentialsError,
        PartialCredentialsError,
        ResponseStreamingError,
    )

    for current in _exception_chain(exc):
        if isinstance(current, ClientError):
            code, status, message = _error_code(current)
            return _describe_client_error(code, status, message, loc)
        if isinstance(current, EndpointConnectionError):
            cause = current.kwargs.get("error")
            if isinstance(cause, socket.gaierror) or "Name or service not known" in str(cause):
                return "permanent", f"cannot resolve the S3 endpoint's host ({endpoint}); check AWS_ENDPOINT_URL_S3"
            return "transient", f"cannot connect to the S3 endpoint {endpoint} ({_short(cause)})"
        if type(current) is HTTPClientError:  # botocore wraps whatever failed while sending, e.g. a callback's error
            cause = current.kwargs.get("error")
            if cause is not None and not _network_error(cause):
                return "foreign", ""
            return "transient", f"the connection to {endpoint} failed ({_short(cause)})"
        if isinstance(current, (HTTPClientError, IncompleteReadError, ResponseStreamingError)):
            return "transient", f"the connection to {endpoint} failed ({type(current).__name__})"
        if isinstance(current, (NoCredentialsError, PartialCredentialsError)):
            return "permanent", (
                "no usable S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
            )
        if isinstance(current, BotoCoreError):
            return "permanent", str(current)
        if isinstance(current, (ConnectionError, socket.timeout, TimeoutError)):
            return "transient", f"the connection to {endpoint} failed ({type(current).__name__})"
    return None, ""


def _network_error(exc: BaseException) -> bool:
    from urllib3.exceptions import HTTPError

    return isinstance(exc, (OSError, HTTPError))


def foreign_cause(exc: BaseException) -> BaseException:
    """What botocore wrapped in an HTTPClientError that is not a network failure."""
    from botocore.exceptions import HTTPClientError

    for current in _exception_chain(exc):
        if type(current) is HTTPClientError and current.kwargs.get("error") is not None:
            return current.kwargs["error"]
    return exc


def _short(exc: BaseException | None) -> str:
    if exc is None:
        return "no answer"
    text = str(exc)
    if "Connection refused" in text:
        return "connection refused"
    if "reset" in text.lower():
        return "connection reset"
    return type(exc).__name__


def _describe_client_error(code: str, status: int, message: str, loc: S3Location) -> tuple[str, str]:
    if code in TRANSIENT_CODES or status >= 500 or status == 429:
        return "transient", f"the server answered {code or status} ({message or 'no message'})"
    if code == "NoSuchBucket":
        return "permanent", f"bucket {loc.bucket!r} does not exist (NoSuchBucket)"
    if code == "InvalidAccessKeyId":
        return "permanent", "the server does not know the access key (InvalidAccessKeyId); check AWS_ACCESS_KEY_ID"
    if code == "SignatureDoesNotMatch":
        return "permanent", (
            "the secret key does not match the access key (SignatureDoesNotMatch); check AWS_SECRET_ACCESS_KEY"
        )
    if code in ("ExpiredToken", "InvalidToken", "TokenRefreshRequired"):
        return "permanent", f"the session token is invalid or expired ({code}); refresh AWS_SESSION_TOKEN"
    if code in ("AccessDenied", "AllAccessDisabled", "403") or status == 403:
        detail = f": {message}" if message and message != "Forbidden" else ""
        return "permanent", f"access denied ({code}){detail}; check the bucket policy and the credentials' permissions"
    if code in ("PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException"):
        return "permanent", f"the bucket is in another region ({code}); set AWS_REGION"
    if code == "RequestTimeTooSkewed":
        return "permanent", "this machine's clock is too far from the server's (RequestTimeTooSkewed)"
    return "permanent", f"{code or status}: {message or 'no message'}"


def is_missing(exc: BaseException) -> bool:
    from botocore.exceptions import ClientError

    return any(isinstance(e, ClientError) and _error_code(e)[0] in _MISSING_CODES for e in _exception_chain(exc))


def checksum_refused(exc: BaseException) -> bool:
    from botocore.exceptions import ClientError

    for e in _exception_chain(exc):
        if isinstance(e, ClientError):
            code, _, message = _error_code(e)
            if code in ("NotImplemented", "InvalidArgument", "InvalidRequest") and "checksum" in message.lower():
                return True
    return False
