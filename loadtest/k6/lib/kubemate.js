// What every Kubemate k6 script shares: where the stack is, the tenants' tokens, the requests
// (one function per endpoint, each tagged `endpoint:<name>` so thresholds and figures are per
// endpoint), arrival-rate scenarios, thresholds, and the JSON summary.
//
// Environment (k6 reads the process's environment, or `-e NAME=value`):
//   BASE_URL     the gateway (default http://127.0.0.1:8000)
//   TOKENS       a JSON list of bearer tokens, one per tenant (required; loadtest/k6_run.py mints
//                them with the stack's signing key)
//   SUMMARY      where handleSummary writes k6's summary data as JSON (optional)
//   COLLECTION   the knowledge collection (default "default")
//   CACHE        "true" lets queries and chats read the caches (default false: every stage runs)
//   TOP_K        chunks per query, and per chat's prompt (default 5)
//   MAX_TOKENS   max_tokens of each chat (default: the server's)
//   BATCH_FILES  files per batch upload (default 5)
//   <NAME>_P95_MS  a p95 threshold in ms, NAME one of QUERY, CHAT, CHAT_STREAM, CHAT_TTFB,
//                UPLOAD, UPLOAD_BATCH (defaults in P95_MS below)
import http from 'k6/http';
import { check } from 'k6';
import { Counter, Trend } from 'k6/metrics';

const BASE_URL = (__ENV.BASE_URL || 'http://127.0.0.1:8000').replace(/\/+$/, '');
const COLLECTION = __ENV.COLLECTION || 'default';
const CACHE = (__ENV.CACHE || 'false').toLowerCase() === 'true';
const MAX_TOKENS = __ENV.MAX_TOKENS ? parseInt(__ENV.MAX_TOKENS, 10) : null;
const TOP_K = number('TOP_K', 5);
const BATCH_FILES = number('BATCH_FILES', 5);

// The same documents loadtest/k6_run.py seeds into each tenant, and questions about them.
const corpus = JSON.parse(open(import.meta.resolve('../data/corpus.json')));
const QUESTIONS = corpus.questions;
const DOCUMENTS = corpus.documents;

const TOKENS = parseTokens(__ENV.TOKENS);

// p95 thresholds per endpoint, in ms. Generous for the embedded stack on 2 shared cores; chat
// runs a CPU LLM (gemma3-270m), so its figures are seconds.
const P95_MS = {
  query: number('QUERY_P95_MS', 1000),
  chat: number('CHAT_P95_MS', 30000),
  chat_stream: number('CHAT_STREAM_P95_MS', 30000),
  upload: number('UPLOAD_P95_MS', 1000),
  upload_batch: number('UPLOAD_BATCH_P95_MS', 3000),
};
const CHAT_TTFB_P95_MS = number('CHAT_TTFB_P95_MS', 15000);

// Every response adds to these (0 or 1), so each counter has samples and `count==0` is a real
// check, not one that passes for want of data.
const serverErrors = new Counter('http_5xx');
const rateLimited = new Counter('http_429');
// Time to the first byte of a streamed answer: the stream opens once retrieval is done and the
// LLM's first token is made (kubemate_retrieval.chat), so this is the time to first token.
const chatTtfb = new Trend('chat_ttfb', true);

const JSON_TYPE = { 'Content-Type': 'application/json' };
const TREND_STATS = ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max', 'count'];

