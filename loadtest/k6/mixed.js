// The mix a deployment sees, over every tenant in TOKENS: of RATE requests/s in all (default 1),
// 70 % queries, 20 % chats (half of them streamed) and 10 % single uploads, ramped up from 0
// over RAMP (default 30s) and held for HOLD (default 60s).
//   Shares: QUERY_SHARE, CHAT_SHARE, UPLOAD_SHARE (defaults 0.7, 0.2, 0.1; 0 leaves one out);
//   thresholds as in the other scripts; see lib/kubemate.js.
import {
  chat,
  chatStream,
  handleSummary,
  number,
  options as optionsOf,
  query,
  upload,
} from './lib/kubemate.js';

const rate = number('RATE', 1);
const chatRate = (rate * number('CHAT_SHARE', 0.2)) / 2;

export const options = optionsOf(
  [
    { endpoint: 'query', exec: 'query', rate: rate * number('QUERY_SHARE', 0.7) },
    { endpoint: 'chat', exec: 'chat', rate: chatRate },
    { endpoint: 'chat_stream', exec: 'chatStream', rate: chatRate },
    { endpoint: 'upload', exec: 'upload', rate: rate * number('UPLOAD_SHARE', 0.1) },
  ],
  __ENV.HOLD || '60s',
  __ENV.RAMP || '30s',
);

export { query, chat, chatStream, upload, handleSummary };
