// Who is signed in, kept in sessionStorage only: the credential lives as long as the tab.
// The server says who the caller is (GET /v1/me: tenant, roles, operator, and the audited
// actions the caller may take); the console only uses it to hide what the caller may not do,
// and the server refuses those anyway. A JWT's expiry is read from its claims to sign out on time.
import { reactive, readonly } from "vue";
import { api, configureClient } from "./api/client";
import type { Me, Role, UploadPaths } from "./api/types";

const STORAGE_KEY = "kubemate.session";
const ROLE_ORDER: Role[] = ["viewer", "editor", "admin", "operator"];

export interface Session {
  credential: string;
  kind: "token" | "api-key";
  tenant: string | null;
  user: string | null;
  role: Role; // the highest: an operator may do all an admin may
  operator: boolean;
  actions: string[]; // the audited actions the caller may take (models.pull, api_keys.create, …)
  uploads?: UploadPaths; // how files may go (a session kept by an older console has none)
  expiresAt: number | null; // ms since the epoch
}

export type EndReason = { kind: "expired" } | { kind: "refused"; detail: string } | { kind: "signed-out" };

interface State {
  session: Session | null;
  ended: EndReason | null;
}

const state = reactive<State>({ session: load(), ended: null });
let expiryTimer: ReturnType<typeof setTimeout> | undefined;
const listeners: ((reason: EndReason) => void)[] = [];

function load(): Session | null {
  try {
    const raw = sessionStorage.getItem(STORAGE_KEY);
    if (!raw) return null;
    const session = JSON.parse(raw) as Session;
    if (session.expiresAt !== null && session.expiresAt <= Date.now()) {
      sessionStorage.removeItem(STORAGE_KEY);
      return null;
    }
    return session;
  } catch {
    return null;
  }
}

export const sessionState = readonly(state);

export function hasRole(role: Role): boolean {
  const session = state.session;
  return session !== null && ROLE_ORDER.indexOf(session.role) >= ROLE_ORDER.indexOf(role);
}

/** Whether the caller may take an audited action (e.g. "models.pull"), as /v1/me said. */
export function can(action: string): boolean {
  return state.session?.actions?.includes(action) ?? false;
}

/** How this deployment takes files, as /v1/me said at sign-in (none known: batches). */
export function uploadPaths(): UploadPaths | null {
  return state.session?.uploads ?? null;
}

export function onSessionEnd(listener: (reason: EndReason) => void): void {
  listeners.push(listener);
}

export function endSession(reason: EndReason): void {
  if (state.session === null) return;
  state.session = null;
  state.ended = reason;
  sessionStorage.removeItem(STORAGE_KEY);
  clearTimeout(expiryTimer);
  for (const listener of listeners) listener(reason);
}

function armExpiry(session: Session): void {
  clearTimeout(expiryTimer);
  if (session.expiresAt === null) return;
  // setTimeout's delay is a 32-bit int: a far expiry is re-armed later rather than overflowing.
  const delay = Math.min(session.expiresAt - Date.now(), 2 ** 31 - 1);
  expiryTimer = setTimeout(() => {
    if (state.session && state.session.expiresAt !== null && state.session.expiresAt <= Date.now()) {
      endSession({ kind: "expired" });
    } else if (state.session) {
      armExpiry(state.session);
    }
  }, Math.max(0, delay));
}

export interface Claims {
  exp?: unknown;
}

/** The claims of a JWT, unverified, or null when the text is not a JWT (only its expiry is
 * read: who the caller is comes from the server's /v1/me). */
export function decodeJwt(token: string): Claims | null {
  const parts = token.split(".");
  if (parts.length !== 3) return null;
  try {
    const base64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
    const padded = base64 + "=".repeat((4 - (base64.length % 4)) % 4);
    const bytes = Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes)) as unknown;
    return claims !== null && typeof claims === "object" ? (claims as Claims) : null;
  } catch {
    return null;
  }
}

/** The highest role of a caller: the operator only when the server says so (the role in a
 * credential of a non-operator tenant grants nothing). */
export function highestRole(me: Me): Role {
  if (me.operator) return "operator";
  const found = me.roles.filter((r): r is Role => r !== "operator" && ROLE_ORDER.includes(r as Role));
  if (found.length === 0) return "viewer";
  return found.reduce((best, r) => (ROLE_ORDER.indexOf(r) > ROLE_ORDER.indexOf(best) ? r : best));
}

/** Checks the credential against the API (GET /v1/me: who the verified caller is and what they
 * may do) and keeps it for this tab; throws ApiError (with the server's reason) when refused. */
export async function signIn(input: string): Promise<Session> {
  const credential = input.trim().replace(/^bearer\s+/i, "");
  const me = await api<Me>("GET", "/v1/me", { credential, keepSessionOn401: true });
  const claims = credential.startsWith("km_") ? null : decodeJwt(credential);
  const exp = claims && typeof claims.exp === "number" ? claims.exp * 1000 : null;
  const session: Session = {
    credential,
    kind: me.api_key_id ? "api-key" : "token",
    tenant: me.tenant_id,
    user: me.user_id,
    role: highestRole(me),
    operator: me.operator,
    actions: [...me.actions],
    uploads: me.uploads,
    expiresAt: exp,
  };
  state.session = session;
  state.ended = null;
  sessionStorage.setItem(STORAGE_KEY, JSON.stringify(session));
  armExpiry(session);
  return session;
}

export function signOut(): void {
  endSession({ kind: "signed-out" });
}

configureClient({
  credential: () => state.session?.credential ?? null,
  unauthorized: (detail) => endSession({ kind: "refused", detail }),
});
if (state.session) armExpiry(state.session);
