import { flushPromises, mount } from "@vue/test-utils";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { createMemoryHistory, createRouter } from "vue-router";
import type { Task } from "../src/api/types";
import TaskStatus from "../src/components/TaskStatus.vue";
import { TaskTracker } from "../src/documents/tracker";
import DocumentsPage from "../src/pages/DocumentsPage.vue";
import { endSession, signIn } from "../src/session";
import { fakeJwt, json, problem, sse, standIn, testI18n, type StandIn } from "./standin";

function task(state: string, extra: Partial<Task> = {}): Task {
  return { task_id: "t1", document_id: "d1", state, stage: state.toLowerCase(), progress: { done: 0, total: 0 }, error: null, attempts: 1, ...extra };
}

function router() {
  return createRouter({ history: createMemoryHistory(), routes: [{ path: "/:any(.*)*", component: { template: "<div />" } }] });
}

let server: StandIn;

beforeEach(() => {
  server = standIn();
});

afterEach(() => {
  endSession({ kind: "signed-out" });
  vi.unstubAllGlobals();
});

describe("a document's processing", () => {
  const mountStatus = (props: { state: string; task?: Task; chunks?: number }, locale: "en" | "zh" = "en") =>
    mount(TaskStatus, { props, global: { plugins: [testI18n(locale)] } });

  it("names the stage, with embedding done/total", () => {
    const wrapper = mountStatus({ state: "PENDING", task: task("EMBEDDING", { progress: { done: 3, total: 12 } }) });
    expect(wrapper.text()).toContain("Embedding 3/12");
    expect(wrapper.get("progress").attributes("value")).toBe("25");
    expect(mountStatus({ state: "SPLITTING" }).text()).toContain("Splitting");
    expect(mountStatus({ state: "PENDING", task: task("EMBEDDING", { progress: { done: 1, total: 4 } }) }, "zh").text()).toContain("向量化中 1/4");
  });

  it("shows COMPLETED with the chunk count, FAILED with the reason", () => {
    expect(mountStatus({ state: "COMPLETED", chunks: 7 }).text()).toBe("Completed7 chunks");
    const failed = mountStatus({ state: "FAILED", task: task("FAILED", { stage: "parsing", error: "the PDF is encrypted" }) });
    expect(failed.get("[data-testid=failure-reason]").text()).toBe("While Parsing: the PDF is encrypted");
  });
});

describe("following tasks", () => {
  it("reads the task's event stream to its end", async () => {
    server.on("GET", "/v1/tasks/t1/events", () =>
      sse([
        { event: "task", data: task("PARSING") },
        { event: "task", data: task("EMBEDDING", { progress: { done: 2, total: 4 } }) },
        { event: "task", data: task("COMPLETED", { progress: { done: 4, total: 4 } }) },
      ]),
    );
    const settled: Task[] = [];
    const tracker = new TaskTracker({ onSettled: (t) => settled.push(t) });
    tracker.follow("t1", task("PENDING"));
    await vi.waitFor(() => expect(settled).toHaveLength(1));
    expect(tracker.get("t1")?.state).toBe("COMPLETED");
    tracker.stop();
  });

  it("opens at most a few streams and polls the task list for the rest", async () => {
    let open = 0;
    let most = 0;
    const release: (() => void)[] = [];
    server.on("GET", "/v1/tasks", () => json([task("COMPLETED", { task_id: "t4" })]));
    for (const id of ["t1", "t2", "t3", "t4"]) {
      server.on("GET", `/v1/tasks/${id}/events`, async () => {
        open += 1;
        most = Math.max(most, open);
        await new Promise<void>((resolve) => release.push(resolve));
        open -= 1;
        return sse([{ event: "task", data: task("COMPLETED", { task_id: id }) }]);
      });
    }
    const tracker = new TaskTracker({ maxStreams: 3, pollMs: 10 });
    for (const id of ["t1", "t2", "t3", "t4"]) tracker.follow(id, task("PENDING", { task_id: id }));
    await vi.waitFor(() => expect(tracker.get("t4")?.state).toBe("COMPLETED"));
    expect(most).toBe(3);
    release.forEach((resolve) => resolve());
    await vi.waitFor(() => expect(tracker.get("t1")?.state).toBe("COMPLETED"));
    tracker.stop();
  });
});

