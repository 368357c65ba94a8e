// POST /v1/chat, answered whole and streamed (server-sent events), side by side at the same
// constant arrival rate each. The streamed answer's time to first byte (the LLM's first token)
// is the chat_ttfb Trend.
//   RATE (answers/s per scenario, default 0.2), DURATION (default 60s), MAX_TOKENS,
//   CHAT_P95_MS, CHAT_STREAM_P95_MS, CHAT_TTFB_P95_MS; see lib/kubemate.js.
import {
  chat,
  chatStream,
  constantRate,
  handleSummary,
  number,
  thresholds,
  TREND_STATS,
} from './lib/kubemate.js';

const rate = number('RATE', 0.2);
const duration = __ENV.DURATION || '60s';

export const options = {
  scenarios: {
    chat: constantRate('chat', rate, duration),
    chat_stream: constantRate('chatStream', rate, duration),
  },
  thresholds: thresholds(['chat', 'chat_stream']),
  summaryTrendStats: TREND_STATS,
};

export { chat, chatStream, handleSummary };
