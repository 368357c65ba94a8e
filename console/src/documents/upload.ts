// Which way each file goes, and how far along each is. No Vue here.
//
// - A file from /v1/me's `uploads.presigned_min_bytes` goes straight to the object store by a
//   presigned URL (POST /v1/uploads, PUT to the URL, POST its completion) when the deployment
//   offers it (an S3 store browsers can reach) and the caller may; a long body then never
//   crosses the gateway and the services. Smaller files, and every file where the store is the
//   filesystem, go in batch requests (POST /v1/documents/batch), which cost one request for many.
// - A batch is one multipart body: its upload progress is shared out to its files in body
//   order, so each file keeps its own bar.
import type { UploadPaths } from "../api/types";

export type UploadPath = "batch" | "presigned";

export function pathFor(size: number, uploads: UploadPaths | null | undefined, mayPresign: boolean): UploadPath {
  if (!uploads || !uploads.presigned || !mayPresign) return "batch";
  return size >= uploads.presigned_min_bytes ? "presigned" : "batch";
}

export interface UploadPlan<T> {
  /** Files in batch requests of at most `batchFiles` each, in the order given. */
  batches: T[][];
  presigned: T[];
}

export function planUploads<T extends { size: number }>(files: T[], uploads: UploadPaths | null | undefined, mayPresign: boolean, batchFiles: number): UploadPlan<T> {
  const batched: T[] = [];
  const presigned: T[] = [];
  for (const file of files) (pathFor(file.size, uploads, mayPresign) === "presigned" ? presigned : batched).push(file);
  const batches: T[][] = [];
  for (let start = 0; start < batched.length; start += batchFiles) batches.push(batched.slice(start, start + batchFiles));
  return { batches, presigned };
}

/** The bytes of each file sent when `loaded` of a multipart body of `total` bytes is: the
 * files lie in the body in order, each after its part's headers (the body's bytes beyond the
 * files' own, shared equally between the parts). Never more than a file's size; all of every
 * file once the whole body is sent. */
export function batchShares(loaded: number, total: number, sizes: number[]): number[] {
  if (sizes.length === 0) return [];
  if (total > 0 && loaded >= total) return [...sizes];
  const payload = sizes.reduce((sum, size) => sum + size, 0);
  const headers = Math.max(0, total - payload) / sizes.length;
  let start = 0;
  return sizes.map((size) => {
    start += headers;
    const sent = Math.min(size, Math.max(0, loaded - start));
    start += size;
    return Math.floor(sent);
  });
}
