// What a re-index changes: a collection's embedder (an embedder switch, POST /v1/reindex) or its
// index template (a rebuild, PUT /v1/collections/{name}/template). A Reindex does not say which,
// and its `index_template` cannot: an embedder switch keeps the tenant's template and so carries
// it too, and a change back to the configured template carries none. Its vector collections do:
// the server names them `<collection>_<embedder fingerprint>`, with `_<template>` after it for a
// template other than the configured one (libs/kubemate/collections.py), and one re-index
// changes the embedder or the template, never both.
import type { Reindex } from "./api/types";

const TEMPLATE_SUFFIX = /(_[0-9a-f]{8})_(balanced|fastest|memory|exact)$/;

const embedderPart = (vectorCollection: string) => vectorCollection.replace(TEMPLATE_SUFFIX, "$1");

/** A template change: the same embedder's vectors, indexed into another template's collection. */
export function isTemplateRebuild(reindex: Reindex): boolean {
  return embedderPart(reindex.old_vector_collection) === embedderPart(reindex.new_vector_collection);
}