export function number(name, fallback) {
  const raw = __ENV[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (Number.isNaN(value)) throw new Error(`${name} must be a number, not ${raw}`);
  return value;
}

function parseTokens(raw) {
  if (!raw) throw new Error('TOKENS must be a JSON list of tenant tokens (see loadtest/k6_run.py)');
  const tokens = JSON.parse(raw);
  if (!Array.isArray(tokens) || tokens.length === 0 || tokens.some((t) => typeof t !== 'string')) {
    throw new Error('TOKENS must be a non-empty JSON list of strings');
  }
  return tokens;
}

// ---- requests ----------------------------------------------------------------------------------

// One POST as the next tenant: iterations go round the tenants, each VU starting at its own
// place, so every tenant gets an even share whatever the number of VUs. Tagged with its endpoint
// (thresholds and figures are per endpoint) and counted in http_5xx and http_429.
function post(endpoint, path, body, headers) {
  const index = (__VU + __ITER) % TOKENS.length;
  const res = http.post(`${BASE_URL}${path}`, body, {
    headers: { Authorization: `Bearer ${TOKENS[index]}`, ...headers },
    tags: { endpoint, tenant: `t${index}` },
    // Generation on a busy CPU can take minutes; the p95 thresholds judge the latency.
    timeout: '300s',
  });
  serverErrors.add(res.status >= 500 ? 1 : 0, { endpoint });
  rateLimited.add(res.status === 429 ? 1 : 0, { endpoint });
  return res;
}

function pick(list) {
  return list[Math.floor(Math.random() * list.length)];
}

function json(res) {
  try {
    return res.json();
  } catch (_) {
    return null;
  }
}

export function query() {
  const body = { question: pick(QUESTIONS), collection: COLLECTION, top_k: TOP_K, cache: CACHE };
  const res = post('query', '/v1/query', JSON.stringify(body), JSON_TYPE);
  const out = json(res);
  check(res, {
    'query: 200': (r) => r.status === 200,
    'query: hits': () => out !== null && Array.isArray(out.hits) && out.hits.length > 0,
  });
}

export function chat() {
  const res = post('chat', '/v1/chat', chatBody(false), JSON_TYPE);
  const out = json(res);
  check(res, {
    'chat: 200': (r) => r.status === 200,
    'chat: answer with citations': () =>
      out !== null && typeof out.answer === 'string' && out.citations.length > 0,
  });
}

export function chatStream() {
  const headers = { ...JSON_TYPE, Accept: 'text/event-stream' };
  const res = post('chat_stream', '/v1/chat', chatBody(true), headers);
  if (res.status === 200) chatTtfb.add(res.timings.waiting, { endpoint: 'chat_stream' });
  const body = typeof res.body === 'string' ? res.body : '';
  check(res, {
    'chat_stream: 200 event stream': (r) =>
      r.status === 200 && (r.headers['Content-Type'] || '').startsWith('text/event-stream'),
    'chat_stream: ends with done, no error': () =>
      body.includes('event: done') && !body.includes('event: error'),
  });
}

export function upload() {
  const form = multipart({ collection: COLLECTION }, [uniqueFile('file')]);
  const res = post('upload', '/v1/documents', form.body, form.headers);
  const out = json(res);
  check(res, {
    'upload: 202': (r) => r.status === 202,
    'upload: new document': () => out !== null && !!out.document_id && out.duplicate === false,
  });
}

export function uploadBatch() {
  const files = Array.from({ length: BATCH_FILES }, () => uniqueFile('files'));
  const form = multipart({ collection: COLLECTION }, files);
  const res = post('upload_batch', '/v1/documents/batch', form.body, form.headers);
  const out = json(res);
  check(res, {
    'upload_batch: 202': (r) => r.status === 202,
    'upload_batch: every file accepted': () => out !== null && out.accepted === BATCH_FILES,
  });
}

function chatBody(stream) {
  const body = {
    question: pick(QUESTIONS),
    collection: COLLECTION,
    top_k: TOP_K,
    cache: CACHE,
    stream,
  };
  if (MAX_TOKENS !== null) body.max_tokens = MAX_TOKENS;
  return JSON.stringify(body);
}

// A seeded report with a line that makes its bytes unique: the same bytes again would be answered
// as a duplicate of the first upload (SHA-256), which costs the stack almost nothing.
function uniqueFile(field) {
  const doc = pick(DOCUMENTS);
  const stamp = `${__VU}-${__ITER}-${Date.now()}-${Math.random().toString(36).slice(2)}`;
  const name = doc.name.replace(/\.txt$/, `-${stamp}.txt`);
  return { field, name, text: `${doc.text}\n\nLoad-test copy ${stamp}.\n` };
}

// multipart/form-data by hand: k6's object form cannot repeat a field, and a batch sends each
// file under the same `files` field.
function multipart(fields, files) {
  const boundary = `kubemate-k6-${Math.random().toString(36).slice(2)}`;
  const parts = [];
  for (const [name, value] of Object.entries(fields)) {
    parts.push(`--${boundary}\r\nContent-Disposition: form-data; name="${name}"\r\n\r\n${value}\r\n`);
  }
  for (const file of files) {
    parts.push(
      `--${boundary}\r\nContent-Disposition: form-data; name="${file.field}"; ` +
        `filename="${file.name}"\r\nContent-Type: text/plain\r\n\r\n${file.text}\r\n`,
    );
  }
  parts.push(`--${boundary}--\r\n`);
  return {
    body: parts.join(''),
    headers: { 'Content-Type': `multipart/form-data; boundary=${boundary}` },
  };
}

// ---- scenarios and thresholds ------------------------------------------------------------------

// Requests still in flight when a scenario ends may finish (k6's default is 30 s, shorter than
// an answer of the CPU LLM on a busy machine): an interrupted request records no figures.
const GRACEFUL_STOP = '300s';

// An open model: `perSecond` arrivals a second whatever the latency (counted per minute, so
// fractional rates work), with VUs added as requests queue up; a shortage of VUs shows as
// dropped_iterations.
function constantRate(exec, perSecond, duration) {
  return {
    executor: 'constant-arrival-rate',
    exec,
    rate: Math.max(1, Math.round(perSecond * 60)),
    timeUnit: '1m',
    duration,
    preAllocatedVUs: Math.max(2, Math.ceil(perSecond * 2)),
    maxVUs: number('MAX_VUS', 200),
    gracefulStop: GRACEFUL_STOP,
  };
}

// From 0 to `perSecond` over `ramp`, held for `hold`.
function rampingRate(exec, perSecond, ramp, hold) {
  const target = Math.max(1, Math.round(perSecond * 60));
  return {
    executor: 'ramping-arrival-rate',
    exec,
    startRate: 0,
    timeUnit: '1m',
    stages: [
      { target, duration: ramp },
      { target, duration: hold },
    ],
    preAllocatedVUs: Math.max(2, Math.ceil(perSecond * 2)),
    maxVUs: number('MAX_VUS', 200),
    gracefulStop: GRACEFUL_STOP,
  };
}

// The options of a script whose endpoints each run at their own rate ({endpoint, exec, rate}
// per second): constant over `duration`, or with `ramp` ramped up from 0 over it and then held
// for `duration`. A rate of 0 leaves the endpoint out (a sweep measures one at a time).
export function options(specs, duration, ramp) {
  const active = specs.filter((spec) => spec.rate > 0);
  if (active.length === 0) throw new Error('every rate is 0: nothing to run');
  const scenario = (spec) =>
    ramp
      ? rampingRate(spec.exec, spec.rate, ramp, duration)
      : constantRate(spec.exec, spec.rate, duration);
  return {
    scenarios: Object.fromEntries(active.map((spec) => [spec.endpoint, scenario(spec)])),
    thresholds: thresholds(active.map((spec) => spec.endpoint)),
    summaryTrendStats: TREND_STATS,
  };
}

// p95 and error rate (< 1 %) per endpoint, no 5xx at all, and the checks. Every endpoint must
// also have been called: k6 passes a threshold of a metric without samples.
function thresholds(endpoints) {
  const out = {
    http_5xx: ['count==0'],
    checks: ['rate>0.99'],
  };
  for (const endpoint of endpoints) {
    out[`http_req_duration{endpoint:${endpoint}}`] = [`p(95)<${P95_MS[endpoint]}`];
    out[`http_req_failed{endpoint:${endpoint}}`] = ['rate<0.01'];
    out[`http_reqs{endpoint:${endpoint}}`] = ['count>0'];
    if (endpoint === 'chat_stream') out['chat_ttfb'] = [`p(95)<${CHAT_TTFB_P95_MS}`];
  }
  return out;
}

// ---- summary -----------------------------------------------------------------------------------

// k6's summary data as JSON at $SUMMARY, and a few lines on stdout: each threshold's metric, its
// figures and whether it held.
export function handleSummary(data) {
  const out = { stdout: brief(data) };
  if (__ENV.SUMMARY) out[__ENV.SUMMARY] = JSON.stringify(data, null, 2);
  return out;
}

function brief(data) {
  const lines = [];
  for (const [name, metric] of Object.entries(data.metrics)) {
    if (!metric.thresholds) continue;
    const v = metric.values;
    let figures;
    if (metric.type === 'trend') {
      figures = `n=${v.count} p50=${ms(v.med)} p95=${ms(v['p(95)'])} p99=${ms(v['p(99)'])}`;
    } else if (metric.type === 'rate') {
      figures = `rate=${(v.rate * 100).toFixed(2)}% (${v.passes} of ${v.passes + v.fails})`;
    } else {
      figures = `count=${v.count}`;
    }
    const verdicts = Object.entries(metric.thresholds)
      .map(([rule, result]) => `${result.ok ? 'ok' : 'FAILED'} ${rule}`)
      .join(', ');
    lines.push(`  ${name}: ${figures}  [${verdicts}]`);
  }
  const iterations = data.metrics.iterations ? data.metrics.iterations.values.count : 0;
  const dropped = data.metrics.dropped_iterations ? data.metrics.dropped_iterations.values.count : 0;
  const seconds = (data.state.testRunDurationMs / 1000).toFixed(1);
  lines.unshift(`${iterations} iterations in ${seconds} s, ${dropped} dropped`);
  return lines.join('\n') + '\n';
}

function ms(value) {
  return value === undefined ? '-' : `${value.toFixed(0)}ms`;
}
