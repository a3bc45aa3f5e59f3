// Drives /docs in Debian's Chromium, headless, through playwright-core (no
// browser download of its own): every operation of the OpenAPI document must
// be listed on the page, and "Try it out" on sign-up must come back 201.
// Run by scripts/check-docs-page.sh:  node check.mjs BASE_URL SCREENSHOT
import { chromium } from "playwright-core";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [base, screenshot] = process.argv.slice(2);
const fail = (message) => {
  console.error(`   [FAIL] ${message}`);
  process.exitCode = 1;
};

const spec = await (await fetch(`${base}/api-docs/openapi.json`)).json();
const operations = [];
for (const [path, item] of Object.entries(spec.paths)) {
  for (const [method, op] of Object.entries(item)) {
    if (["get", "post", "put", "patch", "delete"].includes(method)) {
      operations.push({ method, path, id: op.operationId });
    }
  }
}

const context = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), "docs-page-")), {
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
  viewport: { width: 1400, height: 1000 },
});
try {
  const page = context.pages()[0] ?? (await context.newPage());
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  const response = await page.goto(`${base}/docs`, { waitUntil: "networkidle" });
  if (!response || !response.ok()) fail(`/docs answered ${response && response.status()}`);
  try {
    await page.waitForSelector(".opblock", { timeout: 15000 });
  } catch {
    await page.screenshot({ path: screenshot });
    fail(`no operation rendered on /docs within 15 s (screenshot: ${screenshot})`);
    process.exit(1);
  }

  // Every operation is on the page: Swagger UI lists each as an .opblock
  // carrying its method and path.
  const listed = await page.$$eval(".opblock", (blocks) =>
    blocks.map((b) => ({
      method: (b.querySelector(".opblock-summary-method")?.textContent ?? "").trim().toLowerCase(),
      path: (b.querySelector(".opblock-summary-path")?.getAttribute("data-path") ??
        b.querySelector(".opblock-summary-path")?.textContent ?? "").replace(/\u200b/g, "").trim(),
    })),
  );
  const seen = new Set(listed.map((o) => `${o.method} ${o.path}`));
  const missing = operations.filter((o) => !seen.has(`${o.method} ${o.path}`));
  if (missing.length > 0) {
    fail(`${missing.length} of ${operations.length} operations are not on the page: ${missing.map((o) => `${o.method.toUpperCase()} ${o.path}`).join(", ")}`);
  } else {
    console.log(`   [PASS] all ${operations.length} operations of the document are listed on /docs`);
  }

  // "Try it out" on sign-up.
  const signUp = page.locator(".opblock", { has: page.locator('.opblock-summary-path[data-path="/api/v1/auth/signup"]') }).first();
  await signUp.locator(".opblock-summary").click();
  // The page starts in "Try it out" mode (tryItOutEnabled); click the button
  // only where it is still offered.
  const tryIt = signUp.getByRole("button", { name: "Try it out" });
  await signUp.locator(".opblock-body").waitFor({ timeout: 15000 });
  if ((await tryIt.count()) > 0) await tryIt.click();
  await signUp.locator("textarea.body-param__text").waitFor({ timeout: 15000 });
  const login = `docs-${Date.now().toString(36)}`;
  await signUp.locator("textarea.body-param__text").fill(
    JSON.stringify({ loginId: login, password: "password-123", name: "Docs page" }),
  );
  await signUp.getByRole("button", { name: "Execute" }).click();
  const status = signUp.locator(".live-responses-table .response .response-col_status").first();
  await status.waitFor({ timeout: 15000 });
  const code = (await status.textContent()).trim();
  if (code.startsWith("201")) {
    console.log(`   [PASS] "Try it out" on sign-up answered ${code} (loginId ${login})`);
  } else {
    fail(`"Try it out" on sign-up answered ${code}`);
  }
  if (errors.length > 0) fail(`the page threw: ${errors.join("; ")}`);
  await page.screenshot({ path: screenshot, fullPage: false });
  console.log(`   screenshot: ${screenshot}`);
} finally {
  await context.close();
}
