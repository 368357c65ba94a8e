// The console's presigned upload in headless Chromium against a stack whose object store is S3
// (tests/e2e/test_console_presigned.py starts it, with moto's server standing in for MinIO):
//
//   KUBEMATE_E2E_EDITOR_TOKEN           an editor of a tenant no other test uses
//   KUBEMATE_E2E_PRESIGNED_MIN_BYTES    the stack's gateway.presigned_min_bytes
//
// and those of every browser script (the gateway, the artefacts' directory, the browser: see
// session.mjs).
import assert from "node:assert/strict";
import { test } from "node:test";
import { BASE, STEP_MS, chromiumForThisScript, env, newPage, pageErrors, shot, signIn } from "./session.mjs";

const EDITOR = env("KUBEMATE_E2E_EDITOR_TOKEN");
const THRESHOLD = Number(env("KUBEMATE_E2E_PRESIGNED_MIN_BYTES"));

// Above the threshold: a report of distinct sentences (identical ones would be one chunk).
const LARGE = Array.from({ length: 120 }, (_, i) => `Initech branch ${i} reported ${i * 7 + 3} new accounts in the third quarter.`).join("\n");
const SMALL = "Initech opened a data centre in Tampere in 2025.\n";

const browser = await chromiumForThisScript();

test("a file above the threshold goes to the object store, a small one in a batch; both complete", { timeout: STEP_MS }, async () => {
  assert.ok(new TextEncoder().encode(LARGE).length >= THRESHOLD && SMALL.length < THRESHOLD);
  const errors = pageErrors(); // a refusal by the page's CSP or the store's CORS lands there
  const page = await newPage(browser, errors);
  const requests = [];
  page.on("requestfinished", async (request) => {
    const response = await request.response();
    // The headers as sent: a File body is not kept by the request record, its length is.
    const headers = await request.allHeaders();
    requests.push({ method: request.method(), url: request.url(), status: response?.status(), body: Number(headers["content-length"] ?? -1), json: request.postData(), auth: headers.authorization });
  });

  await signIn(page, EDITOR);

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
  await shot(page, "presigned-completed");

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
  assert.deepEqual(errors, { console: [], uncaught: [] });
  await page.context().close();
});
