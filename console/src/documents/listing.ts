// The documents list's request and its total: filters become query parameters (empty ones are
// left out), and the total across pages comes in the X-Total-Count header.

export interface ListFilters {
  collection: string;
  status: string;
  name: string;
}

export function listQuery(filters: ListFilters): Record<string, string | undefined> {
  const name = filters.name.trim();
  return { collection: filters.collection || undefined, status: filters.status || undefined, name: name || undefined };
}

/** The header's total; `fallback` (what was seen so far) when a proxy dropped it. */
export function totalOf(response: Response, fallback: number): number {
  const value = Number(response.headers.get("x-total-count"));
  return response.headers.has("x-total-count") && Number.isInteger(value) && value >= 0 ? value : fallback;
}
