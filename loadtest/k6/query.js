// POST /v1/query at a constant arrival rate, questions about the seeded reports, tenants in turn.
//   RATE (requests/s, default 5), DURATION (default 30s), QUERY_P95_MS; see lib/kubemate.js.
import { constantRate, handleSummary, number, query, thresholds, TREND_STATS } from './lib/kubemate.js';

export const options = {
  scenarios: { query: constantRate('query', number('RATE', 5), __ENV.DURATION || '30s') },
  thresholds: thresholds(['query']),
  summaryTrendStats: TREND_STATS,
};

export { query, handleSummary };
