"""One error taxonomy for every transport (docs/ARCHITECTURE.md, Wire), mapped per transport here."""
from __future__ import annotations

import enum

from vla.errors import VLAError


class ErrorCode(str, enum.Enum):
    INVALID_ARGUMENT = "INVALID_ARGUMENT"      # the request is wrong: fix it, do not retry
    UNAUTHENTICATED = "UNAUTHENTICATED"        # missing or wrong token
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"  # queue full or frame too big: back off
    UNAVAILABLE = "UNAVAILABLE"                # not ready, draining or unreachable: retry later
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"    # the request's deadline passed before it ran
    INTERNAL = "INTERNAL"                      # a server bug; the details are in the server log


HTTP_STATUS = {
    ErrorCode.INVALID_ARGUMENT: 400,
    ErrorCode.UNAUTHENTICATED: 401,
    ErrorCode.RESOURCE_EXHAUSTED: 429,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.DEADLINE_EXCEEDED: 504,
    ErrorCode.INTERNAL: 500,
}

# Retrying makes sense only for these.
RETRYABLE = frozenset({ErrorCode.UNAVAILABLE, ErrorCode.RESOURCE_EXHAUSTED, ErrorCode.DEADLINE_EXCEEDED})


class PolicyError(VLAError):
    """An error with a taxonomy code and a message safe to show a client (no traceback)."""

    def __init__(self, code: ErrorCode | str, message: str, request_id: str = ""):
        self.code = ErrorCode(code)
        self.message = message
        self.request_id = request_id
        super().__init__(f"{self.code.value}: {message}")

    def __reduce__(self):   # picklable (a decode in a worker process raises it)
        return (PolicyError, (self.code, self.message, self.request_id))

    @property
    def retryable(self) -> bool:
        return self.code in RETRYABLE

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.code]

    def grpc_status(self):
        """The grpc.StatusCode for this error (imports grpc lazily)."""
        import grpc

        return getattr(grpc.StatusCode, self.code.value)

    def to_dict(self) -> dict:
        out = {"code": self.code.value, "message": self.message}
        if self.request_id:
            out["request_id"] = self.request_id
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "PolicyError":
        code = data.get("code", ErrorCode.INTERNAL.value)
        if code not in ErrorCode.__members__:
            code = ErrorCode.INTERNAL.value
        return cls(code, str(data.get("message", "")), str(data.get("request_id", "")))


class RequestTooLarge(PolicyError):
    """RESOURCE_EXHAUSTED for a request over the server's size limit; HTTP answers it with 413
    (Content Too Large) rather than the 429 of a full queue."""

    def __init__(self, message: str, request_id: str = ""):
        super().__init__(ErrorCode.RESOURCE_EXHAUSTED, message, request_id)

    @property
    def http_status(self) -> int:
        return 413
