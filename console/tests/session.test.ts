import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { api, ApiError } from "../src/api/client";
import { decodeJwt, endSession, hasRole, roleOfClaims, sessionState, signIn } from "../src/session";
import { fakeJwt, json, problem, standIn, type StandIn } from "./standin";

let server: StandIn;

beforeEach(() => {
  server = standIn();
  server.on("GET", "/v1/documents", () => json([]));
});

afterEach(() => {
  endSession({ kind: "signed-out" });
  sessionStorage.clear();
  vi.useRealTimers();
  vi.unstubAllGlobals();
});

describe("claims", () => {
  it("reads a token's claims and its highest role", () => {
    const claims = decodeJwt(fakeJwt({ tenant_id: "acme", roles: ["viewer", "editor"] }));
    expect(claims?.tenant_id).toBe("acme");
    expect(roleOfClaims(claims!)).toBe("editor");
    expect(roleOfClaims({ roles: "viewer admin" })).toBe("admin");
    expect(roleOfClaims({ roles: ["owner"] })).toBeNull();
    expect(decodeJwt("km_0123456789abcdef_secret")).toBeNull();
  });
});

describe("sign-in", () => {
  it("keeps a token for the tab only, with its tenant, role and expiry", async () => {
    const exp = Math.floor(Date.now() / 1000) + 3600;
    const token = fakeJwt({ tenant_id: "acme", sub: "alice", roles: ["editor"], exp });
    const session = await signIn(`Bearer ${token}`);
    expect(session).toMatchObject({ kind: "token", tenant: "acme", user: "alice", role: "editor", expiresAt: exp * 1000 });
    expect(hasRole("editor")).toBe(true);
    expect(hasRole("admin")).toBe(false);
    expect(JSON.parse(sessionStorage.getItem("kubemate.session")!).credential).toBe(token);
    expect(localStorage.getItem("kubemate.session")).toBeNull();
    expect(server.calls[0].headers.Authorization).toBe(`Bearer ${token}`);
  });

  it("asks the API what an API key may do", async () => {
    server.on("GET", "/v1/api-keys", () => problem(403, "this action needs the admin role"));
    server.on("GET", "/v1/dead-letters", () => json({ items: [], next_cursor: null }));
    const session = await signIn("km_0123456789abcdef_" + "s".repeat(43));
    expect(session.kind).toBe("api-key");
    expect(session.role).toBe("editor");
  });

  it("refuses a credential the server refuses, with the server's reason", async () => {
    server.on("GET", "/v1/documents", () => problem(401, "token has expired"));
    await expect(signIn(fakeJwt({ tenant_id: "acme" }))).rejects.toMatchObject({ status: 401, detail: "token has expired" });
    expect(sessionState.session).toBeNull();
  });

  it("ends the session with the reason when the API later answers 401", async () => {
    await signIn(fakeJwt({ tenant_id: "acme", roles: ["admin"] }));
    server.on("GET", "/v1/tasks", () => problem(401, "the API key was revoked"));
    await expect(api("GET", "/v1/tasks")).rejects.toBeInstanceOf(ApiError);
    expect(sessionState.session).toBeNull();
    expect(sessionState.ended).toEqual({ kind: "refused", detail: "the API key was revoked" });
    expect(sessionStorage.getItem("kubemate.session")).toBeNull();
  });

  it("ends the session when the token expires", async () => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "Date"] });
    const exp = Math.floor(Date.now() / 1000) + 60;
    await signIn(fakeJwt({ tenant_id: "acme", roles: ["viewer"], exp }));
    vi.advanceTimersByTime(61_000);
    expect(sessionState.session).toBeNull();
    expect(sessionState.ended).toEqual({ kind: "expired" });
  });
});
