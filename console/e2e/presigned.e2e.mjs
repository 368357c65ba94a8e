// The console's presigned upload in headless Chromium against a stack whose object store is S3
// (tests/e2e/test_console_presigned.py starts it, with moto's server standing in for MinIO):
//
//   KUBEMATE_URL                        the gateway, e.g. http://127.0.0.1:8000
//   KUBEMATE_E2E_EDITOR_TOKEN           an editor of a tenant no other test uses
//   KUBEMATE_E2E_PRESIGNED_MIN_BYTES    the stack's gateway.presigned_min_bytes
//   KUBEMATE_E2E_ARTEFACTS              where screenshots go
//   CHROMIUM                            the browser (default /usr/bin/chromium)
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { chromium } from "playwright-core";

const env = (name, fallback) => {
  const value = process.env[name] ?? fallback;
  if (value === undefined) throw new Error(`${name} is not set (see the top of ${import.meta.url})`);
  return value;
};
const BASE = env("KUBEMATE_URL");
const EDITOR = env("KUBEMATE_E2E_EDITOR_TOKEN");
const THRESHOLD = Number(env("KUBEMATE_E2E_PRESIGNED_MIN_BYTES"));
const ARTEFACTS = env("KUBEMATE_E2E_ARTEFACTS");
const CHROMIUM = env("CHROMIUM", "/usr/bin/chromium");
const STEP_MS = 240_000;

// Above the threshold: a report of distinct sentences (identical ones would be one chunk).
const LARGE = Array.from({ length: 120 }, (_, i) => `Initech branch ${i} reported ${i * 7 + 3} new accounts in the third quarter.`).join("\n");
const SMALL = "Initech opened a data centre in Tampere in 2025.\n";

let browser;
mkdirSync(ARTEFACTS, { recursive: true });

before(async () => {
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage"],
  });
});

after(async () => {
  await browser?.close();
});

test("a file above the threshold goes to the object store, a small one in a batch; both complete", { timeout: STEP_MS }, async () => {
  assert.ok(new TextEncoder().encode(LARGE).length >= THRESHOLD && SMALL.length < THRESHOLD);
  const context = await browser.newContext({ viewport: { width: 1366, height: 850 }, locale: "en-US" });
  const page = await context.newPage();
  const problems = [];
  page.on("console", (message) => {
    if (message.type() === "error") problems.push(message.text()); // CSP and CORS refusals land here
  });
  page.on("pageerror", (error) => problems.push(String(error)));
  const requests = [];
  page.on("requestfinished", async (request) => {
    const response = await request.response();
    // The headers as sent: a File body is not kept by the request record, its length is.
    const headers = await request.allHeaders();
    requests.push({ method: request.method(), url: request.url(), status: response?.status(), body: Number(headers["content-length"] ?? -1), json: request.postData(), auth: headers.authorization });
  });

  await page.goto(`${BASE}/`);
  await page.getByLabel("API key or token").fill(EDITOR);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForURL(/\/documents/);

  await page.locator("[data-testid=file-input]").setInputFiles([
    { name: "initech-q3.txt", mimeType: "text/plain", buffer: Buffer.from(LARGE) },
    { name: "initech-note.txt", mimeType: "text/plain", buffer: Buffer.from(SMALL) },
  ]);
  for (const name of ["initech-q3.txt", "initech-note.txt"]) {
    const row = page.locator(`[data-testid=uploads] li[data-filename="${name}"]`);
    // Settled either way: a refused upload (a store the browser may not reach) fails at once.
    const settled = row.locator(".task-status[data-state=COMPLETED], .task-status[data-state=FAILED], .task-status[data-state=REFUSED]").first();
    await settled.waitFor({ timeout: STEP_MS });
    assert.equal(await settled.getAttribute("data-state"), "COMPLETED", `${name}: ${await row.innerText()}`);
    await row.getByText(/^\d+ chunks?$/).waitFor();
  }
  await page.screenshot({ path: join(ARTEFACTS, "presigned-completed.png"), fullPage: true });

  const gateway = new URL(BASE).origin;
  const puts = requests.filter((r) => r.method === "PUT");
  assert.equal(puts.length, 1, JSON.stringify(requests));
  const [put] = puts;
  assert.notEqual(new URL(put.url).origin, gateway, "the file went to the store, not the gateway");
  assert.equal(put.status, 200);
  assert.equal(put.body, new TextEncoder().encode(LARGE).length);
  assert.equal(put.auth, undefined, "the session's credential never goes to the store");
  const paths = requests.filter((r) => r.url.startsWith(gateway)).map((r) => `${r.method} ${new URL(r.url).pathname}`);
  const presign = requests.find((r) => r.method === "POST" && r.url === `${gateway}/v1/uploads`);
  assert.equal(JSON.parse(presign.json).filename, "initech-q3.txt");
  assert.ok(paths.some((p) => /^POST \/v1\/uploads\/\w+\/complete$/.test(p)), paths.join("\n"));
  const batches = requests.filter((r) => r.method === "POST" && r.url === `${gateway}/v1/documents/batch`);
  assert.equal(batches.length, 1);
  assert.ok(batches[0].body < THRESHOLD, "the batch carried the small file only");
  // The server has both, the large one whole.
  const listed = await fetch(`${BASE}/v1/documents`, { headers: { Authorization: `Bearer ${EDITOR}` } }).then((r) => r.json());
  const sizes = Object.fromEntries(listed.map((d) => [d.filename, d.size_bytes]));
  assert.deepEqual(sizes, { "initech-q3.txt": new TextEncoder().encode(LARGE).length, "initech-note.txt": SMALL.length });
  assert.deepEqual(problems, []);
  await context.close();
});
