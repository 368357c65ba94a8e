// Multipart uploads: one file to POST /v1/documents, and BATCH_FILES files (default 5) to
// POST /v1/documents/batch, each at a constant arrival rate. Every file's bytes are new, so each
// is stored and queued for indexing (the worker's backlog grows; this measures the upload path).
//   RATE (single uploads/s, default 2), BATCH_RATE (batches/s, default 0.5), DURATION (default
//   30s), UPLOAD_P95_MS, UPLOAD_BATCH_P95_MS; see lib/kubemate.js.
import {
  constantRate,
  handleSummary,
  number,
  thresholds,
  TREND_STATS,
  upload,
  uploadBatch,
} from './lib/kubemate.js';

const duration = __ENV.DURATION || '30s';

export const options = {
  scenarios: {
    upload: constantRate('upload', number('RATE', 2), duration),
    upload_batch: constantRate('uploadBatch', number('BATCH_RATE', 0.5), duration),
  },
  thresholds: thresholds(['upload', 'upload_batch']),
  summaryTrendStats: TREND_STATS,
};

export { upload, uploadBatch, handleSummary };
