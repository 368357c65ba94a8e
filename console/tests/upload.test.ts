import { flushPromises, mount } from "@vue/test-utils";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { createMemoryHistory, createRouter } from "vue-router";
import { batchShares, pathFor, planUploads } from "../src/documents/upload";
import DocumentsPage from "../src/pages/DocumentsPage.vue";
import { endSession, signIn } from "../src/session";
import { fakeJwt, json, meOf, problem, sse, standIn, testI18n, type StandIn } from "./standin";

const OFFERED = { presigned: true, presigned_min_bytes: 1000 };
const STORE = "https://objects.example.com";

describe("which way a file goes", () => {
  it("goes by presigned URL from the threshold, when offered and permitted", () => {
    expect(pathFor(999, OFFERED, true)).toBe("batch");
    expect(pathFor(1000, OFFERED, true)).toBe("presigned");
    expect(pathFor(10 ** 9, OFFERED, false)).toBe("batch"); // the caller may not
    expect(pathFor(10 ** 9, { ...OFFERED, presigned: false }, true)).toBe("batch"); // the filesystem store
    expect(pathFor(10 ** 9, null, true)).toBe("batch"); // a session from an older console
  });

  it("keeps the small files in batches of the server's size, in order", () => {
    const files = [5, 2000, 7, 8, 3000, 9].map((size, i) => ({ size, name: `f${i}` }));
    const plan = planUploads(files, OFFERED, true, 2);
    expect(plan.batches.map((b) => b.map((f) => f.name))).toEqual([["f0", "f2"], ["f3", "f5"]]);
    expect(plan.presigned.map((f) => f.name)).toEqual(["f1", "f4"]);
    expect(planUploads(files, null, true, 20).batches).toEqual([files]);
  });
});

describe("a batch's progress shared out to its files", () => {
  // Two files of 100 and 300 bytes in a body of 440: 20 bytes of part headers before each.
  const sizes = [100, 300];
  it.each([
    [0, [0, 0]],
    [20, [0, 0]],
    [70, [50, 0]],
    [120, [100, 0]],
    [140, [100, 0]],
    [290, [100, 150]],
    [439, [100, 299]],
    [440, [100, 300]],
  ])("at %i bytes sent", (loaded, expected) => {
    expect(batchShares(loaded, 440, sizes)).toEqual(expected);
  });

  it("never exceeds a file, and finishes every file with the body", () => {
    // A total smaller than the files (a browser that under-reports): clamped, still complete.
    expect(batchShares(150, 200, [100, 150])).toEqual([100, 50]);
    expect(batchShares(200, 200, [100, 150])).toEqual([100, 150]);
    expect(batchShares(10, 0, [])).toEqual([]);
  });
});

function router() {
  return createRouter({ history: createMemoryHistory(), routes: [{ path: "/:any(.*)*", component: { template: "<div />" } }] });
}

