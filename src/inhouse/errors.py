"""The one exception hierarchy of inhouse.

    InhouseError                      anything inhouse raises on purpose
    ├── ConfigurationError            settings or data directory unusable (start-up)
    ├── InvalidRequestError           400: a field is missing, malformed or out of range
    │   └── ContextLengthExceededError 413: the prompt does not fit the model's context
    ├── AuthenticationError           401: missing, unknown or revoked credential
    ├── PermissionDeniedError         403: authenticated but not allowed
    ├── NotFoundError                 404: unknown model, tenant, key ...
    ├── ConflictError                 409: the name is taken
    ├── QuotaExceededError            409: a tenant quota (model_count ...) forbids the change
    ├── PayloadTooLargeError          413: body over the configured limit
    ├── RateLimitError                429: a limit or a full queue; carries retry_after
    ├── UpstreamRejectedError         4xx: a remote engine refused the request (status relayed)
    ├── UpstreamError                 502: a remote engine failed or answered badly
    ├── EngineUnavailableError        503: the model is not loaded (yet)
    └── QuotaStoreUnavailableError    503: Redis unreachable and admission fails closed

Each error carries what the API needs to answer in the OpenAI error format; the
mapping to HTTP lives in ``inhouse.protocol.errors`` and nowhere else.
"""

from __future__ import annotations


class InhouseError(Exception):
    status_code: int = 500
    error_type: str = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code


class ConfigurationError(InhouseError):
    error_type = "configuration_error"


class InvalidRequestError(InhouseError):
    status_code = 400
    error_type = "invalid_request_error"


class ContextLengthExceededError(InvalidRequestError):
    status_code = 413
    code = "context_length_exceeded"


class AuthenticationError(InhouseError):
    status_code = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class PermissionDeniedError(InhouseError):
    status_code = 403
    error_type = "permission_error"


class NotFoundError(InhouseError):
    status_code = 404
    error_type = "invalid_request_error"
    code = "not_found"


class ConflictError(InhouseError):
    status_code = 409
    error_type = "invalid_request_error"
    code = "conflict"


class QuotaExceededError(InhouseError):
    status_code = 409
    error_type = "invalid_request_error"
    code = "quota_exceeded"


class PayloadTooLargeError(InhouseError):
    status_code = 413
    error_type = "invalid_request_error"
    code = "payload_too_large"


class RateLimitError(InhouseError):
    status_code = 429
    error_type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after_seconds: float, code: str | None = None):
        super().__init__(message, code=code)
        self.retry_after_seconds = retry_after_seconds


class UpstreamRejectedError(InhouseError):
    error_type = "invalid_request_error"

    def __init__(self, status_code: int, message: str, code: str | None) -> None:
        super().__init__(message, code=code or "upstream_rejected")
        self.status_code = status_code


class UpstreamError(InhouseError):
    status_code = 502
    error_type = "upstream_error"
    code = "upstream_error"


class EngineUnavailableError(InhouseError):
    status_code = 503
    error_type = "server_error"
    code = "model_not_ready"


class QuotaStoreUnavailableError(InhouseError):
    status_code = 503
    error_type = "server_error"
    code = "quota_store_unavailable"
