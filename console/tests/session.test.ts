import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { api, ApiError } from "../src/api/client";
import { can, decodeJwt, endSession, hasRole, highestRole, sessionState, signIn } from "../src/session";
import { fakeJwt, json, meOf, problem, standIn, type StandIn } from "./standin";

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

describe("the caller", () => {
  it("is an operator only when the server says so", () => {
    expect(decodeJwt(fakeJwt({ exp: 5 }))?.exp).toBe(5);
    expect(decodeJwt("km_0123456789abcdef_secret")).toBeNull();
    expect(highestRole({ ...meOf({ roles: ["viewer", "editor"] }) })).toBe("editor");
    expect(highestRole({ ...meOf({ roles: ["operator", "admin"], tenant_id: "platform" }) })).toBe("operator");
    // The operator role in another tenant's credential grants nothing more than its other roles.
    expect(highestRole({ ...meOf({ roles: ["admin"] }), roles: ["operator", "admin"], operator: false })).toBe("admin");
    expect(highestRole({ ...meOf({ roles: [] }), roles: ["owner"] })).toBe("viewer");
  });
});

describe("sign-in", () => {
  it("keeps a token for the tab only, with its tenant, role and expiry", async () => {
    const exp = Math.floor(Date.now() / 1000) + 3600;
    const token = fakeJwt({ tenant_id: "acme", sub: "alice", roles: ["editor"], exp });
    const session = await signIn(`Bearer ${token}`);
    expect(session).toMatchObject({ kind: "token", tenant: "acme", user: "alice", role: "editor", operator: false, expiresAt: exp * 1000 });
    expect(hasRole("editor")).toBe(true);
    expect(hasRole("admin")).toBe(false);
    expect(can("reindex.start")).toBe(true);
    expect(can("models.pull")).toBe(false);
    expect(server.calls.map((c) => c.path)).toEqual(["/v1/me"]);
    expect(JSON.parse(sessionStorage.getItem("kubemate.session")!).credential).toBe(token);
    expect(localStorage.getItem("kubemate.session")).toBeNull();
    expect(server.calls[0].headers.Authorization).toBe(`Bearer ${token}`);
  });

  it("reads who an API key is from /v1/me, not from probing", async () => {
    server.on("GET", "/v1/me", () =>
      json({ tenant_id: "acme", user_id: "key:ci", roles: ["admin"], operator: false, api_key_id: "k1", actions: ["api_keys.create", "reindex.start"] }),
    );
    const session = await signIn("km_0123456789abcdef_" + "s".repeat(43));
    expect(session).toMatchObject({ kind: "api-key", tenant: "acme", role: "admin", operator: false, expiresAt: null });
    expect(can("api_keys.create")).toBe(true);
    expect(can("models.delete")).toBe(false);
    expect(server.calls.map((c) => c.path)).toEqual(["/v1/me"]);
  });

  it("knows the platform operator and what only the operator may do", async () => {
    await signIn(fakeJwt({ tenant_id: "platform", roles: ["operator", "admin"] }));
    expect(sessionState.session).toMatchObject({ role: "operator", operator: true });
    expect(hasRole("admin")).toBe(true);
    expect(can("models.pull")).toBe(true);
  });

  it("refuses a credential the server refuses, with the server's reason", async () => {
    server.on("GET", "/v1/me", () => problem(401, "token has expired"));
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
