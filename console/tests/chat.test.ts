import { flushPromises, mount } from "@vue/test-utils";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { createMemoryHistory, createRouter } from "vue-router";
import ChatPage from "../src/pages/ChatPage.vue";
import { endSession, signIn } from "../src/session";
import { chatAnswer, fakeJwt, json, problem, sse, standIn, testI18n, type StandIn } from "./standin";

const citation = {
  index: 1,
  document_id: "d1",
  chunk_id: "c9",
  source: "acme-2025.txt",
  title: "Acme annual report",
  page: 3,
  position: 41,
  score: 0.82,
  snippet: "The net interest margin of Acme Bank was 3.2 percent in 2025.",
  cited: true,
};

function done(extra: Record<string, unknown> = {}) {
  return chatAnswer({ answer: "It was 3.2 percent [1].", citations: [citation], conversation_id: "conv-1", ...extra });
}

let server: StandIn;

function mountChat() {
  const router = createRouter({ history: createMemoryHistory(), routes: [{ path: "/:any(.*)*", component: { template: "<div />" } }] });
  return mount(ChatPage, { global: { plugins: [testI18n(), router] }, attachTo: document.body });
}

async function ask(wrapper: ReturnType<typeof mountChat>, question: string): Promise<void> {
  await wrapper.get("textarea").setValue(question);
  await wrapper.get("form.ask").trigger("submit");
  await flushPromises();
}

beforeEach(async () => {
  server = standIn();
  server.on("GET", "/v1/documents", () => json([]));
  server.on("GET", "/v1/models", () => json({ data: [], unavailable: {} }));
  await signIn(fakeJwt({ tenant_id: "acme", sub: "alice", roles: ["viewer"] }));
  server.on("GET", "/v1/chat/conversations", () => json([]));
  // happy-dom has no modal dialogs: opening one just marks it open.
  HTMLDialogElement.prototype.showModal ??= function (this: HTMLDialogElement) {
    this.setAttribute("open", "");
  };
});

afterEach(() => {
  endSession({ kind: "signed-out" });
  document.body.innerHTML = "";
  vi.unstubAllGlobals();
});

