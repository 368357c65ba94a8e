import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { flushPromises, mount } from "@vue/test-utils";
import { describe, expect, it } from "vitest";
import { createMemoryHistory, createRouter } from "vue-router";
import App from "../src/App.vue";
import en from "../src/locales/en.json";
import zh from "../src/locales/zh.json";
import { testI18n } from "./standin";

type Messages = { [key: string]: string | Messages };

function keys(messages: Messages, prefix = ""): string[] {
  return Object.entries(messages).flatMap(([key, value]) =>
    typeof value === "string" ? [`${prefix}${key}`] : keys(value, `${prefix}${key}.`),
  );
}

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? sources(path) : /\.(vue|ts)$/.test(name) ? [path] : [];
  });
}

describe("messages", () => {
  it("has every string in both languages", () => {
    expect(keys(zh as Messages).sort()).toEqual(keys(en as Messages).sort());
  });

  it("has a message for every key the code names", () => {
    const known = new Set(keys(en as Messages));
    const used = new Set<string>();
    for (const file of sources(join(__dirname, "../src"))) {
      const text = readFileSync(file, "utf8");
      for (const match of text.matchAll(/\bt\(\s*["']([a-zA-Z]+\.[a-zA-Z.]+)["']/g)) used.add(match[1]);
      for (const match of text.matchAll(/(?:label|title): "([a-z]+\.[a-zA-Z]+)"/g)) used.add(match[1]);
    }
    expect(used.size).toBeGreaterThan(100);
    expect([...used].filter((key) => !known.has(key))).toEqual([]);
  });

  it("switches the whole console's language", async () => {
    const i18n = testI18n("en");
    const router = createRouter({ history: createMemoryHistory(), routes: [{ path: "/", component: { template: "<p />" }, meta: { public: true, title: "nav.signIn" } }] });
    await router.push("/");
    const wrapper = mount(App, { global: { plugins: [i18n, router] } });
    await flushPromises();
    expect(wrapper.text()).toContain("Skip to content");
    expect(document.title).toBe("Sign in · Kubemate");
    await wrapper.get("[data-testid=locale]").setValue("zh");
    expect(wrapper.text()).toContain("跳到正文");
    expect(document.title).toBe("登录 · Kubemate");
    expect(localStorage.getItem("kubemate.locale")).toBe("zh");
    expect(document.documentElement.lang).toBe("zh-CN");
    wrapper.unmount();
  });
});
