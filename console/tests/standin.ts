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
  calls: { method: string; path: string; query: Record<string, string>; body: unknown; headers: Record<string, string> }[];
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
  editor: ["documents.upload", "documents.upload_batch", "documents.delete", "dead_letters.retry", "reindex.start", "reindex.cancel"],
  admin: ["api_keys.create", "api_keys.revoke", "model_settings.update", "collections.template"],
  operator: ["models.pull", "models.delete", "models.upload", "models.load", "models.unload", "deployments.create", "deployments.scale", "deployments.delete"],
};
const LADDER = ["viewer", "editor", "admin", "operator"];

/** The caller GET /v1/me describes for a fakeJwt: its tenant and roles; `operator` only with
 * the operator role in tenant "platform" or "default" (the server's operator tenants). */
export function meOf(claims: Record<string, unknown>, apiKeyId: string | null = null) {
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
  vi.stubGlobal("fetch", async (input: string, init: RequestInit = {}) => {
    const url = new URL(input, "http://console.test");
    const method = (init.method ?? "GET").toUpperCase();
    let body: unknown = init.body;
    if (typeof init.body === "string") body = JSON.parse(init.body);
    const query = Object.fromEntries(url.searchParams.entries());
    server.calls.push({ method, path: url.pathname, query, body, headers: { ...(init.headers as Record<string, string>) } });
    const handler = server.routes.get(`${method} ${url.pathname}`);
    if (!handler) return problem(404, `no stand-in route for ${method} ${url.pathname}`);
    return handler({ url, init, body });
  });
  return server;
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
