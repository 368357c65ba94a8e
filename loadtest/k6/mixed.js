// The mix a deployment sees, over every tenant in TOKENS: of RATE requests/s in all (default 4),
// 70 % queries, 20 % chats (half of them streamed) and 10 % single uploads, ramped up from 0
// over RAMP (default 30s) and held for HOLD (default 60s).
//   Shares: QUERY_SHARE, CHAT_SHARE, UPLOAD_SHARE (defaults 0.7, 0.2, 0.1); thresholds as in
//   the other scripts; see lib/kubemate.js.
import {
  chat,
  chatStream,
  handleSummary,
  number,
  query,
  rampingRate,
  thresholds,
  TREND_STATS,
  upload,
} from './lib/kubemate.js';

const rate = number('RATE', 4);
const ramp = __ENV.RAMP || '30s';
const hold = __ENV.HOLD || '60s';
const chatRate = (rate * number('CHAT_SHARE', 0.2)) / 2;

export const options = {
  scenarios: {
    query: rampingRate('query', rate * number('QUERY_SHARE', 0.7), ramp, hold),
    chat: rampingRate('chat', chatRate, ramp, hold),
    chat_stream: rampingRate('chatStream', chatRate, ramp, hold),
    upload: rampingRate('upload', rate * number('UPLOAD_SHARE', 0.1), ramp, hold),
  },
  thresholds: thresholds(['query', 'chat', 'chat_stream', 'upload']),
  summaryTrendStats: TREND_STATS,
};

export { query, chat, chatStream, upload, handleSummary };
