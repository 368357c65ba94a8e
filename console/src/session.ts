// Who is signed in, kept in sessionStorage only: the credential lives as long as the tab.
// A JWT's roles and expiry are read from its claims (the server verifies it; the console only
// uses them to hide what the role may not do). An API key carries no claims, so its role is
// found by asking the API what it allows.
import { reactive, readonly } from "vue";
import { api, ApiError, configureClient } from "./api/client";
import type { Role } from "./api/types";

const STORAGE_KEY = "kubemate.session";
const ROLE_ORDER: Role[] = ["viewer", "editor", "admin"];

export interface Session {
  credential: string;
  kind: "token" | "api-key";
  tenant: string | null;
  user: string | null;
  role: Role;
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
  tenant_id?: unknown;
  sub?: unknown;
  roles?: unknown;
  exp?: unknown;
}

/** The claims of a JWT, unverified, or null when the text is not a JWT. */
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

/** The highest role a token's `roles` claim grants (a list, or space-separated), or null. */
export function roleOfClaims(claims: Claims): Role | null {
  const raw = typeof claims.roles === "string" ? claims.roles.split(/\s+/) : claims.roles;
  if (!Array.isArray(raw)) return null;
  const found = raw.filter((r): r is Role => ROLE_ORDER.includes(r as Role));
  if (found.length === 0) return null;
  return found.reduce((best, r) => (ROLE_ORDER.indexOf(r) > ROLE_ORDER.indexOf(best) ? r : best));
}

async function allowed(path: string, credential: string): Promise<boolean> {
  try {
    await api("GET", path, { credential, keepSessionOn401: true });
    return true;
  } catch (error) {
    if (error instanceof ApiError && error.status === 403) return false;
    throw error;
  }
}

/** The role of a credential the claims do not describe: the API answers what it may do
 * (API keys are admin-only to list; dead letters are for editors). */
async function probeRole(credential: string): Promise<Role> {
  if (await allowed("/v1/api-keys", credential)) return "admin";
  if (await allowed("/v1/dead-letters?limit=1", credential)) return "editor";
  return "viewer";
}

/** Checks the credential against the API and keeps it for this tab; throws ApiError (with the
 * server's reason) when it is refused. */
export async function signIn(input: string): Promise<Session> {
  const credential = input.trim().replace(/^bearer\s+/i, "");
  const claims = credential.startsWith("km_") ? null : decodeJwt(credential);
  // Any authenticated read proves the credential; a viewer may list documents.
  await api("GET", "/v1/documents", { credential, query: { limit: 1 }, keepSessionOn401: true });
  const exp = claims && typeof claims.exp === "number" ? claims.exp * 1000 : null;
  const session: Session = {
    credential,
    kind: claims ? "token" : "api-key",
    tenant: claims && typeof claims.tenant_id === "string" ? claims.tenant_id : null,
    user: claims && typeof claims.sub === "string" ? claims.sub : null,
    role: (claims && roleOfClaims(claims)) ?? (await probeRole(credential)),
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
