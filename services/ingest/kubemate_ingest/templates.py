"""The knowledge collections a tenant can use and their index templates, with what each
template would cost at the collection's expected size, for the console's template picker.

A collection's template is deployment configuration
(``KUBEMATE_COLLECTIONS__<name>__INDEX_TEMPLATE``), and a tenant's admin may choose another for
the tenant (``PUT /v1/collections/{name}/template``: a re-index into a vector collection of that
template, :func:`kubemate.collections.vector_collection`). ``template`` here is the one serving
the tenant now.
"""

from __future__ import annotations

from dataclasses import dataclass

from kubemate.collections import active_vector_collection, template_of
from kubemate.metadata.store import MetadataStore
from kubemate.settings import CollectionConfig, IndexTemplate
from kubemate.vectorstore.index import (
    INDEX_TEMPLATES,
    IndexCost,
    IndexSpec,
    estimate_cost,
    resolve_index,
)
from kubemate_ingest.settings import IngestSettings

# The dimension costs are estimated with when the embedder's is learned from its model at load
# time (MiniLM's and multilingual-e5-small's).
ASSUMED_DIMENSION = 384


@dataclass(frozen=True, slots=True)
class TemplateOption:
    spec: IndexSpec
    cost: IndexCost


@dataclass(frozen=True, slots=True)
class CollectionTemplates:
    name: str
    config: CollectionConfig
    vector_collection: str  # the tenant's active one
    embedder: str  # provider:model of the tenant's active one
    template: IndexTemplate  # the tenant's active one
    dimension: int
    dimension_assumed: bool
    options: list[TemplateOption]


def collection_templates(
    settings: IngestSettings, store: MetadataStore, tenant_id: str
) -> list[CollectionTemplates]:
    described = []
    for name, config in sorted(settings.collections.items()):
        dimension = config.embedder.dimension or ASSUMED_DIMENSION
        options = []
        for template in INDEX_TEMPLATES:
            spec = resolve_index(template, config.expected_vectors)
            options.append(
                TemplateOption(spec, estimate_cost(spec, config.expected_vectors, dimension))
            )
        active = active_vector_collection(store, settings, tenant_id, name)
        described.append(
            CollectionTemplates(
                name=name,
                config=config,
                vector_collection=active.name,
                embedder=f"{active.embedder.provider}:{active.embedder.model}",
                template=template_of(config, active.name),
                dimension=dimension,
                dimension_assumed=config.embedder.dimension is None,
                options=options,
            )
        )
    return described
