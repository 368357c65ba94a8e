// The bodies of the /v1 API as the console reads them (tests/snapshots/openapi has the schemas).

export type Role = "viewer" | "editor" | "admin" | "operator";

/** GET /v1/me: the verified caller. */
export interface Me {
  tenant_id: string;
  user_id: string;
  roles: string[];
  operator: boolean;
  api_key_id: string | null;
  actions: string[];
  uploads: UploadPaths;
}

/** How this deployment takes files (GET /v1/me): by presigned URL from a size, when browsers
 * may reach its object store; else in batches through the API. */
export interface UploadPaths {
  presigned: boolean;
  presigned_min_bytes: number;
}

export interface UploadTicket {
  upload_id: string;
  url: string;
  method: string;
  expires_at: string;
  max_bytes: number;
  complete_url: string;
}

export interface UploadAccepted {
  document_id: string;
  task_id: string;
  state: string;
  duplicate: boolean;
}

export interface Problem {
  type?: string;
  title?: string;
  status?: number;
  detail?: string;
  [extra: string]: unknown;
}

export interface Progress {
  done: number;
  total: number;
}

export interface Task {
  task_id: string;
  document_id: string;
  state: string;
  stage: string | null;
  progress: Progress;
  error: string | null;
  attempts: number;
}

export interface DocumentInfo {
  document_id: string;
  collection: string;
  filename: string;
  content_type: string;
  size_bytes: number;
  sha256: string;
  status: string;
  chunk_count: number;
  created_at?: string;
  task_id?: string | null;
}

export interface Chunk {
  chunk_id: string;
  index: number;
  page: number;
  text: string;
}

export interface ChunkPage {
  document_id: string;
  total: number;
  offset: number;
  limit: number;
  items: Chunk[];
}

export interface BatchItem {
  filename: string;
  status: number;
  document_id?: string | null;
  task_id?: string | null;
  state?: string | null;
  duplicate?: boolean | null;
  problem?: Problem | null;
}

export interface BatchAccepted {
  accepted: number;
  refused: number;
  results: BatchItem[];
}

export interface DeadLetter {
  entry_id: string;
  document_id: string;
  task_id: string;
  collection: string;
  reason: string;
  stage: string;
  attempts: number;
  failed_at: string | null;
}

export interface DeadLetterPage {
  items: DeadLetter[];
  next_cursor: string | null;
}

export interface RetryAccepted {
  document_id: string;
  task_id: string;
  state: string;
  entry_id: string;
}

export interface Hit {
  document_id: string;
  chunk_id: string;
  source: string;
  title: string;
  page: number;
  position: number;
  score: number;
  text: string;
}

export interface QueryResult {
  hits: Hit[];
  no_documents: boolean;
  search_mode: string;
  reranked: boolean;
}

export interface Citation {
  index: number;
  document_id: string;
  chunk_id: string;
  source: string;
  title: string;
  page: number;
  position?: number;
  score: number;
  snippet: string;
  cited: boolean;
}

/** How /v1/chat made an answer: the sources' sentences quoted, or written by the model. */
export type AnswerMode = "extractive" | "generative";

export interface ChatAnswer {
  answer: string;
  citations: Citation[];
  model: string;
  conversation_id: string | null;
  no_documents: boolean;
  search_mode: string;
  reranked: boolean;
  cached: boolean;
  warnings: string[];
  timings: Record<string, number>;
  // How the answer was made, whether the sources answer the question at all, and the generated
  // sentences the sources they cite do not support (absent from an older API: read when present).
  answer_mode?: AnswerMode;
  cannot_answer?: boolean;
  evidence?: number | null;
  unsupported_sentences?: string[];
  [extra: string]: unknown;
}

export interface ConversationItem {
  conversation_id: string;
  collection: string;
  title: string;
  turns: number;
  created_at: string;
  updated_at: string;
}

export interface Conversation {
  conversation_id: string;
  summary: string;
  turns: { question: string; answer: string }[];
}