describe("the documents page", () => {
  it("uploads dropped files in one batch and shows each one's fate", async () => {
    server.on("GET", "/v1/documents", () => json([]));
    server.on("GET", "/v1/models", () => json({ data: [{ id: "kb-default", name: "kb-default", runtime: "retrieval", owned_by: "kubemate", role: "knowledge", collection: "default" }], unavailable: {} }));
    server.on("POST", "/v1/documents/batch", () =>
      json(
        {
          accepted: 1,
          refused: 1,
          results: [
            { filename: "report.md", status: 202, document_id: "d1", task_id: "t1", state: "PENDING", duplicate: false },
            { filename: "tool.exe", status: 415, problem: { type: "x", title: "Unsupported media type", status: 415, detail: "unsupported file type: application/x-dosexec" } },
          ],
        },
        202,
      ),
    );
    server.on("GET", "/v1/tasks/t1/events", () => sse([{ event: "task", data: task("COMPLETED") }]));
    server.on("GET", "/v1/documents/d1", () =>
      json({ document_id: "d1", collection: "default", filename: "report.md", content_type: "text/markdown", size_bytes: 10, sha256: "0", status: "COMPLETED", chunk_count: 3 }),
    );
    await signIn(fakeJwt({ tenant_id: "acme", roles: ["editor"] }));
    const wrapper = mount(DocumentsPage, { global: { plugins: [testI18n(), router()] } });
    await flushPromises();

    const files = [new File(["# Report"], "report.md", { type: "text/markdown" }), new File(["MZ"], "tool.exe")];
    const dropzone = wrapper.get("[data-testid=dropzone]");
    await dropzone.trigger("drop", { dataTransfer: { files } });
    await vi.waitFor(() => expect(wrapper.text()).toContain("3 chunks"));

    const batch = server.calls.find((c) => c.path === "/v1/documents/batch");
    const form = batch?.body as FormData;
    expect(form.getAll("files").map((f) => (f as File).name)).toEqual(["report.md", "tool.exe"]);
    expect(form.get("collection")).toBe("default");
    const refused = wrapper.get("[data-filename='tool.exe']");
    expect(refused.text()).toContain("Refused");
    expect(refused.text()).toContain("unsupported file type: application/x-dosexec");
    wrapper.unmount();
  });

  it("shows why a document failed and queues it again from its dead letter", async () => {
    const doc = { document_id: "d1", collection: "default", filename: "scan.pdf", content_type: "application/pdf", size_bytes: 9, sha256: "0", status: "FAILED", chunk_count: 0, task_id: "t1" };
    server.on("GET", "/v1/documents", () => json([doc]));
    server.on("GET", "/v1/models", () => json({ data: [], unavailable: {} }));
    // The row names its latest task: its stream says why it failed, no task list is read.
    server.on("GET", "/v1/tasks/t1/events", () => sse([{ event: "task", data: task("FAILED", { stage: "parsing", error: "the PDF has no text layer (scanned?)" }) }]));
    server.on("GET", "/v1/dead-letters", ({ url }) =>
      url.searchParams.get("cursor")
        ? json({ items: [{ entry_id: "9-0", document_id: "d1", task_id: "t1", collection: "default", reason: "x", stage: "parsing", attempts: 3, failed_at: null }], next_cursor: null })
        : json({ items: [{ entry_id: "8-0", document_id: "other", task_id: "t0", collection: "default", reason: "x", stage: "parsing", attempts: 3, failed_at: null }], next_cursor: "8-0" }),
    );
    server.on("POST", "/v1/dead-letters/9-0/retry", () => json({ document_id: "d1", task_id: "t2", state: "PENDING", entry_id: "10-0" }, 202));
    server.on("GET", "/v1/tasks/t2/events", () => sse([{ event: "task", data: task("EMBEDDING", { task_id: "t2", progress: { done: 1, total: 2 } }) }]));
    await signIn(fakeJwt({ tenant_id: "acme", roles: ["editor"] }));
    const wrapper = mount(DocumentsPage, { global: { plugins: [testI18n(), router()] } });
    await vi.waitFor(() => expect(wrapper.text()).toContain("the PDF has no text layer (scanned?)"));
    const row = wrapper.get("[data-testid=documents-table] tr[data-filename='scan.pdf']");
    expect(row.text()).toContain("While Parsing:");
    await row.get("button:not(.danger)").trigger("click");
    await vi.waitFor(() => expect(wrapper.get("[data-testid=documents-table] tr[data-filename='scan.pdf']").text()).toContain("Embedding 1/2"));
    expect(server.calls.filter((c) => c.path === "/v1/dead-letters")).toHaveLength(2); // paged to find it
    expect(server.calls.map((c) => c.path)).not.toContain("/v1/tasks");
    wrapper.unmount();
  });

  it("filters on the server and shows the total, the upload time and the task", async () => {
    const doc = { document_id: "d1", collection: "default", filename: "q3-report.pdf", content_type: "application/pdf", size_bytes: 9, sha256: "0", status: "COMPLETED", chunk_count: 4, created_at: "2026-12-07T01:02:03Z", task_id: "0123456789abcdef" };
    server.on("GET", "/v1/documents", () => json([doc], 200, { "X-Total-Count": "137" }));
    server.on("GET", "/v1/models", () => json({ data: [], unavailable: {} }));
    await signIn(fakeJwt({ tenant_id: "acme", roles: ["viewer"] }));
    const wrapper = mount(DocumentsPage, { global: { plugins: [testI18n(), router()] } });
    await flushPromises();
    expect(wrapper.get("[data-testid=documents-total]").text()).toBe("137 documents");
    const row = wrapper.get("[data-testid=documents-table] tr[data-filename='q3-report.pdf']");
    expect(row.get("time").attributes("datetime")).toBe("2026-12-07T01:02:03Z");
    expect(row.text()).toContain("01234567");
    expect(wrapper.text()).toContain("1 / 2");

    await wrapper.get("[data-testid=filter-status]").setValue("FAILED");
    await flushPromises();
    await wrapper.get("[data-testid=filter-name]").setValue("  report ");
    await wrapper.get("form.filters").trigger("submit");
    await flushPromises();
    const last = server.calls.filter((c) => c.path === "/v1/documents").at(-1)!;
    expect(last.query).toEqual({ status: "FAILED", name: "report", limit: "100", offset: "0" });
    wrapper.unmount();
  });

  it("hides uploads and deletes from a viewer", async () => {
    server.on("GET", "/v1/documents", () =>
      json([{ document_id: "d1", collection: "default", filename: "a.txt", content_type: "text/plain", size_bytes: 3, sha256: "0", status: "COMPLETED", chunk_count: 1 }]),
    );
    server.on("GET", "/v1/models", () => problem(500, "down"));
    await signIn(fakeJwt({ tenant_id: "acme", roles: ["viewer"] }));
    const wrapper = mount(DocumentsPage, { global: { plugins: [testI18n(), router()] } });
    await flushPromises();
    expect(wrapper.find("[data-testid=dropzone]").exists()).toBe(false);
    expect(wrapper.text()).toContain("a.txt");
    expect(wrapper.text()).not.toContain("Delete");
    wrapper.unmount();
  });

  it("offers what /v1/me's actions allow, not what the role's name suggests", async () => {
    // An editor whose actions, as the server computes them, lack uploads and retries (a
    // narrower table than the console knows): the page follows the server, action by action.
    const failed = { document_id: "d1", collection: "default", filename: "scan.pdf", content_type: "application/pdf", size_bytes: 9, sha256: "0", status: "FAILED", chunk_count: 0, task_id: "t1" };
    server.on("GET", "/v1/documents", () => json([failed]));
    server.on("GET", "/v1/models", () => json({ data: [], unavailable: {} }));
    server.on("GET", "/v1/tasks/t1/events", () => sse([{ event: "task", data: task("FAILED", { stage: "parsing", error: "no text layer" }) }]));
    server.on("GET", "/v1/me", () =>
      json({ tenant_id: "acme", user_id: "u", roles: ["editor"], operator: false, api_key_id: null, actions: ["documents.delete"] }),
    );
    await signIn(fakeJwt({ tenant_id: "acme", roles: ["editor"] }));
    const wrapper = mount(DocumentsPage, { global: { plugins: [testI18n(), router()] } });
    await vi.waitFor(() => expect(wrapper.text()).toContain("no text layer"));
    const row = wrapper.get("[data-testid=documents-table] tr[data-filename='scan.pdf']");
    expect(wrapper.find("[data-testid=dropzone]").exists()).toBe(false);
    expect(row.findAll("button").map((b) => b.attributes("aria-label"))).toEqual(["Delete scan.pdf"]);
    wrapper.unmount();
  });

  it("shows why the list could not be read", async () => {
    server.on("GET", "/v1/documents", () => problem(429, "too many requests from this tenant: retry later", { "Retry-After": "4" }));
    server.on("GET", "/v1/models", () => json({ data: [], unavailable: {} }));
    const wrapper = mount(DocumentsPage, { global: { plugins: [testI18n(), router()] } });
    await flushPromises();
    expect(wrapper.get("[role=alert]").text()).toContain("Try again in 4 s.");
    wrapper.unmount();
  });
});
