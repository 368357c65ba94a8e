"""What an upload may choose: its collection and how it is split, within the settings' bounds."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kubemate.errors import ValidationFailed
from kubemate.inference.registry import max_input_tokens
from kubemate.text.split import SplitterSpec, Strategy, chunking_for
from kubemate_ingest.settings import IngestSettings


class UploadOptions(BaseModel):
    """The text fields of an upload form, and of a presigned upload's request."""

    model_config = ConfigDict(extra="ignore")

    collection: str | None = Field(None, min_length=1, max_length=64)
    strategy: Strategy | None = None
    chunk_size: int | None = None
    chunk_overlap: int | None = None


def validation_failed(exc: ValidationError, where: str = "body") -> ValidationFailed:
    errors = [
        {"loc": [where, *map(str, e["loc"])], "msg": e["msg"], "type": e["type"]}
        for e in exc.errors()
    ]
    detail = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors)[:2000]
    return ValidationFailed(detail, errors=errors)


def collection_of(settings: IngestSettings, options: UploadOptions) -> str:
    """The upload's collection; unknown ones are a 404 problem before anything is stored."""
    name = options.collection or settings.ingest.default_collection
    settings.collection(name)
    return name


def default_splitter(settings: IngestSettings, tenant_id: str, collection: str) -> SplitterSpec:
    """The tenant's splitter, else the settings' sized for the collection's embedder."""
    tenant_spec = settings.ingest.tenant_splitter.get(tenant_id)
    if tenant_spec is not None:
        return tenant_spec
    config = settings.collection(collection)
    sizes = chunking_for(config, settings.splitter, max_input_tokens(config.embedder))
    return SplitterSpec(
        strategy=settings.ingest.splitter_strategy,
        chunk_size=sizes.chunk_size,
        chunk_overlap=sizes.chunk_overlap,
    )


def splitter_of(settings: IngestSettings, tenant_id: str, options: UploadOptions) -> SplitterSpec:
    """The upload's choices over the tenant's defaults over the collection's.

    A ``chunk_size`` given alone could sit below the default overlap, or near it; the overlap
    is then at most an eighth of the size instead of refusing the upload."""
    base = default_splitter(settings, tenant_id, collection_of(settings, options))
    values = base.model_dump()
    chosen = options.model_dump(include={"strategy", "chunk_size", "chunk_overlap"})
    values.update({k: v for k, v in chosen.items() if v is not None})
    if options.chunk_size is not None and options.chunk_overlap is None:
        values["chunk_overlap"] = min(base.chunk_overlap, options.chunk_size // 8)
    try:
        return SplitterSpec.model_validate(values)
    except ValidationError as exc:
        raise validation_failed(exc) from None
