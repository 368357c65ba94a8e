// The console in headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core)
// against a running Kubemate stack. tests/e2e/test_console.py starts the embedded stack and a
// stand-in Ollama runtime, then runs this file with `node --test`; the environment names the
// stack and the credentials:
//
//   KUBEMATE_E2E_ADMIN_TOKEN      a token of an admin of a tenant no other test uses
//   KUBEMATE_E2E_VIEWER_TOKEN     a viewer of the same tenant
//   KUBEMATE_E2E_SHORT_TOKEN      an admin token that expires a few seconds after it was made
//   KUBEMATE_E2E_PULL_RUNTIME     the stand-in runtime's id (ollama:<name>), which can pull
//   KUBEMATE_E2E_PULL_MODEL       a model it can pull
//
// and those of every browser script (the gateway, the artefacts' directory, the browser: see
// session.mjs). Screenshots of every page (laptop and phone widths, English and Chinese) are
// saved as artefacts; the documents page's time to interactive is written to timing.json.
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import {
  ARTEFACTS,
  BASE,
  LAPTOP,
  STEP_MS,
  chromiumForThisScript,
  env,
  newPage,
  pageErrors,
  politely,
  shot,
  signIn,
} from "./session.mjs";

const ADMIN = env("KUBEMATE_E2E_ADMIN_TOKEN");
const VIEWER = env("KUBEMATE_E2E_VIEWER_TOKEN");
const SHORT = env("KUBEMATE_E2E_SHORT_TOKEN");
const PULL_RUNTIME = env("KUBEMATE_E2E_PULL_RUNTIME");
const PULL_MODEL = env("KUBEMATE_E2E_PULL_MODEL");

const PHONE = { width: 390, height: 844 };

const ACME = [
  "# Acme Bank annual report 2025",
  "",
  "The net interest margin of Acme Bank was 3.2 percent in 2025, up from 2.9 percent in 2024.",
  "",
  "Acme Bank opened twelve new branches in Lyon during 2025.",
  "",
].join("\n");
const GLOBEX = [
  "Globex Corporation research notes.",
  "",
  "Globex opened a materials research laboratory in Grenoble in 2024 with forty engineers.",
  "",
].join("\n");

const browser = await chromiumForThisScript();
// Every page's errors, checked by the last step: any Content-Security-Policy violation fails the
// run (the console must need nothing inline), and so does an exception nothing caught. Other
// console errors are expected: some steps are refused on purpose (a bad token, a revoked key).
const errors = pageErrors();

async function drop(page, files) {
  const dataTransfer = await page.evaluateHandle((list) => {
    const transfer = new DataTransfer();
    for (const file of list) transfer.items.add(new File([file.text], file.name, { type: file.type }));
    return transfer;
  }, files);
  await page.dispatchEvent("[data-testid=dropzone]", "drop", { dataTransfer });
}

function uploadRow(page, filename) {
  return page.locator(`[data-testid=uploads] li[data-filename="${filename}"]`);
}

