// One way to call the /v1 API: the signed-in credential goes with every request, errors come
// back as ApiError carrying the problem+json `detail` (never a bare status code), and a 401
// ends the session with the server's reason.
import type { Problem } from "./types";

export class ApiError extends Error {
  readonly status: number;
  readonly title: string;
  readonly retryAfterS: number | null;
  readonly problem: Problem | null;

  constructor(status: number, detail: string, options: { title?: string; retryAfterS?: number | null; problem?: Problem | null } = {}) {
    super(detail);
    this.name = "ApiError";
    this.status = status;
    this.title = options.title ?? "";
    this.retryAfterS = options.retryAfterS ?? null;
    this.problem = options.problem ?? null;
  }

  /** The server's explanation, or "" when there was none (network failure). */
  get detail(): string {
    return this.message;
  }
}

interface ClientHooks {
  credential: () => string | null;
  unauthorized: (reason: string) => void;
}

const hooks: ClientHooks = { credential: () => null, unauthorized: () => {} };

export function configureClient(next: Partial<ClientHooks>): void {
  Object.assign(hooks, next);
}

export interface RequestOptions {
  json?: unknown;
  body?: BodyInit;
  query?: Record<string, string | number | boolean | undefined | null>;
  headers?: Record<string, string>;
  signal?: AbortSignal;
  /** A credential to try instead of the session's (sign-in checks one before keeping it). */
  credential?: string;
  /** Leave the session alone on 401 (sign-in reports it itself). */
  keepSessionOn401?: boolean;
}

export function urlOf(path: string, query?: RequestOptions["query"]): string {
  if (!query) return path;
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== "") params.set(key, String(value));
  }
  const text = params.toString();
  return text ? `${path}?${text}` : path;
}

function retryAfterOf(response: Response): number | null {
  const header = response.headers.get("retry-after");
  if (!header) return null;
  const seconds = Number(header);
  if (Number.isFinite(seconds)) return Math.max(0, seconds);
  const date = Date.parse(header);
  return Number.isNaN(date) ? null : Math.max(0, Math.ceil((date - Date.now()) / 1000));
}

/** An ApiError for a response that is not ok, from its problem+json body when it has one. */
export async function errorOf(response: Response): Promise<ApiError> {
  let problem: Problem | null = null;
  try {
    const text = await response.text();
    problem = text ? (JSON.parse(text) as Problem) : null;
  } catch {
    problem = null; // not JSON (a proxy's HTML page): the status names the problem
  }
  const detail = typeof problem?.detail === "string" ? problem.detail : "";
  const title = typeof problem?.title === "string" ? problem.title : response.statusText;
  return new ApiError(response.status, detail, { title, retryAfterS: retryAfterOf(response), problem });
}

/** fetch with the credential; resolves to the Response when it is ok, else throws ApiError. */
export async function send(method: string, path: string, options: RequestOptions = {}): Promise<Response> {
  const headers: Record<string, string> = { Accept: "application/json", ...options.headers };
  const credential = options.credential ?? hooks.credential();
  if (credential) headers.Authorization = `Bearer ${credential}`;
  let body = options.body;
  if (options.json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(options.json);
  }
  let response: Response;
  try {
    response = await fetch(urlOf(path, options.query), {
      method,
      headers,
      body,
      signal: options.signal,
      credentials: "omit", // the credential is the header above; no cookies exist
      cache: "no-store",
    });
  } catch (error) {
    if (error instanceof DOMException && error.name === "AbortError") throw error;
    throw new ApiError(0, "");
  }
  if (response.ok) return response;
  const error = await errorOf(response);
  if (response.status === 401 && !options.keepSessionOn401) hooks.unauthorized(error.detail);
  throw error;
}

interface XhrOptions {
  query?: RequestOptions["query"];
  onProgress?: (sent: number, total: number) => void;
  signal?: AbortSignal;
}

/** One request by XMLHttpRequest, for the upload progress fetch does not report. `authorized`:
 * the API's (the credential goes, a 401 ends the session); else another origin's (the object
 * store's presigned URL: nothing of the session may go there). */
function xhrSend(method: string, url: string, body: XMLHttpRequestBodyInit, contentType: string | null, authorized: boolean, options: XhrOptions): Promise<Response> {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open(method, url);
    const credential = authorized ? hooks.credential() : null;
    if (credential) xhr.setRequestHeader("Authorization", `Bearer ${credential}`);
    if (contentType) xhr.setRequestHeader("Content-Type", contentType);
    if (authorized) xhr.setRequestHeader("Accept", "application/json");
    const size = body instanceof Blob ? body.size : 0;
    xhr.upload.onprogress = (event) => options.onProgress?.(event.loaded, event.lengthComputable ? event.total : size);
    xhr.onerror = () => reject(new ApiError(0, ""));
    xhr.onabort = () => reject(new DOMException("aborted", "AbortError"));
    xhr.onload = async () => {
      const headers = new Headers();
      for (const line of xhr.getAllResponseHeaders().trim().split(/[\r\n]+/)) {
        const at = line.indexOf(":");
        if (at > 0) headers.append(line.slice(0, at).trim(), line.slice(at + 1).trim());
      }
      const response = new Response(xhr.status === 204 ? null : xhr.responseText, { status: xhr.status, headers });
      if (response.ok) {
        resolve(response);
        return;
      }
      const error = await errorOf(response);
      if (authorized && response.status === 401) hooks.unauthorized(error.detail);
      reject(error);
    };
    options.signal?.addEventListener("abort", () => xhr.abort());
    xhr.send(body);
  });
}

async function jsonOf<T>(response: Response): Promise<T> {
  const text = await response.text();
  return (text ? JSON.parse(text) : undefined) as T;
}

/** PUT/POST a file as the whole body with upload progress (fetch reports none): for model
 * files of gigabytes. Errors as from `send`. */
export async function sendFile<T>(method: string, path: string, file: Blob, options: XhrOptions = {}): Promise<T> {
  return jsonOf<T>(await xhrSend(method, urlOf(path, options.query), file, "application/octet-stream", true, options));
}

/** POST a multipart form (the browser sets its boundary) with upload progress. */
export async function sendForm<T>(path: string, form: FormData, options: XhrOptions = {}): Promise<T> {
  return jsonOf<T>(await xhrSend("POST", urlOf(path, options.query), form, null, true, options));
}

/** PUT a file to a presigned URL of the object store, with progress and without the session's
 * credential. Its Content-Type is the file's (signed URLs do not bind it; the bucket's CORS
 * allows the header). A refusal or an unreachable store rejects with an ApiError. */
export async function putPresigned(url: string, file: Blob, options: XhrOptions = {}): Promise<void> {
  await xhrSend("PUT", url, file, file.type || "application/octet-stream", false, options);
}

export async function api<T>(method: string, path: string, options: RequestOptions = {}): Promise<T> {
  const response = await send(method, path, options);
  if (response.status === 204) return undefined as T;
  const text = await response.text();
  return (text ? JSON.parse(text) : undefined) as T;
}
