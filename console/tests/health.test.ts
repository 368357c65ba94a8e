import { flushPromises, mount } from "@vue/test-utils";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import HealthPage from "../src/pages/HealthPage.vue";
import { endSession, signIn } from "../src/session";
import { fakeJwt, json, standIn, testI18n, type StandIn } from "./standin";

const SUMMARY = {
  source: "services",
  unreachable: ["retrieval"],
  traffic: { request_rate: 12.5, error_rate: 0, p95_latency_ms: 48.2, vector_search_p95_ms: 3.1 },
  pipeline: { documents: { COMPLETED: 7, FAILED: 1 }, backlog: 4, dead_letters: 2 },
};

let server: StandIn;

beforeEach(() => {
  server = standIn();
  server.on("GET", "/readyz", () => json({ status: "ready", checks: { redis: "ok", database: "ok" } }));
  server.on("GET", "/v1/health/summary", () => json(SUMMARY));
  server.on("GET", "/v1/documents", () => json([])); // the sign-in check
});

afterEach(() => {
  endSession({ kind: "signed-out" });
  vi.unstubAllGlobals();
});

describe("the health page", () => {
  it("shows an admin the gateway's summary and where it comes from", async () => {
    await signIn(fakeJwt({ tenant_id: "acme", roles: ["admin"] }));
    const wrapper = mount(HealthPage, { global: { plugins: [testI18n()] } });
    await flushPromises();
    expect(wrapper.get("[data-testid=readiness]").text()).toBe("ready");
    expect(wrapper.get("[data-testid=request-rate]").text()).toBe("12.5");
    expect(wrapper.get("[data-testid=vector-p95]").text()).toBe("3.1");
    expect(wrapper.get("[data-testid=backlog]").text()).toBe("4");
    expect(wrapper.get("[data-testid=dead-letters]").text()).toBe("2");
    expect(wrapper.get("[data-testid=health-source]").text()).toContain("services' own /metrics");
    expect(wrapper.text()).toContain("Not answering: retrieval.");
    // The documents chart: 7 completed, 1 failed, in its table for screen readers too.
    expect(wrapper.get("figure.chart").text()).toContain("7");
    wrapper.unmount();
  });

  it("shows what is not known yet as a dash, not as zero", async () => {
    server.on("GET", "/v1/health/summary", () => json({ ...SUMMARY, source: "prometheus", unreachable: [], traffic: { request_rate: null, error_rate: null, p95_latency_ms: null, vector_search_p95_ms: null } }));
    await signIn(fakeJwt({ tenant_id: "acme", roles: ["admin"] }));
    const wrapper = mount(HealthPage, { global: { plugins: [testI18n()] } });
    await flushPromises();
    expect(wrapper.get("[data-testid=request-rate]").text()).toBe("–");
    expect(wrapper.get("[data-testid=health-source]").text()).toContain("Prometheus");
    wrapper.unmount();
  });

  it("does not ask for the summary for anyone but an admin", async () => {
    await signIn(fakeJwt({ tenant_id: "acme", roles: ["editor"] }));
    const wrapper = mount(HealthPage, { global: { plugins: [testI18n()] } });
    await flushPromises();
    expect(wrapper.text()).toContain("shown to admins");
    expect(server.calls.map((c) => c.path)).not.toContain("/v1/health/summary");
    wrapper.unmount();
  });
});
