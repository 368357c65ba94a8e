// Multipart uploads: one file to POST /v1/documents, and BATCH_FILES files (default 5) to
// POST /v1/documents/batch, each at a constant arrival rate. Every file's bytes are new, so each
// is stored and queued for indexing (the worker's backlog grows; this measures the upload path).
//   RATE (single uploads/s, default 2), BATCH_RATE (batches/s, default 0.5), DURATION (default
//   30s), UPLOAD_P95_MS, UPLOAD_BATCH_P95_MS; see lib/kubemate.js.
import { handleSummary, number, options as optionsOf, upload, uploadBatch } from './lib/kubemate.js';

export const options = optionsOf(
  [
    { endpoint: 'upload', exec: 'upload', rate: number('RATE', 2) },
    { endpoint: 'upload_batch', exec: 'uploadBatch', rate: number('BATCH_RATE', 0.5) },
  ],
  __ENV.DURATION || '30s',
);

export { upload, uploadBatch, handleSummary };
