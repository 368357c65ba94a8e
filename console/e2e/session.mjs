// What the console's browser scripts (*.e2e.mjs) share: their environment, one headless Chromium
// per script, fresh pages whose errors are kept, signing in, screenshots, and waiting out the rate
// limiter. tests/fixtures/console.py runs the scripts; the environment common to all of them:
//
//   KUBEMATE_URL              the gateway, e.g. http://127.0.0.1:8000
//   KUBEMATE_E2E_ARTEFACTS    where screenshots go
//   CHROMIUM                  the browser (default /usr/bin/chromium)
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { after } from "node:test";
import { chromium } from "playwright-core";

/** The environment variable `name`; without it (and a fallback) the script cannot run at all. */
export function env(name, fallback) {
  const value = process.env[name] ?? fallback;
  // node --test runs each script as its own process: argv[1] is the script, whose top lists them.
  if (value === undefined) throw new Error(`${name} is not set (see the top of ${process.argv[1]})`);
  return value;
}

export const BASE = env("KUBEMATE_URL");
export const ARTEFACTS = env("KUBEMATE_E2E_ARTEFACTS");
const CHROMIUM = env("CHROMIUM", "/usr/bin/chromium");
mkdirSync(ARTEFACTS, { recursive: true });

export const LAPTOP = { width: 1366, height: 850 };
export const STEP_MS = 240_000; // a step may wait for ingestion or an answer on a busy 2-core machine

/** Debian's Chromium for the calling script's tests, closed after the last of them. */
export async function chromiumForThisScript() {
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage"],
  });
  after(async () => {
    await browser.close();
  });
  return browser;
}

/** Where a page's errors are kept: its console's errors and the exceptions nothing caught. */
export function pageErrors() {
  return { console: [], uncaught: [] };
}

/**
 * A page in a context of its own (no session yet), in English, its errors kept in `errors` (see
 * pageErrors). A Content-Security-Policy violation is logged as a console error too, so that a
 * script can tell it from the rest.
 */
export async function newPage(browser, errors, viewport = LAPTOP) {
  const context = await browser.newContext({ viewport, locale: "en-US" });
  await context.addInitScript(() => {
    document.addEventListener("securitypolicyviolation", (event) => {
      console.error(`CSP violation: ${event.violatedDirective} ${event.blockedURI}`);
    });
  });
  const page = await context.newPage();
  page.on("console", (message) => {
    if (message.type() === "error") errors.console.push(message.text());
  });
  page.on("pageerror", (error) => errors.uncaught.push(String(error)));
  return page;
}

/** Signs in on the sign-in page with a token or an API key, and waits for the documents page. */
export async function signIn(page, credential) {
  await page.goto(`${BASE}/`);
  await page.waitForURL(/\/signin/);
  await page.getByLabel("API key or token").fill(credential);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForURL(/\/documents/);
  await page.getByRole("heading", { name: "Documents", level: 1 }).waitFor();
}

/** The whole page as `<name>.png` in the artefacts. */
export async function shot(page, name) {
  await page.screenshot({ path: join(ARTEFACTS, `${name}.png`), fullPage: true });
}

/** Sends a request again after the Retry-After a 429 names (at most five times). */
export async function politely(send) {
  for (let attempt = 0; ; attempt++) {
    const response = await send();
    if (response.status() !== 429 || attempt === 5) return response;
    const seconds = Number(response.headers()["retry-after"] ?? "1");
    await new Promise((resolve) => setTimeout(resolve, Math.min(10, Math.max(1, seconds)) * 1000));
  }
}
