import { flushPromises, mount } from "@vue/test-utils";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { createMemoryHistory, createRouter } from "vue-router";
import { pageOf } from "../src/documents/chunks";
import DocumentPage from "../src/pages/DocumentPage.vue";
import { endSession, signIn } from "../src/session";
import { fakeJwt, json, problem, standIn, testI18n, type StandIn } from "./standin";

const DOC = {
  document_id: "d1",
  collection: "default",
  filename: "annual report.pdf",
  content_type: "application/pdf",
  size_bytes: 2048,
  sha256: "ab".repeat(32),
  status: "COMPLETED",
  chunk_count: 45,
  created_at: "2026-12-07T01:00:00Z",
  task_id: "t1",
};

function chunkPage(offset: number, limit: number, total = 45) {
  const items = Array.from({ length: Math.max(0, Math.min(limit, total - offset)) }, (_, i) => {
    const index = offset + i;
    return { chunk_id: `c${index}`, index, page: Math.floor(index / 5) + 1, text: `Passage number ${index}.` };
  });
  return { document_id: "d1", total, offset, limit, items };
}

let server: StandIn;

async function open(path: string) {
  const router = createRouter({ history: createMemoryHistory(), routes: [{ path: "/documents/:id", component: DocumentPage }, { path: "/:any(.*)*", component: { template: "<div />" } }] });
  await router.push(path);
  const wrapper = mount({ template: "<RouterView />" }, { global: { plugins: [testI18n(), router] }, attachTo: document.body });
  await flushPromises();
  return wrapper;
}

beforeEach(async () => {
  server = standIn();
  server.on("GET", "/v1/documents/d1", () => json(DOC));
  server.on("GET", "/v1/documents", () => json([])); // the sign-in check
  server.on("GET", "/v1/documents/d1/chunks", ({ url }) => json(chunkPage(Number(url.searchParams.get("offset")), Number(url.searchParams.get("limit")))));
  await signIn(fakeJwt({ tenant_id: "acme", roles: ["viewer"] }));
  HTMLElement.prototype.scrollIntoView ??= function () {};
});

afterEach(() => {
  endSession({ kind: "signed-out" });
  document.body.innerHTML = "";
  vi.unstubAllGlobals();
});

describe("a document's page", () => {
  it("pages through its chunks in reading order", async () => {
    const wrapper = await open("/documents/d1");
    const texts = () => wrapper.findAll("[data-testid=chunks] .chunk-text").map((c) => c.text());
    expect(texts()).toHaveLength(20);
    expect(texts()[0]).toBe("Passage number 0.");
    expect(wrapper.text()).toContain("Chunks 1–20 of 45, in reading order.");
    expect(wrapper.get("[data-testid=chunks] .chunk-meta").text()).toContain("Chunk 1 · page 1");
    expect(wrapper.get("[data-testid=document-task]").text()).toBe("t1");

    const next = wrapper.findAll("nav.pager button").at(-1)!;
    await next.trigger("click");
    await flushPromises();
    expect(texts()[0]).toBe("Passage number 20.");
    expect(wrapper.text()).toContain("2 / 3");
    const calls = server.calls.filter((c) => c.path === "/v1/documents/d1/chunks").map((c) => c.query);
    expect(calls).toEqual([{ offset: "0", limit: "20" }, { offset: "20", limit: "20" }]);
    wrapper.unmount();
  });

  it("opens at a citation: the page of chunks holding it, the chunk marked and focused", async () => {
    const wrapper = await open("/documents/d1?chunk=c41&at=41&page=9");
    expect(server.calls.find((c) => c.path === "/v1/documents/d1/chunks")?.query.offset).toBe("40");
    const focused = wrapper.get(".chunk.focused");
    expect(focused.attributes("data-chunk")).toBe("c41");
    expect(focused.text()).toContain("Chunk 42 · page 9");
    expect(document.activeElement).toBe(focused.element);
    expect(wrapper.get("[data-testid=cited-page]").text()).toBe("Cited from page 9 of the file.");
    wrapper.unmount();
  });

  it("downloads the file under its own name", async () => {
    server.on("GET", "/v1/documents/d1/file", () => new Response(new Blob(["%PDF-1.7"]), { status: 200, headers: { "Content-Type": "application/pdf" } }));
    const created: Blob[] = [];
    vi.stubGlobal("URL", Object.assign(URL, { createObjectURL: (blob: Blob) => (created.push(blob), "blob:x"), revokeObjectURL: () => {} }));
    const clicked: string[] = [];
    const click = vi.spyOn(HTMLAnchorElement.prototype, "click").mockImplementation(function (this: HTMLAnchorElement) {
      clicked.push(this.download);
    });
    const wrapper = await open("/documents/d1");
    await wrapper.get("[data-testid=download]").trigger("click");
    await flushPromises();
    expect(clicked).toEqual(["annual report.pdf"]);
    expect(await created[0].text()).toBe("%PDF-1.7");
    const call = server.calls.find((c) => c.path === "/v1/documents/d1/file");
    expect(call?.headers.Authorization).toMatch(/^Bearer /);
    click.mockRestore();
    wrapper.unmount();
  });

  it("says why the file could not be read", async () => {
    server.on("GET", "/v1/documents/d1/file", () => problem(404, "document d1 not found"));
    const wrapper = await open("/documents/d1");
    await wrapper.get("[data-testid=download]").trigger("click");
    await flushPromises();
    expect(wrapper.get("[role=alert]").text()).toContain("document d1 not found");
    wrapper.unmount();
  });

  it("finds a chunk's page", () => {
    expect([0, 19, 20, 41].map((p) => pageOf(p, 20))).toEqual([0, 0, 1, 2]);
    expect(() => pageOf(3, 0)).toThrow(RangeError);
  });
});
