// What a re-index changes: a collection's embedder (an embedder switch, POST /v1/reindex) or its
// index template (a rebuild, PUT /v1/collections/{name}/template). The server says which in
// `change` (its `index_template` cannot: an embedder switch keeps the tenant's template and so
// carries it too, and a change back to the configured template carries none).
import type { Reindex } from "./api/types";

/** A template change: the same embedder's vectors, indexed into another template's collection. */
export function isTemplateRebuild(reindex: Reindex): boolean {
  return reindex.change === "template";
}
