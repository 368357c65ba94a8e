// Paging through a document's chunks: which page of `size` holds the chunk at a position.

export function pageOf(position: number, size: number): number {
  if (size < 1) throw new RangeError("a page holds at least one chunk");
  return Math.floor(Math.max(0, position) / size);
}