describe("the documents page with presigned uploads", () => {
  let server: StandIn;

  beforeEach(() => {
    server = standIn();
    server.on("GET", "/v1/documents", () => json([]));
    server.on("GET", "/v1/models", () => json({ data: [], unavailable: {} }));
    server.on("GET", "/v1/me", () => json(meOf({ tenant_id: "acme", roles: ["editor"] }, null, OFFERED)));
  });

  afterEach(() => {
    endSession({ kind: "signed-out" });
    vi.unstubAllGlobals();
  });

  async function dropOn(files: File[]) {
    await signIn(fakeJwt({ tenant_id: "acme", roles: ["editor"] }));
    const wrapper = mount(DocumentsPage, { global: { plugins: [testI18n(), router()] } });
    await flushPromises();
    await wrapper.get("[data-testid=dropzone]").trigger("drop", { dataTransfer: { files } });
    return wrapper;
  }

  it("sends a large file to the store, then completes it and follows its task", async () => {
    let releasePut: () => void = () => {};
    server.on("POST", "/v1/uploads", () =>
      json({ upload_id: "u1", url: `${STORE}/kubemate/tenants/acme/uploads/u1?X-Amz-Signature=s`, method: "PUT", expires_at: "2026-12-07T10:00:00Z", max_bytes: 10 ** 8, complete_url: "/v1/uploads/u1/complete" }, 201),
    );
    server.on("PUT", "/kubemate/tenants/acme/uploads/u1", async () => {
      await new Promise<void>((resolve) => (releasePut = resolve));
      return new Response(null, { status: 200 });
    });
    server.on("POST", "/v1/uploads/u1/complete", () => json({ document_id: "d9", task_id: "t9", state: "PENDING", duplicate: false }, 202));
    server.on("GET", "/v1/tasks/t9/events", () =>
      sse([
        { event: "task", data: { task_id: "t9", document_id: "d9", state: "EMBEDDING", stage: "embedding", progress: { done: 2, total: 8 }, error: null, attempts: 1 } },
      ]),
    );
    server.on("POST", "/v1/documents/batch", () =>
      json({ accepted: 1, refused: 0, results: [{ filename: "note.txt", status: 202, document_id: "d1", task_id: "t1", state: "COMPLETED", duplicate: true }] }, 202),
    );
    server.on("GET", "/v1/documents/d1", () => json({ document_id: "d1", chunk_count: 1 }));
    const wrapper = await dropOn([new File(["x".repeat(4000)], "big.txt", { type: "text/plain" }), new File(["small"], "note.txt")]);

    // Half the body sent: the row's bar says so in bytes.
    const big = () => wrapper.get("[data-filename='big.txt']");
    await vi.waitFor(() => expect(big().text()).toContain("Uploading 2"));
    expect(big().get("progress").attributes("value")).toBe("50");
    releasePut();
    await vi.waitFor(() => expect(big().text()).toContain("Embedding 2/8"));

    const put = server.calls.find((c) => c.method === "PUT")!;
    expect(put.origin).toBe(STORE);
    expect(put.headers.Authorization).toBeUndefined(); // the credential never goes to the store
    expect(put.headers["Content-Type"]).toBe("text/plain");
    expect((put.body as File).name).toBe("big.txt");
    const presign = server.calls.find((c) => c.path === "/v1/uploads")!;
    expect(presign.body).toEqual({ filename: "big.txt", size_bytes: 4000, collection: "default" });
    // The small file went in a batch, alone.
    const batch = server.calls.find((c) => c.path === "/v1/documents/batch")!;
    expect((batch.body as FormData).getAll("files").map((f) => (f as File).name)).toEqual(["note.txt"]);
    wrapper.unmount();
  });

  it("says in words when the store cannot be reached, and never completes", async () => {
    server.on("POST", "/v1/uploads", () =>
      json({ upload_id: "u2", url: `${STORE}/kubemate/u2`, method: "PUT", expires_at: "", max_bytes: 1, complete_url: "/v1/uploads/u2/complete" }, 201),
    );
    server.on("PUT", "/kubemate/u2", () => {
      throw new TypeError("CORS preflight refused");
    });
    const wrapper = await dropOn([new File(["x".repeat(2000)], "big.txt")]);
    await vi.waitFor(() => expect(wrapper.get("[data-filename='big.txt']").text()).toContain("could not be reached from this browser"));
    expect(server.calls.map((c) => c.path)).not.toContain("/v1/uploads/u2/complete");
    wrapper.unmount();
  });

  it("falls back to a batch when the deployment no longer offers presigned uploads", async () => {
    server.on("POST", "/v1/uploads", () =>
      new Response(JSON.stringify({ type: "https://kubemate.dev/problems/presigned-uploads-unsupported", title: "x", status: 400, detail: "filesystem" }), {
        status: 400,
        headers: { "Content-Type": "application/problem+json" },
      }),
    );
    server.on("POST", "/v1/documents/batch", () => json({ accepted: 0, refused: 1, results: [{ filename: "big.txt", status: 413, problem: { type: "x", title: "Too large", status: 413, detail: "the file is larger than the limit" } }] }, 202));
    const wrapper = await dropOn([new File(["x".repeat(2000)], "big.txt")]);
    await vi.waitFor(() => expect(wrapper.get("[data-filename='big.txt']").text()).toContain("the file is larger than the limit"));
    expect(server.calls.filter((c) => c.method === "PUT")).toHaveLength(0);
    wrapper.unmount();
  });

  it("shows the completion's refusal (the server checked the object)", async () => {
    server.on("POST", "/v1/uploads", () =>
      json({ upload_id: "u3", url: `${STORE}/kubemate/u3`, method: "PUT", expires_at: "", max_bytes: 1, complete_url: "/v1/uploads/u3/complete" }, 201),
    );
    server.on("PUT", "/kubemate/u3", () => new Response(null, { status: 200 }));
    server.on("POST", "/v1/uploads/u3/complete", () => problem(415, "unsupported file type: application/x-dosexec"));
    const wrapper = await dropOn([new File(["MZ".repeat(1000)], "tool.exe")]);
    await vi.waitFor(() => expect(wrapper.get("[data-filename='tool.exe']").text()).toContain("unsupported file type"));
    wrapper.unmount();
  });
});
