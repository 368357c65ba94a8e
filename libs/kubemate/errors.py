"""The project's one error tree.

Two branches, as callers need to tell them apart: :class:`ClientError` (the caller's mistake, a
4xx) and :class:`ServiceError` (a runtime failure of ours or of a backend, a 5xx). Each class has a
stable ``type`` slug that becomes the RFC 9457 ``type`` URI; clients may switch on it. Adapters
wrap vendor exceptions into these (``raise BackendUnavailable(...) from exc``) so business code
never imports a vendor's exception.
"""

from __future__ import annotations

from typing import Any, ClassVar

PROBLEM_TYPE_BASE = "https://kubemate.dev/problems/"


class KubemateError(Exception):
    type_slug: ClassVar[str] = "internal-error"
    title: ClassVar[str] = "Internal error"
    status: ClassVar[int] = 500

    def __init__(self, detail: str = "", **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra = extra

    @property
    def type_uri(self) -> str:
        return PROBLEM_TYPE_BASE + self.type_slug


# ---- caller mistakes (4xx) -------------------------------------------------------------------


class ClientError(KubemateError):
    type_slug = "bad-request"
    title = "Bad request"
    status = 400


class ValidationFailed(ClientError):
    type_slug = "validation-error"
    title = "Request validation failed"
    status = 422


class Unauthenticated(ClientError):
    type_slug = "unauthenticated"
    title = "Authentication required"
    status = 401


class Forbidden(ClientError):
    type_slug = "forbidden"
    title = "Not allowed"
    status = 403


class OperatorRequired(Forbidden):
    """The action changes what every tenant shares (models, runtimes, deployments, global
    settings): a tenant's admin may not, only the platform operator."""

    type_slug = "operator-required"
    title = "Platform operator only"


class NotFound(ClientError):
    type_slug = "not-found"
    title = "Not found"
    status = 404


class DocumentNotFound(NotFound):
    type_slug = "document-not-found"
    title = "Document not found"


class TaskNotFound(NotFound):
    type_slug = "task-not-found"
    title = "Task not found"


class UnknownCollection(NotFound):
    type_slug = "unknown-collection"
    title = "Unknown collection"


class ReindexNotFound(NotFound):
    type_slug = "reindex-not-found"
    title = "Re-index not found"


class UnknownModel(NotFound):
    type_slug = "unknown-model"
    title = "Unknown model"


class PayloadTooLarge(ClientError):
    type_slug = "payload-too-large"
    title = "Payload too large"
    status = 413


class UnsupportedMediaType(ClientError):
    type_slug = "unsupported-media-type"
    title = "Unsupported media type"
    status = 415


class EmptyDocument(ClientError):
    type_slug = "empty-document"
    title = "Empty document"
    status = 422


class RateLimited(ClientError):
    type_slug = "rate-limited"
    title = "Too many requests"
    status = 429


# ---- runtime failures (5xx) --------------------------------------------------------------------


class ServiceError(KubemateError):
    type_slug = "service-error"
    title = "Service error"
    status = 500


class BackendUnavailable(ServiceError):
    """A backend (Redis, Milvus, object store, inference runtime) did not answer. Retryable."""

    type_slug = "backend-unavailable"
    title = "A backend service is unavailable"
    status = 503


class InferenceError(ServiceError):
    """The inference runtime answered with an error that retrying will not fix."""

    type_slug = "inference-error"
    title = "Inference failed"
    status = 502


class RetryableInferenceError(BackendUnavailable):
    """429, 5xx or a timeout from an inference runtime; ``retry_after`` in seconds if it said."""

    type_slug = "inference-unavailable"
    title = "Inference runtime unavailable"

    def __init__(self, detail: str = "", retry_after: float | None = None, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.retry_after = retry_after


class DocumentProcessingError(ServiceError):
    """A document cannot be processed (corrupt, unparseable). Not retryable for that document."""

    type_slug = "document-processing-failed"
    title = "Document processing failed"
    status = 422


# ---- model management (model_manager) ----------------------------------------------------------


class Conflict(ClientError):
    type_slug = "conflict"
    title = "Conflict"
    status = 409


class ReindexConflict(Conflict):
    """Another re-index of the collection is unfinished, or the target is already active."""

    type_slug = "reindex-conflict"
    title = "Re-index conflict"


class ModelInUse(Conflict):
    """The model serves chat, embeddings or rerank (globally or for a tenant): reassign first."""

    type_slug = "model-in-use"
    title = "Model in use"


class UnknownRuntime(NotFound):
    type_slug = "unknown-runtime"
    title = "Unknown model runtime"


class DeploymentNotFound(NotFound):
    type_slug = "deployment-not-found"
    title = "Deployment not found"


class InvalidModelFile(UnsupportedMediaType):
    """The upload is not a model format we take (its magic bytes say so)."""

    type_slug = "invalid-model-file"
    title = "Not a GGUF or ONNX model file"


class CorruptModelFile(ValidationFailed):
    """The right magic bytes, but a header that does not parse or a truncated body."""

    type_slug = "corrupt-model-file"
    title = "Corrupt model file"


class ChecksumMismatch(ValidationFailed):
    type_slug = "checksum-mismatch"
    title = "Checksum mismatch"


# ---- ingestion (ingest service) ----------------------------------------------------------------


class DeadLetterNotFound(NotFound):
    type_slug = "dead-letter-not-found"
    title = "Dead letter not found"


class UploadNotFound(NotFound):
    """No such presigned upload for this tenant (never created, completed, or expired)."""

    type_slug = "upload-not-found"
    title = "Upload not found"


class UploadIncomplete(Conflict):
    """The presigned upload was completed before its object was stored."""

    type_slug = "upload-incomplete"
    title = "Upload incomplete"


class PresignedUploadsUnsupported(ClientError):
    """The configured object store cannot issue presigned URLs (the filesystem store)."""

    type_slug = "presigned-uploads-unsupported"
    title = "Presigned uploads are not supported"
    status = 400


class PdfRefused(ClientError):
    """An uploaded PDF refused for what it is, before anything is stored
    (the ingest service's PDF inspection)."""

    type_slug = "pdf-refused"
    title = "PDF refused"
    status = 422


class PdfActiveContent(PdfRefused):
    """JavaScript or a Launch action (open action, /AA triggers, annotations, form fields,
    bookmarks, the document-level JavaScript name tree)."""

    type_slug = "pdf-active-content"
    title = "PDF with active content"


class PdfTooManyPages(PdfRefused):
    type_slug = "pdf-too-many-pages"
    title = "PDF has too many pages"


class PdfEncrypted(PdfRefused):
    type_slug = "pdf-encrypted"
    title = "Encrypted PDF"


class PdfUninspectable(PdfRefused):
    """The structure could not be checked within the inspection's bounds."""

    type_slug = "pdf-uninspectable"
    title = "PDF cannot be checked"


# ---- gateway: credentials and limits (gateway service) -----------------------------------------


class ApiKeyNotFound(NotFound):
    type_slug = "api-key-not-found"
    title = "API key not found"


class RateLimitExceeded(RateLimited):
    """Over a request-rate or concurrency limit. ``headers`` (Retry-After, RateLimit-*) go on
    the 429 response so that clients can back off without guessing."""

    def __init__(
        self,
        detail: str = "",
        *,
        retry_after: float,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail, **extra)
        self.retry_after = retry_after
        self.headers = dict(headers or {})


# ---- retrieval and answers (retrieval service) ------------------------------------------------


class ConversationNotFound(NotFound):
    """Unknown, expired, or another tenant's conversation id (all look the same to a caller)."""

    type_slug = "conversation-not-found"
    title = "Conversation not found"


class RerankerUnusable(ServiceError):
    """The configured reranker model can never score as it is: an operator must change the
    settings or the model registry; retrying does not help. Deliberately not a
    :class:`BackendUnavailable`, whose retries and fallbacks are for passing failures."""

    type_slug = "reranker-unusable"
    title = "Reranker model unusable"
    status = 503


class RerankerModelMissing(RerankerUnusable):
    """The reranker names a registry model that is not in the model registry."""

    type_slug = "reranker-model-missing"
    title = "Reranker model missing"


class NotACrossEncoder(RerankerUnusable):
    """The reranker's model files are not a cross-encoder (no sequence-classification head
    with a single relevance output)."""

    type_slug = "not-a-cross-encoder"
    title = "Model is not a cross-encoder"


class ModelUnavailable(BackendUnavailable):
    """The model that answers is not loaded or its runtime is down; retry after ``retry_after``."""

    type_slug = "model-unavailable"
    title = "Model unavailable"

    def __init__(self, detail: str = "", retry_after: float | None = None, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.retry_after = retry_after