describe("chat", () => {
  it("streams the answer, lists its citations and opens one", async () => {
    server.on("POST", "/v1/chat", () =>
      sse([
        { event: "token", data: { text: "It was " } },
        { event: "token", data: { text: "3.2 percent [1]." } },
        { event: "done", data: done() },
      ]),
    );
    const wrapper = mountChat();
    await ask(wrapper, "What was the margin?");
    await vi.waitFor(() => expect(wrapper.find("[data-testid=citation]").exists()).toBe(true));
    const request = server.calls.find((c) => c.path === "/v1/chat")?.body as Record<string, unknown>;
    expect(request).toMatchObject({ question: "What was the margin?", stream: true, collection: "default" });
    expect(request.hybrid).toBeUndefined();
    expect(request.answer_mode).toBeUndefined();
    expect(wrapper.get(".answer-text").text()).toBe("It was 3.2 percent [1].");
    expect(wrapper.get("[data-testid=citation]").text()).toBe("[1] acme-2025.txt · page 3");
    expect(wrapper.find("[data-testid=cannot-answer]").exists()).toBe(false);
    // An answer that names no mode (an older API) is labelled neither quoted nor written.
    expect(wrapper.find("[data-testid=answer-mode]").exists()).toBe(false);

    await wrapper.get("button.cite").trigger("click");
    await flushPromises();
    expect(wrapper.get("[data-testid=citation-text]").text()).toBe(citation.snippet);
    // The document page opens at the cited chunk's page of chunks, naming the file's page.
    expect(wrapper.get("[data-testid=citation-open-document]").attributes("href")).toBe("/documents/d1?chunk=c9&at=41&page=3");

    // The conversation is listed at once and continued by the next question.
    expect(wrapper.text()).toContain("What was the margin?");
    server.on("POST", "/v1/chat", () => sse([{ event: "done", data: done({ answer: "Twelve [1]." }) }]));
    await wrapper.get("[data-testid=switch-hybrid]").setValue("off");
    await ask(wrapper, "And the branches?");
    const second = server.calls.filter((c) => c.path === "/v1/chat")[1].body as Record<string, unknown>;
    expect(second).toMatchObject({ conversation_id: "conv-1", hybrid: false });
    wrapper.unmount();
  });

  it("lists the user's stored conversations, continues one and deletes another", async () => {
    const item = (id: string, title: string) => ({ conversation_id: id, collection: "default", title, turns: 2, created_at: "2026-12-07T01:00:00Z", updated_at: "2026-12-07T02:00:00Z" });
    let listed = [item("c-new", "Where did Globex open a lab?"), item("c-old", "What was the margin?")];
    server.on("GET", "/v1/chat/conversations", () => json(listed));
    server.on("GET", "/v1/chat/conversations/c-old", () =>
      json({ conversation_id: "c-old", summary: "", turns: [{ question: "What was the margin?", answer: "3.2 percent [1]." }] }),
    );
    server.on("DELETE", "/v1/chat/conversations/c-new", () => {
      listed = listed.filter((c) => c.conversation_id !== "c-new");
      return new Response(null, { status: 204 });
    });
    server.on("POST", "/v1/chat", () => sse([{ event: "done", data: done({ conversation_id: "c-old" }) }]));
    const wrapper = mountChat();
    await flushPromises();
    const titles = () => wrapper.findAll(".conversation-title").map((b) => b.text());
    expect(titles()[0]).toContain("Where did Globex open a lab?");
    expect(titles()[0]).toContain("2 turns");

    await wrapper.findAll(".conversation-title")[1].trigger("click");
    await flushPromises();
    expect(wrapper.get("[data-testid=transcript]").text()).toContain("3.2 percent");
    await ask(wrapper, "And in 2024?");
    const body = server.calls.filter((c) => c.path === "/v1/chat")[0].body as Record<string, unknown>;
    expect(body.conversation_id).toBe("c-old");
    expect(titles()[0]).toContain("What was the margin?"); // continued: first now

    await wrapper.get("[aria-label='Delete conversation Where did Globex open a lab?']").trigger("click");
    await flushPromises();
    expect(server.calls.some((c) => c.method === "DELETE" && c.path === "/v1/chat/conversations/c-new")).toBe(true);
    expect(titles()).toHaveLength(1);
    wrapper.unmount();
  });

  it("offers no delete when /v1/me's actions do not include it", async () => {
    endSession({ kind: "signed-out" });
    server.on("GET", "/v1/me", () => json({ tenant_id: "acme", user_id: "bob", roles: ["viewer"], operator: false, api_key_id: null, actions: [] }));
    await signIn(fakeJwt({ tenant_id: "acme", sub: "bob", roles: ["viewer"] }));
    server.on("GET", "/v1/chat/conversations", () =>
      json([{ conversation_id: "c1", collection: "default", title: "What was the margin?", turns: 1, created_at: "2026-12-07T01:00:00Z", updated_at: "2026-12-07T01:00:00Z" }]),
    );
    const wrapper = mountChat();
    await flushPromises();
    expect(wrapper.findAll(".conversation-title")).toHaveLength(1);
    expect(wrapper.find("[aria-label^='Delete conversation']").exists()).toBe(false);
    wrapper.unmount();
  });

  it("shows 'cannot answer' as such, not as an error", async () => {
    server.on("POST", "/v1/chat", () =>
      sse([{ event: "done", data: done({ answer: "The documents do not say.", citations: [citation], conversation_id: null, answer_mode: "extractive", cannot_answer: true }) }]),
    );
    const wrapper = mountChat();
    await ask(wrapper, "Who won the 1998 World Cup?");
    await vi.waitFor(() => expect(wrapper.find("[data-testid=cannot-answer]").exists()).toBe(true));
    expect(wrapper.get("[data-testid=cannot-answer]").text()).toBe("Cannot answer from your documents");
    expect(wrapper.get("[data-testid=cannot-answer]").attributes("role")).toBe("status");
    expect(wrapper.find("[role=alert]").exists()).toBe(false);
    // Not labelled as a quoted answer: it answers nothing.
    expect(wrapper.find("[data-testid=answer-mode]").exists()).toBe(false);
    wrapper.unmount();
  });

  it("sends the chosen answer mode and labels a quoted answer as quoted", async () => {
    server.on("POST", "/v1/chat", ({ body }) => {
      const mode = (body as { answer_mode?: string }).answer_mode === "generative" ? "generative" : "extractive";
      return sse([{ event: "done", data: done({ answer_mode: mode, cannot_answer: false }) }]);
    });
    const wrapper = mountChat();
    const select = wrapper.get("[data-testid=switch-answer-mode]");
    expect(select.findAll("option").map((o) => o.text())).toEqual(["Server default", "Automatic", "Quoted from your documents", "Written by the model"]);
    await select.setValue("extractive");
    await ask(wrapper, "q1");
    await vi.waitFor(() => expect(wrapper.find("[data-testid=answer-mode]").exists()).toBe(true));
    expect(wrapper.get("[data-testid=answer-mode]").text()).toBe("Quoted from your documents");
    await select.setValue("generative");
    await ask(wrapper, "q2");
    const bodies = server.calls.filter((c) => c.path === "/v1/chat").map((c) => (c.body as Record<string, unknown>).answer_mode);
    expect(bodies).toEqual(["extractive", "generative"]);
    await vi.waitFor(() => expect(wrapper.findAll("[data-testid=answer-mode]")).toHaveLength(2));
    expect(wrapper.findAll("[data-testid=answer-mode]")[1].text()).toBe("Written by the model");
    wrapper.unmount();
  });

  it("marks the generated sentences the sources do not support", async () => {
    const answer = "It was 3.2 percent [1]. Acme also bought the moon [1].";
    server.on("POST", "/v1/chat", () =>
      sse([{ event: "done", data: done({ answer, answer_mode: "generative", cannot_answer: false, unsupported_sentences: ["Acme also bought the moon [1]."] }) }]),
    );
    const wrapper = mountChat();
    await ask(wrapper, "q");
    await vi.waitFor(() => expect(wrapper.find("[data-testid=unsupported]").exists()).toBe(true));
    const marked = wrapper.findAll("[data-testid=unsupported-sentence]").map((m) => m.text()).join("|");
    expect(marked).toBe("Acme also bought the moon|.");
    expect(wrapper.get("[data-testid=unsupported-sentence]").attributes("title")).toBe("not supported by its sources");
    // The label inside the sentence stays a link to its citation, marked with it.
    expect(wrapper.findAll("button.cite.unsupported")).toHaveLength(1);
    expect(wrapper.get(".answer-text").text()).toContain("It was 3.2 percent");
    expect(wrapper.get("[data-testid=unsupported]").text()).toBe("The marked sentence is not supported by the passages it cites.");
    wrapper.unmount();
  });

  it("says when to retry when the tenant's answers are all busy", async () => {
    server.on("POST", "/v1/chat", () => problem(429, "this tenant already has 4 answers in progress", { "Retry-After": "1" }));
    const wrapper = mountChat();
    await ask(wrapper, "q");
    await vi.waitFor(() => expect(wrapper.find("[role=alert]").exists()).toBe(true));
    expect(wrapper.get("[role=alert]").text()).toContain("Try again in 1 s.");
    wrapper.unmount();
  });
});
