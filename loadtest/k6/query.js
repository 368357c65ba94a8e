// POST /v1/query at a constant arrival rate, questions about the seeded reports, tenants in turn.
//   RATE (requests/s, default 5), DURATION (default 30s), TOP_K, CACHE, QUERY_P95_MS; see
//   lib/kubemate.js.
import { handleSummary, number, options as optionsOf, query } from './lib/kubemate.js';

export const options = optionsOf(
  [{ endpoint: 'query', exec: 'query', rate: number('RATE', 5) }],
  __ENV.DURATION || '30s',
);

export { query, handleSummary };