export interface ModelEntry {
  id: string;
  name: string;
  runtime: string;
  owned_by: string;
  size?: number | null;
  family?: string | null;
  quantization?: string | null;
  parameter_size?: string | null;
  format?: string | null;
  role?: string | null;
  collection?: string;
  chat_model?: string;
  embedding_model?: string | null;
}

export interface ModelList {
  data: ModelEntry[];
  unavailable: Record<string, string>;
}

export interface Runtime {
  id: string;
  kind: string;
  base_url: string | null;
  available: boolean;
  error: string | null;
  models: string[];
}

export interface RunningModel {
  name: string;
  runtime: string;
  size: number;
  size_vram: number;
  expires_at: string | null;
  loaded_at: string | null;
}

export interface Pull {
  task_id: string;
  model: string;
  runtime: string;
  state: string;
  status: string;
  completed: number;
  total: number;
  error: string | null;
  created_at: string;
  events: string;
}

export interface RegistryEntry {
  name: string;
  format: string;
  size: number;
  sha256: string;
}

export interface Reindex {
  reindex_id: string;
  collection: string;
  state: string;
  embedder: { provider: string; model: string; base_url: string | null };
  // From the serving vector collection to the one it fills.
  old_vector_collection: string;
  new_vector_collection: string;
  change: "embedder" | "template";
  progress: Progress;
  error: string | null;
  // The tenant's own index template the re-index indexes by (kept by an embedder switch, the
  // new one of a template change); null: the collection's configured one.
  index_template?: string | null;
  created_at: string;
  finished_at: string | null;
}

export interface UsageSums {
  requests: number;
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  bytes: number;
  chunks: number;
  latency_ms_avg: number;
}

export interface UsageGroup extends UsageSums {
  kind?: string;
  model?: string;
}

export interface UsageDay {
  date: string;
  tokens: number;
  prompt_tokens: number;
  completion_tokens: number;
  embedded_tokens: number;
  documents: number;
  bytes: number;
  chunks: number;
}

export interface UsageSeries {
  tenant: string;
  days: number;
  series: UsageDay[];
}

export interface IndexTemplate {
  name: string;
  index: string;
  build: Record<string, number>;
  search_width: number | null;
  memory_bytes: number;
  distances_per_query: number;
  distances_per_insert: number;
  exact: boolean;
  current: boolean;
}

export interface CollectionInfo {
  name: string;
  language: string;
  embedder: string;
  index_template: string; // the one serving the tenant now
  configured_template: string; // the deployment's
  expected_vectors: number;
  dimension: number;
  dimension_assumed: boolean;
  vector_collection: string;
  templates: IndexTemplate[];
}

export interface HealthSummary {
  source: "prometheus" | "services";
  unreachable: string[];
  traffic: {
    request_rate: number | null;
    error_rate: number | null;
    p95_latency_ms: number | null;
    vector_search_p95_ms: number | null;
  };
  pipeline: {
    documents: Record<string, number>;
    backlog: number | null;
    dead_letters: number | null;
  };
}

export interface UsageReport {
  tenant: string;
  from: string | null;
  to: string | null;
  totals: UsageSums;
  groups: UsageGroup[];
}

/** GET /v1/audit: one audited action (newest first), and a page of them. */
export type AuditOutcome = "succeeded" | "refused" | "failed" | "admitted";

export interface AuditRecord {
  id: number;
  at: string;
  tenant_id: string;
  subject: string;
  key_id: string | null;
  roles: string[];
  action: string;
  target: string | null;
  method: string;
  path: string;
  status: number | null;
  outcome: AuditOutcome;
  request_id: string;
}

export interface AuditPage {
  items: AuditRecord[];
  next_cursor: number | null;
}

export const TERMINAL_STATES = new Set(["COMPLETED", "FAILED"]);

/** A runtime the model manager deployed on Kubernetes (GET /v1/deployments). */
export interface Deployment {
  name: string;
  namespace: string;
  phase: string; // Ready | Progressing | Failed | ScaledToZero
  replicas: number;
  ready_replicas: number;
  available_replicas: number;
  updated_replicas: number;
  model: string | null;
  runtime: string | null;
  autoscaled: boolean;
  message: string | null;
}
