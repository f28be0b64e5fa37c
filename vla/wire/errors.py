"""One error taxonomy for every transport (docs/ARCHITECTURE.md, Wire), mapped per transport here."""
from __future__ import annotations

import enum
from typing import Any

from vla.errors import VLAError


class ErrorCode(str, enum.Enum):
    INVALID_ARGUMENT = "INVALID_ARGUMENT"      # the request is wrong: fix it, do not retry
    UNAUTHENTICATED = "UNAUTHENTICATED"        # missing or wrong token
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"  # queue full (back off) or message too big (not retryable)
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

# Retrying makes sense only for these codes, unless the error itself says otherwise (`retryable`
# on the wire): a message over the size limit is RESOURCE_EXHAUSTED, as gRPC names it, yet a retry
# of the same message can never succeed.
RETRYABLE = frozenset({ErrorCode.UNAVAILABLE, ErrorCode.RESOURCE_EXHAUSTED, ErrorCode.DEADLINE_EXCEEDED})

# `reason` of a message over a size limit (the request over the server's --max-message-bytes, a
# frame over a codec's limit): carried on every transport, so a client knows not to retry it.
TOO_LARGE = "MESSAGE_TOO_LARGE"
# gRPC trailing metadata that carries `reason` and `retryable` (the status itself has only code + details).
GRPC_REASON_KEY = "vla-error-reason"
GRPC_RETRYABLE_KEY = "vla-error-retryable"


class PolicyError(VLAError):
    """An error with a taxonomy code and a message safe to show a client (no traceback).

    `retryable` is the code's (RETRYABLE) unless the error says otherwise; `reason` (optional)
    names a more precise cause within the code, such as TOO_LARGE."""

    def __init__(self, code: ErrorCode | str, message: str, request_id: str = "", *,
                 retryable: bool | None = None, reason: str = ""):
        self.code = ErrorCode(code)
        self.message = message
        self.request_id = request_id
        self.reason = reason
        self._retryable = retryable
        super().__init__(f"{self.code.value}: {message}")

    def __reduce__(self):   # picklable (a decode in a worker process raises it)
        return (_rebuild, (self.code, self.message, self.request_id, self._retryable, self.reason))

    @property
    def retryable(self) -> bool:
        return self.code in RETRYABLE if self._retryable is None else self._retryable

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.code]

    def for_request(self, request_id: str) -> "PolicyError":
        """The same error (class, code, reason, retryable) for one request of a batch."""
        return _rebuild(self.code, self.message, request_id, self._retryable, self.reason)

    def grpc_status(self):
        """The grpc.StatusCode for this error (imports grpc lazily)."""
        import grpc

        return getattr(grpc.StatusCode, self.code.value)

    def to_dict(self) -> dict:
        """The wire form (HTTP error body, websocket text frame): `code`, `message`, `retryable`,
        and `request_id` / `reason` when set."""
        out = {"code": self.code.value, "message": self.message, "retryable": self.retryable}
        if self.request_id:
            out["request_id"] = self.request_id
        if self.reason:
            out["reason"] = self.reason
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "PolicyError":
        code = data.get("code", ErrorCode.INTERNAL.value)
        if code not in ErrorCode.__members__:
            code = ErrorCode.INTERNAL.value
        retryable = data.get("retryable")
        return _rebuild(code, str(data.get("message", "")), str(data.get("request_id", "")),
                        retryable if isinstance(retryable, bool) else None, str(data.get("reason") or ""))

    def grpc_trailers(self) -> tuple[tuple[str, str], ...]:
        """The gRPC trailing metadata that carries `reason` and an explicit `retryable`."""
        out = []
        if self.reason:
            out.append((GRPC_REASON_KEY, self.reason))
        if self._retryable is not None:
            out.append((GRPC_RETRYABLE_KEY, "1" if self._retryable else "0"))
        return tuple(out)

    @classmethod
    def from_grpc(cls, code: str, details: str, trailers: Any, request_id: str = "") -> "PolicyError":
        """A client's error from a gRPC status and its trailing metadata (see `grpc_trailers`)."""
        md = {k: v for k, v in (trailers or ())}
        reason = str(md.get(GRPC_REASON_KEY, ""))
        if not reason and code == ErrorCode.RESOURCE_EXHAUSTED.value and "larger than max" in details:
            # grpc's own refusal of a message over its receive or send limit (the server refuses one
            # over twice --max-message-bytes before our handler sees it): "Received message larger
            # than max (N vs. M)" / "Sent message larger than max".
            reason = TOO_LARGE
            details += " (a policy_server takes up to twice its --max-message-bytes from gRPC; the flag raises it)"
        flag = md.get(GRPC_RETRYABLE_KEY)
        retryable = None if flag is None else flag == "1"
        return _rebuild(code, details, request_id, retryable, reason)


class RequestTooLarge(PolicyError):
    """RESOURCE_EXHAUSTED for a message over a size limit (reason TOO_LARGE): never retryable,
    since the same message can never fit; HTTP answers it with 413 (Content Too Large) rather than
    the 429 of a full queue."""

    def __init__(self, message: str, request_id: str = "", **_: Any):
        super().__init__(ErrorCode.RESOURCE_EXHAUSTED, message, request_id, retryable=False, reason=TOO_LARGE)

    @property
    def http_status(self) -> int:
        return 413


def _rebuild(code: ErrorCode | str, message: str, request_id: str, retryable: bool | None,
             reason: str) -> PolicyError:
    """The error class a wire form or a pickle stands for (RequestTooLarge for TOO_LARGE)."""
    if reason == TOO_LARGE and ErrorCode(code) is ErrorCode.RESOURCE_EXHAUSTED:
        return RequestTooLarge(message, request_id)
    return PolicyError(code, message, request_id, retryable=retryable, reason=reason)
