// The first page's JavaScript stays within 200 KB gzipped: the entry, what it imports, and the
// page's own chunk with what that imports. Reads the build (`npm run build` first; `make
// console` and `make test` do).
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { describe, expect, it } from "vitest";

const DIST = join(__dirname, "../dist");
const BUDGET_BYTES = 200 * 1024;

interface Chunk {
  file: string;
  isEntry?: boolean;
  imports?: string[];
}

function manifest(): Record<string, Chunk> {
  const path = join(DIST, ".vite/manifest.json");
  if (!existsSync(path)) throw new Error(`${path} is missing: build the console first (npm run build)`);
  return JSON.parse(readFileSync(path, "utf8")) as Record<string, Chunk>;
}

function closure(chunks: Record<string, Chunk>, roots: string[]): Set<string> {
  const files = new Set<string>();
  const todo = [...roots];
  while (todo.length) {
    const key = todo.pop() as string;
    const chunk = chunks[key];
    if (!chunk || files.has(chunk.file)) continue;
    files.add(chunk.file);
    todo.push(...(chunk.imports ?? []));
  }
  return files;
}

function gzipped(files: Set<string>): number {
  return [...files].reduce((sum, file) => sum + gzipSync(readFileSync(join(DIST, file)), { level: 9 }).length, 0);
}

describe("the first page's JavaScript", () => {
  const chunks = manifest();
  const entry = Object.keys(chunks).find((key) => chunks[key].isEntry) as string;

  it.each(["src/pages/SignIn.vue", "src/pages/DocumentsPage.vue"])("%s stays within 200 KB gzipped", (page) => {
    expect(chunks[page], `${page} is not in the build`).toBeDefined();
    const size = gzipped(closure(chunks, [entry, page]));
    console.info(`first page ${page}: ${(size / 1024).toFixed(1)} KB of JavaScript gzipped`);
    expect(size).toBeLessThanOrEqual(BUDGET_BYTES);
  });

  it("has no inline script in its page, only files the CSP allows", () => {
    const html = readFileSync(join(DIST, "index.html"), "utf8");
    const scripts = [...html.matchAll(/<script\b([^>]*)>([\s\S]*?)<\/script>/g)];
    expect(scripts.length).toBeGreaterThan(0);
    for (const [, attributes, body] of scripts) {
      expect(attributes).toMatch(/\bsrc="\/assets\//);
      expect(body.trim()).toBe("");
    }
    expect(html).not.toMatch(/\sstyle=|\son[a-z]+=/i);
  });
});
