// A stand-in for the gateway in component tests: fetch answered by handlers keyed by method and
// path, with problem+json errors and server-sent event bodies built the way the API sends them.
// (The real API is exercised end to end by e2e/console.e2e.mjs against the embedded stack.)
import { vi } from "vitest";
import { createI18n } from "vue-i18n";
import type { ChatAnswer } from "../src/api/types";
import en from "../src/locales/en.json";
import zh from "../src/locales/zh.json";

export type Handler = (request: { url: URL; init: RequestInit; body: unknown }) => Response | Promise<Response>;

export interface StandIn {
  routes: Map<string, Handler>;
  calls: { method: string; path: string; query: Record<string, string>; body: unknown; headers: Record<string, string>; origin: string }[];
  on(method: string, path: string, handler: Handler): void;
}

export function json(body: unknown, status = 200, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json", ...headers } });
}

export function problem(status: number, detail: string, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify({ type: "https://kubemate.dev/problems/x", title: "Problem", status, detail }), {
    status,
    headers: { "Content-Type": "application/problem+json", ...headers },
  });
}

export function sse(events: { event: string; data: unknown }[]): Response {
  const text = events.map((e) => `event: ${e.event}\ndata: ${JSON.stringify(e.data)}\n\n`).join("");
  const bytes = new TextEncoder().encode(text);
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      // Split mid-event, as a network would.
      controller.enqueue(bytes.slice(0, 7));
      controller.enqueue(bytes.slice(7));
      controller.close();
    },
  });
  return new Response(body, { status: 200, headers: { "Content-Type": "text/event-stream" } });
}

// The audited actions each role may take, as the gateway's policy table grants them (a part:
// the ones the console offers controls for). GET /v1/me answers with the caller's.
const ACTIONS: Record<string, string[]> = {
  viewer: ["conversations.delete"],
  editor: ["documents.upload", "documents.upload_batch", "uploads.create", "uploads.complete", "documents.delete", "dead_letters.retry", "reindex.start", "reindex.cancel"],
  admin: ["api_keys.create", "api_keys.revoke", "model_settings.update", "collections.template"],
  operator: ["models.pull", "models.delete", "models.upload", "models.load", "models.unload", "deployments.create", "deployments.scale", "deployments.delete"],
};
const LADDER = ["viewer", "editor", "admin", "operator"];

/** The caller GET /v1/me describes for a fakeJwt: its tenant and roles; `operator` only with
 * the operator role in tenant "platform" or "default" (the server's operator tenants). */
export function meOf(claims: Record<string, unknown>, apiKeyId: string | null = null, uploads = { presigned: false, presigned_min_bytes: 16 * 1024 * 1024 }) {
  const roles = (Array.isArray(claims.roles) ? claims.roles : ["viewer"]) as string[];
  const tenant = String(claims.tenant_id ?? "default");
  const operator = roles.includes("operator") && (tenant === "platform" || tenant === "default");
  const top = Math.max(...roles.filter((r) => r !== "operator" || operator).map((r) => LADDER.indexOf(r)));
  return {
    tenant_id: tenant,
    user_id: String(claims.sub ?? "user"),
    roles,
    operator,
    api_key_id: apiKeyId,
    actions: LADDER.slice(0, top + 1).flatMap((role) => ACTIONS[role]),
    uploads,
  };
}

function claimsOf(authorization: string | undefined): Record<string, unknown> {
  const token = (authorization ?? "").replace(/^Bearer /, "");
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part)) as Record<string, unknown>;
  } catch {
    return {};
  }
}

