import { flushPromises, mount } from "@vue/test-utils";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { AuditRecord } from "../src/api/types";
import App from "../src/App.vue";
import AuditPage from "../src/pages/AuditPage.vue";
import { createConsoleRouter } from "../src/router";
import { endSession, signIn } from "../src/session";
import { fakeJwt, json, problem, standIn, testI18n, type StandIn } from "./standin";

function record(id: number, extra: Partial<AuditRecord> = {}): AuditRecord {
  return {
    id,
    at: "2026-12-07T01:00:00Z",
    tenant_id: "acme",
    subject: "alice",
    key_id: null,
    roles: ["admin"],
    action: "api_keys.create",
    target: null,
    method: "POST",
    path: "/v1/api-keys",
    status: 201,
    outcome: "succeeded",
    request_id: `req-${id}`,
    ...extra,
  };
}

let server: StandIn;

beforeEach(() => {
  server = standIn();
});

afterEach(() => {
  endSession({ kind: "signed-out" });
  vi.unstubAllGlobals();
});

const mountPage = () => mount(AuditPage, { global: { plugins: [testI18n()] } });
const auditCalls = () => server.calls.filter((c) => c.path === "/v1/audit").map((c) => c.query);

describe("the audit page", () => {
  it("shows a tenant's admin their records, filters them and pages by the server's cursor", async () => {
    // Page 1 (newest) ends at cursor 7; page 2 is the last.
    server.on("GET", "/v1/audit", ({ url }) =>
      url.searchParams.get("cursor") === "7"
        ? json({ items: [record(6, { action: "documents.delete", target: "d1" })], next_cursor: null })
        : json({ items: [record(9), record(8, { outcome: "refused", action: "models.delete", status: 403 })], next_cursor: 7 }),
    );
    await signIn(fakeJwt({ tenant_id: "acme", roles: ["admin"] }));
    const wrapper = mountPage();
    await flushPromises();
    const rows = () => wrapper.findAll("[data-testid=audit-table] tbody tr");
    expect(rows().map((r) => r.attributes("data-outcome"))).toEqual(["succeeded", "refused"]);
    expect(rows()[1].text()).toContain("models.delete");
    expect(rows()[1].text()).toContain("refused");
    // An admin names no tenant: the tenant filter is the operator's.
    expect(wrapper.find("[data-testid=audit-tenant]").exists()).toBe(false);

    await wrapper.get("[data-testid=audit-older]").trigger("click");
    await flushPromises();
    expect(rows()).toHaveLength(1);
    expect(rows()[0].text()).toContain("documents.delete");
    expect(wrapper.get("[data-testid=audit-older]").attributes("disabled")).toBeDefined();
    await wrapper.get("[data-testid=audit-newer]").trigger("click");
    await flushPromises();
    expect(rows()).toHaveLength(2);
    expect(auditCalls().map((q) => q.cursor)).toEqual([undefined, "7", undefined]);

    await wrapper.get("[data-testid=audit-action]").setValue("models.delete");
    await wrapper.get("[data-testid=audit-outcome]").setValue("refused");
    await wrapper.get("[data-testid=audit-filters]").trigger("submit");
    await flushPromises();
    expect(auditCalls().at(-1)).toEqual({ limit: "50", action: "models.delete", outcome: "refused" });
    wrapper.unmount();
  });

  it("lets the operator read one tenant's records", async () => {
    server.on("GET", "/v1/audit", () => json({ items: [record(3, { tenant_id: "globex" })], next_cursor: null }));
    await signIn(fakeJwt({ tenant_id: "platform", roles: ["operator"] }));
    const wrapper = mountPage();
    await flushPromises();
    expect(wrapper.get("[data-testid=audit-table]").text()).toContain("globex");
    await wrapper.get("[data-testid=audit-tenant]").setValue("globex");
    await wrapper.get("[data-testid=audit-filters]").trigger("submit");
    await flushPromises();
    expect(auditCalls().at(-1)).toMatchObject({ tenant: "globex" });
    wrapper.unmount();
  });

  it("shows the server's refusal in words", async () => {
    server.on("GET", "/v1/audit", () => problem(403, "reading another tenant's audit log needs the platform operator"));
    await signIn(fakeJwt({ tenant_id: "acme", roles: ["admin"] }));
    const wrapper = mountPage();
    await flushPromises();
    expect(wrapper.get("[role=alert]").text()).toContain("reading another tenant's audit log needs the platform operator");
    expect(wrapper.find("[data-testid=audit-empty]").exists()).toBe(false);
    wrapper.unmount();
  });

  it("is in zh as well", async () => {
    server.on("GET", "/v1/audit", () => json({ items: [record(1, { outcome: "refused" })], next_cursor: null }));
    await signIn(fakeJwt({ tenant_id: "acme", roles: ["admin"] }));
    const wrapper = mount(AuditPage, { global: { plugins: [testI18n("zh")] } });
    await flushPromises();
    expect(wrapper.get("h1").text()).toBe("审计日志");
    expect(wrapper.get("[data-testid=audit-table] tbody").text()).toContain("被拒绝");
    wrapper.unmount();
  });

  it("is offered to admins only: in the menu and by the router", async () => {
    server.on("GET", "/v1/audit", () => json({ items: [], next_cursor: null }));
    server.on("GET", "/v1/documents", () => json([]));
    for (const [roles, offered] of [[["editor"], false], [["admin"], true]] as const) {
      await signIn(fakeJwt({ tenant_id: "acme", roles: [...roles] }));
      const router = createConsoleRouter();
      await router.push("/audit");
      const wrapper = mount(App, { global: { plugins: [testI18n(), router], stubs: { RouterView: true } } });
      await flushPromises();
      expect(wrapper.find("nav a[href='/audit']").exists()).toBe(offered);
      expect(wrapper.get("[data-testid=who]").text()).toBe(`acme · ${roles[0]}`);
      expect(router.currentRoute.value.name).toBe(offered ? "audit" : "documents");
      wrapper.unmount();
      endSession({ kind: "signed-out" });
    }
  });
});
