// POST /v1/chat, answered whole and streamed (server-sent events), side by side, each at a
// constant arrival rate. The streamed answer's time to first byte (the LLM's first token) is
// the chat_ttfb Trend.
//   RATE (whole answers/s, default 0.05), STREAM_RATE (streamed answers/s, default RATE),
//   DURATION (default 60s), MAX_TOKENS, TOP_K, CHAT_P95_MS, CHAT_STREAM_P95_MS,
//   CHAT_TTFB_P95_MS; see lib/kubemate.js.
import { chat, chatStream, handleSummary, number, options as optionsOf } from './lib/kubemate.js';

const rate = number('RATE', 0.05);

export const options = optionsOf(
  [
    { endpoint: 'chat', exec: 'chat', rate },
    { endpoint: 'chat_stream', exec: 'chatStream', rate: number('STREAM_RATE', rate) },
  ],
  __ENV.DURATION || '60s',
);

export { chat, chatStream, handleSummary };