describe("the console", { concurrency: false }, () => {
  let admin; // one tab signed in as the tenant's admin, used by the steps in order

  test("an expired token brings you back to sign-in with the reason", { timeout: 60_000 }, async () => {
    const page = await newPage(browser, errors);
    await page.goto(`${BASE}/signin`);
    await shot(page, "01-signin");
    await page.getByLabel("API key or token").fill("not-a-token");
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByRole("alert").waitFor();
    assert.match(await page.getByRole("alert").innerText(), /token/i);
    await shot(page, "01-signin-refused");

    await page.getByLabel("API key or token").fill(SHORT);
    await page.getByRole("button", { name: "Sign in" }).click();
    // The short token expires within seconds: the console signs out by itself and says why.
    await page.getByTestId("signin-reason").waitFor({ timeout: 45_000 });
    assert.equal(await page.getByTestId("signin-reason").innerText(), "Your token has expired. Sign in again.");
    await shot(page, "01-signin-expired");
    await page.context().close();
  });

  test("sign in with a token", { timeout: 60_000 }, async () => {
    admin = await newPage(browser, errors);
    await signIn(admin, ADMIN);
    // The admin of this run is also the platform's operator (its tenant is an operator tenant).
    assert.match(await admin.getByTestId("who").innerText(), /console-e2e · operator/);
    const stored = await admin.evaluate(() => [sessionStorage.getItem("kubemate.session"), localStorage.getItem("kubemate.session")]);
    assert.ok(stored[0]?.includes("credential"), "the token is kept for the tab");
    assert.equal(stored[1], null, "and nowhere that outlives it");
  });

  test("upload two files and watch both reach COMPLETED", { timeout: STEP_MS }, async () => {
    await drop(admin, [
      { name: "acme-2025.md", text: ACME, type: "text/markdown" },
      { name: "globex-notes.txt", text: GLOBEX, type: "text/plain" },
    ]);
    const rows = [uploadRow(admin, "acme-2025.md"), uploadRow(admin, "globex-notes.txt")];
    // Some stage is named on the way (the stream may be quick: at least queued or later).
    await rows[0].locator("[data-testid=task-status]").waitFor();
    await shot(admin, "02-documents-uploading");
    for (const row of rows) {
      await row.locator("[data-testid=task-status][data-state=COMPLETED]").waitFor({ timeout: STEP_MS });
      await row.getByText(/^\d+ chunks?$/).waitFor(); // read from the document once it completed
    }
    await admin.locator("[data-testid=documents-table] tr[data-filename='acme-2025.md']").waitFor();
    await shot(admin, "02-documents-completed");
    // The list filters on the server and says how many match.
    await admin.getByTestId("filter-name").fill("globex");
    await admin.getByRole("button", { name: "Filter" }).click();
    await admin.getByTestId("documents-total").getByText("1 document", { exact: true }).waitFor();
    assert.equal(await admin.locator("[data-testid=documents-table] tbody tr").count(), 1);
    await shot(admin, "02-documents-filtered");
    await admin.getByTestId("filter-name").fill("");
    await admin.getByRole("button", { name: "Filter" }).click();
    await admin.getByTestId("documents-total").getByText("2 documents", { exact: true }).waitFor();
  });

  test("upload an unsupported type and see the reason", { timeout: 60_000 }, async () => {
    await admin.locator("[data-testid=file-input]").setInputFiles({
      name: "setup.exe",
      mimeType: "application/octet-stream",
      buffer: Buffer.from([0x4d, 0x5a, 0x90, 0x00, 0x03, 0x00, 0x00, 0x00, 0x04, 0x00, 0xff, 0xff]),
    });
    const row = uploadRow(admin, "setup.exe");
    await row.locator("[data-testid=refusal-reason]").waitFor();
    assert.match(await row.innerText(), /Refused/);
    assert.match(await row.locator("[data-testid=refusal-reason]").innerText(), /neither PDF nor UTF-8 text|unsupported/i);
    await shot(admin, "03-documents-refused");
  });

  test("the documents page's time to interactive", { timeout: 120_000 }, async () => {
    const session = await admin.evaluate(() => sessionStorage.getItem("kubemate.session"));
    const samples = [];
    // Cold: a new browser context (empty cache), the session handed over as a tab would have it.
    for (let run = 0; run < 3; run++) {
      const context = await browser.newContext({ viewport: LAPTOP });
      await context.addInitScript((value) => sessionStorage.setItem("kubemate.session", value), session);
      const page = await context.newPage();
      await page.goto(`${BASE}/documents`);
      samples.push({ cache: "cold", ...(await readyTiming(page)) });
      // Warm: the same tab reloaded (hashed assets from the cache, index.html revalidated).
      for (let reload = 0; reload < 2; reload++) {
        await page.reload();
        samples.push({ cache: "warm", ...(await readyTiming(page)) });
      }
      await context.close();
    }
    const median = (cache) => {
      const values = samples.filter((s) => s.cache === cache).map((s) => s.readyMs).sort((a, b) => a - b);
      return values[Math.floor(values.length / 2)];
    };
    const report = { url: `${BASE}/documents`, cold_median_ms: median("cold"), warm_median_ms: median("warm"), samples };
    writeFileSync(join(ARTEFACTS, "timing.json"), JSON.stringify(report, null, 2));
    console.log(`documents page time to interactive: cold median ${report.cold_median_ms} ms, warm median ${report.warm_median_ms} ms`);
    assert.ok(report.cold_median_ms < 10_000, "the documents page is usable within 10 s");
  });

  test("ask a question and open its citation", { timeout: STEP_MS }, async () => {
    await admin.getByRole("link", { name: "Chat" }).click();
    await admin.getByRole("heading", { name: "Chat", level: 1 }).waitFor();
    await shot(admin, "04-chat-empty");
    await admin.getByLabel("Question").fill("What was the net interest margin of Acme Bank in 2025?");
    await admin.getByRole("button", { name: "Ask" }).click();
    const citation = admin.getByTestId("citation").first();
    await citation.waitFor({ timeout: STEP_MS });
    await admin.locator(".turn[data-phase=done]").waitFor();
    assert.match(await citation.innerText(), /acme-2025\.md/);
    await shot(admin, "04-chat-answer");
    await citation.click();
    const dialog = admin.getByTestId("citation-dialog");
    await dialog.getByTestId("citation-text").waitFor();
    assert.match(await dialog.getByTestId("citation-text").innerText(), /net interest margin/i);
    await shot(admin, "04-chat-citation");
    await dialog.getByTestId("citation-open-document").click();
    await admin.waitForURL(/\/documents\/[0-9a-f]+\?chunk=[^&]+&at=\d+/);
    // The page of chunks holding the cited one, that chunk marked and focused, its place named.
    const focused = admin.locator(".chunk.focused");
    await focused.waitFor({ timeout: 60_000 });
    assert.match(await focused.innerText(), /net interest margin/i);
    assert.match(await focused.locator(".chunk-meta").innerText(), /^Chunk \d+/);
    assert.equal(await admin.evaluate(() => document.activeElement?.classList.contains("focused")), true);
    await shot(admin, "05-document");
    // The file as uploaded, under its own name.
    const [download] = await Promise.all([admin.waitForEvent("download"), admin.getByTestId("download").click()]);
    assert.equal(download.suggestedFilename(), "acme-2025.md");
    const path = await download.path();
    assert.equal(readFileSync(path, "utf8"), ACME);
    // The conversation is the server's: listed on the chat page after a reload.
    await admin.getByRole("link", { name: "Chat" }).click();
    await admin.reload();
    await admin.locator(".conversation-title", { hasText: "What was the net interest margin of Acme Bank in 2025?" }).waitFor();
    await shot(admin, "04-chat-conversations");
  });

  test("pull a model from the stand-in runtime and watch the bar", { timeout: STEP_MS }, async () => {
    await admin.getByRole("link", { name: "Models" }).click();
    await admin.getByRole("heading", { name: "Models", level: 1 }).waitFor();
    await admin.locator(`[data-testid=pull-runtime] option[value="${PULL_RUNTIME}"]`).waitFor({ state: "attached" });
    await shot(admin, "06-models");
    await admin.getByTestId("pull-model").fill(PULL_MODEL);
    await admin.getByTestId("pull-runtime").selectOption(PULL_RUNTIME);
    const started = admin.waitForResponse((r) => r.url().endsWith("/v1/models/pull") && r.request().method() === "POST");
    await admin.getByRole("button", { name: "Pull", exact: true }).click();
    const response = await started;
    assert.equal(response.status(), 202, await response.text());
    const { task_id: taskId } = await response.json();
    const row = admin.locator(`[data-testid=pulls] li[data-task="${taskId}"]`);
    await row.waitFor();
    const seen = new Set();
    const deadline = Date.now() + STEP_MS - 10_000;
    let shotTaken = false;
    while (Date.now() < deadline) {
      const state = await row.getAttribute("data-state");
      const value = await row.locator("progress").getAttribute("value");
      if (value !== null) seen.add(Number(value));
      if (!shotTaken && value !== null && Number(value) > 0 && Number(value) < 100) {
        await shot(admin, "06-models-pulling");
        shotTaken = true;
      }
      if (state === "COMPLETED" || state === "FAILED") break;
      await admin.waitForTimeout(100);
    }
    assert.equal(await row.getAttribute("data-state"), "COMPLETED", await row.innerText());
    const between = [...seen].filter((v) => v > 0 && v < 100);
    assert.ok(between.length > 0, `the bar moved through values between 0 and 100: saw ${[...seen]}`);
    assert.match(await row.innerText(), /100 %/);
    const pulled = admin.locator(`[data-testid=models-table] tr[data-model^="${PULL_MODEL}"]`);
    await pulled.waitFor();
    const pulledName = await pulled.getAttribute("data-model");
    await shot(admin, "06-models-pulled");
    // Load the pulled model on its runtime, see it running, unload it (the operator's).
    const loadForm = admin.getByTestId("load-form");
    await loadForm.getByTestId("load-model").fill(pulledName);
    await loadForm.locator("select").selectOption(PULL_RUNTIME);
    await loadForm.getByRole("button", { name: "Load", exact: true }).click();
    const running = admin.locator(`[data-testid=running] li[data-model="${pulledName}"]`);
    await running.waitFor();
    await running.scrollIntoViewIfNeeded();
    await shot(admin, "06-models-running");
    await running.getByRole("button", { name: `Unload ${pulledName}` }).click();
    await running.waitFor({ state: "detached" });
    // Deployments are Kubernetes': the embedded stack has no cluster, and says so in words.
    const deployments = admin.getByTestId("deployments");
    await deployments.getByRole("alert").or(deployments.getByText("Nothing is deployed.")).first().waitFor();
    const said = await deployments.innerText();
    assert.doesNotMatch(said, /\b5\d\d\b/, said);
    assert.equal(await deployments.getByTestId("deploy-form").count(), 1);
    await deployments.scrollIntoViewIfNeeded();
    await shot(admin, "06-models-deployments");
  });

  test("usage and health pages", { timeout: 90_000 }, async () => {
    await admin.getByRole("link", { name: "Usage" }).click();
    await admin.getByTestId("usage-table").waitFor();
    assert.match(await admin.getByTestId("usage-table").innerText(), /documents|answers|embeddings/);
    // Today's point of the daily series counts the two documents this run processed.
    assert.equal(await admin.getByTestId("usage-documents").innerText(), "2");
    assert.equal(await admin.locator("[data-testid=usage-charts] figure.chart").count(), 3);
    await shot(admin, "07-usage");
    await admin.getByRole("link", { name: "Health" }).click();
    await admin.getByTestId("readiness").getByText("ready", { exact: true }).waitFor();
    await admin.getByTestId("health-stats").waitFor();
    assert.match(await admin.getByTestId("health-source").innerText(), /services' own \/metrics/);
    // Rates need two reads of the services' metrics, 5 s apart.
    await admin.waitForFunction(() => document.querySelector("[data-testid=request-rate]")?.textContent?.trim() !== "–", null, { timeout: 30_000 });
    assert.notEqual(await admin.getByTestId("backlog").innerText(), "–");
    await shot(admin, "08-health");
  });

  test("change a collection's index template and watch the rebuild", { timeout: STEP_MS }, async () => {
    await admin.getByRole("link", { name: "Models" }).click();
    const picker = admin.locator("[data-testid=templates] fieldset[data-collection=default]");
    await picker.waitFor();
    // Each template with what it would cost; the deployment's (balanced) in use.
    assert.equal(await picker.locator("[data-template]").count(), 4);
    assert.match(await picker.locator("[data-template=balanced]").innerText(), /in use/);
    await picker.locator("[data-template=exact] input").check();
    const change = picker.getByTestId("template-change");
    assert.match(await change.innerText(), /rebuilds this collection.s index: every document.s vectors are copied/);
    await picker.scrollIntoViewIfNeeded();
    await shot(admin, "06-models-templates");
    const asked = admin.waitForResponse((r) => r.url().endsWith("/v1/collections/default/template"));
    await change.getByRole("button", { name: "Use this template" }).click();
    const response = await asked;
    assert.equal(response.status(), 202, await response.text());
    assert.equal((await response.json()).index_template, "exact");
    // The rebuild's progress in the picker (too quick to catch on a quiet machine), then the
    // new template in use: the documents were re-indexed into a FLAT index.
    await picker.locator("[data-template=exact] .badge-ok").waitFor({ timeout: STEP_MS - 20_000 });
    assert.doesNotMatch(await picker.locator("[data-template=balanced]").innerText(), /in use/);
    // Said in the picker as the template rebuild it was, not as an embedder switch.
    const finished = picker.getByTestId("template-rebuild");
    assert.equal(await finished.getAttribute("data-state"), "COMPLETED", await finished.innerText());
    assert.match((await finished.innerText()).trim(), /^Index template: Exact · rebuilt (\d+)\/\1 documents$/);
    assert.equal(await admin.locator("[data-testid=reindexes] li").count(), 0);
    await picker.scrollIntoViewIfNeeded();
    await shot(admin, "06-models-template-changed");
    // Questions still find the documents, now from the exact index.
    const found = await admin.evaluate(async () => {
      const { credential } = JSON.parse(sessionStorage.getItem("kubemate.session"));
      const r = await fetch("/v1/query", {
        method: "POST",
        headers: { Authorization: `Bearer ${credential}`, "Content-Type": "application/json" },
        body: JSON.stringify({ question: "net interest margin of Acme Bank", top_k: 3 }),
      });
      return { status: r.status, body: await r.json() };
    });
    assert.equal(found.status, 200, JSON.stringify(found.body));
    assert.ok(JSON.stringify(found.body).includes("net interest margin"), JSON.stringify(found.body));
  });

  test("the audit log: this run's changes, filtered by outcome", { timeout: 60_000 }, async () => {
    await admin.getByRole("link", { name: "Audit" }).click();
    const table = admin.getByTestId("audit-table");
    await table.waitFor();
    // The uploads and the pull of the steps before, recorded by the gateway.
    const text = await table.innerText();
    assert.match(text, /documents\.upload|uploads\.create/);
    assert.match(text, /models\.pull/);
    assert.match(text, /collections\.template/);
    await shot(admin, "08-audit");
    await admin.getByTestId("audit-outcome").selectOption("succeeded");
    await admin.getByRole("button", { name: "Show" }).click();
    await admin.locator("[data-testid=audit-table] tbody tr").first().waitFor();
    const outcomes = await admin.locator("[data-testid=audit-table] tbody tr").evaluateAll((rows) => rows.map((r) => r.getAttribute("data-outcome")));
    assert.ok(outcomes.length > 0 && outcomes.every((o) => o === "succeeded"), `outcomes: ${outcomes}`);
    // Back where the next step starts.
    await admin.getByRole("link", { name: "Health" }).click();
    await admin.getByRole("heading", { name: "Health", level: 1 }).waitFor();
  });

  test("switch the language", { timeout: 60_000 }, async () => {
    await admin.getByTestId("locale").selectOption("zh");
    await admin.getByRole("heading", { name: "健康状况", level: 1 }).waitFor();
    await shot(admin, "09-health-zh");
    await admin.getByRole("link", { name: "用量" }).click();
    await admin.getByTestId("usage-charts").waitFor();
    await shot(admin, "09-usage-zh");
    await admin.getByRole("link", { name: "文档" }).click();
    await admin.getByRole("heading", { name: "文档", level: 1 }).waitFor();
    assert.match(await admin.locator("[data-testid=documents-table]").innerText(), /已完成/);
    await shot(admin, "09-documents-zh");
    await admin.getByRole("link", { name: "问答" }).click();
    await admin.getByRole("heading", { name: "问答", level: 1 }).waitFor();
    await shot(admin, "09-chat-zh");
    await admin.getByRole("link", { name: "审计" }).click();
    await admin.getByTestId("audit-table").waitFor();
    await shot(admin, "09-audit-zh");
    await admin.getByRole("link", { name: "模型" }).click();
    await admin.getByRole("heading", { name: "模型", level: 1 }).waitFor();
    // The lists load after the heading: shoot once the pulled model is listed, not an empty table.
    await admin.locator(`[data-testid=models-table] tr[data-model^="${PULL_MODEL}"]`).waitFor();
    await shot(admin, "09-models-zh");
    // The choice outlives the page (it is not a secret: localStorage).
    await admin.reload();
    await admin.getByRole("heading", { name: "模型", level: 1 }).waitFor();
    await admin.getByTestId("locale").selectOption("en");
    await admin.getByRole("heading", { name: "Models", level: 1 }).waitFor();
  });

  test("on a phone", { timeout: 90_000 }, async () => {
    const session = await admin.evaluate(() => sessionStorage.getItem("kubemate.session"));
    const context = await browser.newContext({ viewport: PHONE, isMobile: true, hasTouch: true });
    await context.addInitScript((value) => sessionStorage.setItem("kubemate.session", value), session);
    const page = await context.newPage();
    for (const [path, heading] of [["/documents", "Documents"], ["/chat", "Chat"], ["/models", "Models"], ["/usage", "Usage"], ["/health", "Health"]]) {
      await page.goto(`${BASE}${path}`);
      await page.getByRole("heading", { name: heading, level: 1 }).waitFor();
      // Against the phone's width, not innerWidth: a mobile browser zooms out to fit what overflows.
      const overflow = (await page.evaluate(() => document.documentElement.scrollWidth)) - PHONE.width;
      assert.ok(overflow <= 1, `${path} fits the phone's width (overflow ${overflow}px)`);
      await shot(page, `10-phone${path.replace("/", "-")}`);
    }
    await context.close();
  });

  test("a viewer sees only what a viewer may do", { timeout: 60_000 }, async () => {
    const page = await newPage(browser, errors);
    await signIn(page, VIEWER);
    assert.match(await page.getByTestId("who").innerText(), /viewer/);
    await page.locator("[data-testid=documents-table]").waitFor();
    assert.equal(await page.getByTestId("dropzone").count(), 0);
    assert.equal(await page.getByRole("button", { name: /^Delete/ }).count(), 0);
    assert.equal(await page.getByRole("link", { name: "Usage" }).count(), 0);
    assert.equal(await page.getByRole("link", { name: "Audit" }).count(), 0);
    await page.getByRole("link", { name: "Models" }).click();
    await page.getByTestId("models-table").waitFor();
    assert.equal(await page.getByTestId("pull-model").count(), 0);
    assert.equal(await page.getByTestId("load-form").count(), 0);
    // The index templates' costs, with no choice to make: the tenant's admin chooses.
    const picker = page.locator("[data-testid=templates] fieldset[data-collection=default]");
    await picker.locator("[data-template=exact] .badge-ok").waitFor();
    assert.equal(await picker.locator("input").count(), 0);
    assert.equal(await page.getByRole("button", { name: "Use this template" }).count(), 0);
    assert.equal(await page.getByRole("button", { name: "Switch and re-index" }).count(), 0);
    await shot(page, "11-viewer-models");
    // What is hidden is refused anyway, in words.
    const refused = await page.evaluate(async () => {
      const { credential } = JSON.parse(sessionStorage.getItem("kubemate.session"));
      const headers = { Authorization: `Bearer ${credential}`, "Content-Type": "application/json" };
      const template = await fetch("/v1/collections/default/template", { method: "PUT", headers, body: JSON.stringify({ template: "memory" }) });
      const reindex = await fetch("/v1/reindex", { method: "POST", headers, body: "{}" });
      return [template.status, template.headers.get("content-type"), (await template.json()).detail, reindex.status];
    });
    assert.equal(refused[0], 403);
    assert.match(refused[1], /problem\+json/);
    assert.ok(refused[2], "the refusal says why");
    assert.equal(refused[3], 403);
    await page.context().close();
  });

  test("keyboard: the skip link, the navigation and the upload are reachable without a mouse", { timeout: 60_000 }, async () => {
    const session = await admin.evaluate(() => sessionStorage.getItem("kubemate.session"));
    const page = await newPage(browser, errors);
    await page.context().addInitScript((value) => sessionStorage.setItem("kubemate.session", value), session);
    await page.goto(`${BASE}/documents`);
    await page.getByRole("heading", { name: "Documents", level: 1 }).waitFor();
    const focused = () => page.evaluate(() => document.activeElement?.textContent?.trim() || document.activeElement?.getAttribute("aria-label") || "");
    await page.keyboard.press("Tab");
    assert.equal(await focused(), "Skip to content");
    const reached = [];
    for (let i = 0; i < 25; i++) {
      await page.keyboard.press("Tab");
      reached.push(await focused());
    }
    for (const name of ["Chat", "Models", "Sign out", "Choose files…"]) {
      assert.ok(reached.includes(name), `${name} is in the tab order: ${reached.join(" | ")}`);
    }
    // Enter on a link of the navigation goes there.
    await page.getByRole("link", { name: "Chat" }).focus();
    await page.keyboard.press("Enter");
    await page.getByRole("heading", { name: "Chat", level: 1 }).waitFor();
    await page.keyboard.type("What does Globex research?");
    assert.equal(await page.getByLabel("Question").inputValue(), "", "typing without focus writes nowhere");
    await page.getByLabel("Question").focus();
    await page.keyboard.type("What does Globex research?");
    assert.equal(await page.getByLabel("Question").inputValue(), "What does Globex research?");
    await page.context().close();
  });

  test("a revoked API key brings you back to sign-in with the server's reason", { timeout: 60_000 }, async () => {
    const auth = { Authorization: `Bearer ${ADMIN}` };
    // The suite has spent much of the tenant's admin budget by now (burst 20, 2/s): a 429 here is
    // the limiter doing its job, so wait as it says and go on.
    const created = await politely(() => admin.request.post(`${BASE}/v1/api-keys`, { headers: auth, data: { name: "console-e2e", roles: ["editor"] } }));
    assert.equal(created.status(), 201, await created.text());
    const key = await created.json();
    const page = await newPage(browser, errors);
    await signIn(page, key.key);
    assert.match(await page.getByTestId("who").innerText(), /API key · editor/);
    const revoked = await politely(() => admin.request.delete(`${BASE}/v1/api-keys/${key.id}`, { headers: auth }));
    assert.equal(revoked.status(), 204);
    // The chat page reads the user's conversations at once: refused, back to sign-in.
    await page.getByRole("link", { name: "Chat" }).click();
    await page.getByTestId("signin-reason").waitFor();
    assert.match(await page.getByTestId("signin-reason").innerText(), /The server refused your credential: .+/);
    await shot(page, "12-signin-revoked");
    await page.context().close();
  });

  test("nothing broke the Content-Security-Policy, and no page threw", () => {
    assert.deepEqual(errors.console.filter((text) => /CSP violation|Content Security Policy/.test(text)), []);
    assert.deepEqual(errors.uncaught, []);
  });
});

async function readyTiming(page) {
  await page.waitForFunction(() => performance.getEntriesByName("kubemate:documents-ready").length > 0, null, { timeout: 30_000 });
  return page.evaluate(() => {
    const nav = performance.getEntriesByType("navigation")[0];
    return {
      readyMs: Math.round(performance.getEntriesByName("kubemate:documents-ready")[0].startTime),
      domContentLoadedMs: Math.round(nav.domContentLoadedEventEnd),
      loadMs: Math.round(nav.loadEventEnd),
      transferredBytes: performance.getEntriesByType("resource").reduce((sum, r) => sum + r.transferSize, nav.transferSize),
    };
  });
}