export function standIn(): StandIn {
  const server: StandIn = {
    routes: new Map(),
    calls: [],
    on(method, path, handler) {
      server.routes.set(`${method} ${path}`, handler);
    },
  };
  // The gateway's /v1/me, read from the fake token's claims; a test may answer it otherwise.
  server.on("GET", "/v1/me", ({ init }) => json(meOf(claimsOf((init.headers as Record<string, string>)?.Authorization))));
  const answer = async (input: string, init: RequestInit = {}) => {
    const url = new URL(input, "http://console.test");
    const method = (init.method ?? "GET").toUpperCase();
    let body: unknown = init.body;
    if (typeof init.body === "string") body = JSON.parse(init.body);
    const query = Object.fromEntries(url.searchParams.entries());
    server.calls.push({ method, path: url.pathname, query, body, headers: { ...(init.headers as Record<string, string>) }, origin: url.origin });
    const handler = server.routes.get(`${method} ${url.pathname}`);
    if (!handler) return problem(404, `no stand-in route for ${method} ${url.pathname}`);
    return handler({ url, init, body });
  };
  vi.stubGlobal("fetch", answer);
  vi.stubGlobal("XMLHttpRequest", standInXhr(answer));
  return server;
}

/** The body's size as a browser would send it: a form's files plus ~100 bytes of multipart
 * headers per field. */
function sizeOf(body: unknown): number {
  if (body instanceof Blob) return body.size;
  if (body instanceof FormData) {
    let size = 0;
    for (const [, value] of body.entries()) size += 100 + (value instanceof Blob ? value.size : String(value).length);
    return size;
  }
  return typeof body === "string" ? body.length : 0;
}

/** XMLHttpRequest answered by the same handlers: the upload reports progress at half the body
 * and at its end, then the handler's response is the load (a handler that throws is a
 * network failure: a refused CORS preflight looks like that to a page). */
function standInXhr(answer: (input: string, init: RequestInit) => Promise<Response>) {
  return class StandInXhr {
    readonly upload: { onprogress: ((event: { loaded: number; total: number; lengthComputable: boolean }) => void) | null } = { onprogress: null };
    onload: (() => void) | null = null;
    onerror: (() => void) | null = null;
    onabort: (() => void) | null = null;
    status = 0;
    responseText = "";
    private method = "GET";
    private url = "";
    private headers: Record<string, string> = {};
    private responseHeaders = "";

    open(method: string, url: string): void {
      this.method = method;
      this.url = url;
    }

    setRequestHeader(name: string, value: string): void {
      this.headers[name] = value;
    }

    getAllResponseHeaders(): string {
      return this.responseHeaders;
    }

    abort(): void {
      this.onabort?.();
    }

    send(body: unknown): void {
      const total = sizeOf(body);
      void (async () => {
        await Promise.resolve();
        this.upload.onprogress?.({ loaded: Math.floor(total / 2), total, lengthComputable: true });
        let response: Response;
        try {
          response = await answer(this.url, { method: this.method, headers: this.headers, body: body as BodyInit });
        } catch {
          this.onerror?.();
          return;
        }
        this.upload.onprogress?.({ loaded: total, total, lengthComputable: true });
        this.status = response.status;
        this.responseText = await response.text();
        this.responseHeaders = [...response.headers.entries()].map(([name, value]) => `${name}: ${value}`).join("\r\n");
        this.onload?.();
      })();
    }
  };
}

export function testI18n(locale: "en" | "zh" = "en") {
  return createI18n({ legacy: false, locale, fallbackLocale: "en", messages: { en, zh }, missingWarn: false, fallbackWarn: false });
}

/** A JWT-shaped token with these claims (unsigned: the console never verifies, the server does). */
export function fakeJwt(claims: Record<string, unknown>): string {
  const encode = (value: unknown) => btoa(JSON.stringify(value)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  return `${encode({ alg: "HS256", typ: "JWT" })}.${encode(claims)}.c2lnbmF0dXJl`;
}

export async function settle(rounds = 5): Promise<void> {
  for (let i = 0; i < rounds; i++) await new Promise((resolve) => setTimeout(resolve, 0));
}

/** A /v1/chat answer as the API sends it, with `extra` fields set. */
export function chatAnswer(extra: Partial<ChatAnswer> = {}): ChatAnswer {
  return {
    answer: "",
    citations: [],
    model: "gemma3-270m-q4_k_m",
    conversation_id: null,
    no_documents: false,
    search_mode: "hybrid",
    reranked: false,
    cached: false,
    warnings: [],
    timings: {},
    query: "",
    rewritten: false,
    ...extra,
  };
}
