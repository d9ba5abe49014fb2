// The upload page in real headless Chromium against a real `minilab up`: pick a
// photo, watch it upload and process, see the previews, download one, and read
// the message for files that are not images.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { createRequire } from "node:module";
import { chromium } from "playwright-core";

const axePath = createRequire(import.meta.url).resolve("axe-core/axe.min.js");

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, "../..");
// The repository's own test photos, unless MINILAB_IMAGES names others.
const photos = process.env.MINILAB_IMAGES || path.resolve(repo, "tests/data/images");
const targetDir = process.env.CARGO_TARGET_DIR || path.join(repo, "target");
const bin = process.env.MINILAB_BIN || path.join(targetDir, "debug", "minilab");
const chromiumPath = process.env.CHROMIUM || "/usr/bin/chromium";
const START_TIMEOUT_MS = 60_000;
const FINISH_TIMEOUT_MS = 90_000;

let lab, browser, dataDir;

/** Starts `minilab up` on free loopback ports; resolves with its page URL. */
function startLab(dir) {
  const recipes = path.join(here, "recipes.yaml");
  const args = ["up", "--listen", "127.0.0.1:0", "--s3-listen", "127.0.0.1:0", "--data-dir", dir, "--recipes", recipes];
  const child = spawn(bin, args, {
    stdio: ["ignore", "pipe", "inherit"],
    env: { ...process.env, MINILAB_LOG: process.env.MINILAB_TEST_LOG || "warn,s3s=off" },
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("minilab up did not start in time")), START_TIMEOUT_MS);
    child.on("exit", (code) => reject(new Error(`minilab up exited with ${code}`)));
    createInterface({ input: child.stdout }).on("line", (line) => {
      const match = line.match(/^minilab is up: open (\S+)$/);
      if (match) {
        clearTimeout(timer);
        resolve({ child, url: match[1] });
      }
    });
  });
}

before(async () => {
  dataDir = mkdtempSync(path.join(tmpdir(), "minilab-browser-"));
  lab = await startLab(dataDir);
  browser = await chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
});

after(async () => {
  await browser?.close();
  lab?.child.kill("SIGKILL");
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

/** Waits for the card's final state; fails with what the page says otherwise. */
async function expectFinal(card, expected) {
  const final = card.locator(".state[data-state=succeeded], .state[data-state=failed], .state[data-state=refused], .state[data-state=expired]");
  await final.waitFor({ timeout: FINISH_TIMEOUT_MS });
  const state = await final.getAttribute("data-state");
  const error = card.locator(".error");
  const message = (await error.isVisible()) ? await error.innerText() : "";
  assert.equal(state, expected, `the upload ended ${state}: ${message}`);
}

async function openPage(options = {}) {
  const context = await browser.newContext({ acceptDownloads: true, ...options });
  const page = await context.newPage();
  const problems = [];
  page.on("pageerror", (error) => problems.push(error.message));
  // The page runs under its Content-Security-Policy: anything it blocks is a problem.
  page.on("console", (message) => {
    if (/Content[ -]Security[ -]Policy/i.test(message.text())) problems.push(message.text());
  });
  const response = await page.goto(lab.url);
  assert.match(response.headers()["content-security-policy"] ?? "", /frame-ancestors 'none'/);
  assert.equal(response.headers()["x-frame-options"], "DENY");
  await page.waitForSelector("body[data-ready=true]");
  return { page, problems };
}

/** Picks `photo` under `recipe` on `page`; resolves with its card once succeeded. */
async function processed(page, recipe, photo) {
  await page.selectOption("#recipe", recipe);
  await page.setInputFiles("#file", path.join(photos, photo));
  const card = page.locator("article.upload").first();
  await expectFinal(card, "succeeded");
  return card;
}

test("a photo is uploaded, processed, previewed and downloaded", async () => {
  const { page, problems } = await openPage();
  const card = await processed(page, "web", "photo-12mp.jpg");
  const figures = card.locator("figure.output");
  assert.equal(await figures.count(), 4);
  // The lossy WebP previews in Chromium too, at its stated size.
  const webp = card.locator("figure.output[data-name=large-webp]");
  assert.match(await webp.locator("figcaption").innerText(), /1024×768/);
  const webpSize = await webp.locator("img").evaluate(async (img) => {
    await img.decode();
    return [img.naturalWidth, img.naturalHeight];
  });
  assert.deepEqual(webpSize, [1024, 768]);

  const large = card.locator("figure.output[data-name=large]");
  assert.match(await large.locator("figcaption").innerText(), /1024×768/);
  // The preview really loaded from the store, at the stated size.
  const natural = await large.locator("img").evaluate(async (img) => {
    await img.decode();
    return [img.naturalWidth, img.naturalHeight];
  });
  assert.deepEqual(natural, [1024, 768]);

  const [download] = await Promise.all([page.waitForEvent("download"), large.locator("a.download").click()]);
  assert.equal(download.suggestedFilename(), "photo-12mp-large.jpg");
  const saved = path.join(dataDir, "downloaded.jpg");
  await download.saveAs(saved);
  const bytes = readFileSync(saved);
  assert.deepEqual([...bytes.subarray(0, 3)], [0xff, 0xd8, 0xff], "the download is a JPEG");
  assert.match(await large.locator("figcaption").innerText(), new RegExp(`${(bytes.length / 1024).toFixed(1)} KB`));

  // What the original was, what it became, and how long it took.
  const original = readFileSync(path.join(photos, "photo-12mp.jpg")).length;
  const saving = -Math.trunc((1 - bytes.length / original) * 100); // cut, as the page does
  const summary = await card.locator(".summary").innerText();
  assert.match(summary, /^Original 4000×3000, 1\.8 MB → /);
  assert.ok(summary.includes(`→ large ${(bytes.length / 1024).toFixed(1)} KB (−${-saving} %)`), summary);
  assert.match(summary, /processed in \d+ ms/);
  assert.match(await large.locator("figcaption").innerText(), new RegExp(`\\(−${-saving} %\\)`));

  // Before and after: the original under the largest output, the slider moving the line.
  const compare = card.locator(".compare");
  await compare.waitFor({ state: "visible" });
  const after = compare.locator("img.after");
  assert.equal(await after.getAttribute("src"), await large.locator("img").getAttribute("src"));
  assert.equal(await after.evaluate((img) => img.style.clipPath), "inset(0px 0px 0px 50%)");
  await compare.locator("input[type=range]").fill("20");
  assert.equal(await after.evaluate((img) => img.style.clipPath), "inset(0px 0px 0px 20%)");
  assert.ok(await compare.locator("img.before").evaluate((img) => img.naturalWidth > 0), "the original shows");
  assert.deepEqual(problems, []);
});

test("the outputs' markup for a website loads from their stable addresses", async () => {
  const { page, problems } = await openPage();
  const card = await processed(page, "web", "photo-12mp.jpg");
  const embed = card.locator("details.embed");
  await embed.locator("summary").click();
  const markup = await embed.locator("textarea").inputValue();
  const images = `${lab.url.replace(/\/$/, "")}/i/`;
  // JPEG is the <img>, WebP its <source>; each a srcset of both widths.
  assert.match(markup, /^<picture>\n  <source type="image\/webp" srcset="\S+\/thumb-webp\.webp 256w, \S+\/large-webp\.webp 1024w" sizes="\(max-width: 1024px\) 100vw, 1024px">\n/);
  assert.match(markup, /<img src="\S+\/large\.jpg" srcset="\S+\/thumb\.jpg 256w, \S+\/large\.jpg 1024w" sizes="\(max-width: 1024px\) 100vw, 1024px" width="1024" height="768"/);
  for (const url of markup.match(/http:\/\/[^\s"]+/g)) assert.ok(url.startsWith(images), url);

  // Put on another page, as a website would: the browser picks the WebP and shows it.
  const site = await (await browser.newContext()).newPage();
  await site.setContent(`<!doctype html><body>${markup}</body>`);
  const shown = await site.locator("img").evaluate(async (img) => {
    await img.decode();
    return { src: img.currentSrc, width: img.naturalWidth };
  });
  assert.match(shown.src, /\/large-webp\.webp$/);
  assert.equal(shown.width, 1024);
  assert.deepEqual(problems, []);
});

test("a website's small screen gets a smaller width, made on demand", async () => {
  const { page, problems } = await openPage();
  const card = await processed(page, "site", "photo-12mp.jpg");
  await card.locator("details.embed summary").click();
  const markup = await card.locator("details.embed textarea").inputValue();
  assert.match(markup, /srcset="\S+\/large-webp\.w320\.webp 320w, \S+\/large-webp\.w640\.webp 640w, \S+\/large-webp\.webp 1024w"/);
  assert.match(markup, /srcset="\S+\/large\.w320\.jpg 320w, \S+\/large\.w640\.jpg 640w, \S+\/large\.jpg 1024w"/);

  // A 400 px wide screen: the browser asks for the 640 px WebP, which is made then.
  const site = await (await browser.newContext({ viewport: { width: 400, height: 800 } })).newPage();
  await site.setContent(`<!doctype html><body style="margin:0">${markup}</body>`);
  const shown = await site.locator("img").evaluate(async (img) => {
    await img.decode();
    return { src: img.currentSrc, width: img.naturalWidth };
  });
  assert.match(shown.src, /\/large-webp\.w640\.webp$/);
  const made = await site.evaluate(async (src) => {
    const response = await fetch(src);
    const bitmap = await createImageBitmap(await response.blob());
    return { type: response.headers.get("content-type"), width: bitmap.width, height: bitmap.height };
  }, shown.src);
  assert.deepEqual(made, { type: "image/webp", width: 640, height: 480 });
  assert.deepEqual(problems, []);
});

for (const colorScheme of ["light", "dark"]) {
  test(`axe-core finds no accessibility violations (${colorScheme} theme)`, async () => {
    const { page, problems } = await openPage({ colorScheme });
    await page.selectOption("#recipe", "web");
    await page.setInputFiles("#file", path.join(photos, "photo-small.jpg"));
    await expectFinal(page.locator("article.upload").first(), "succeeded");
    await page.locator(".compare").first().waitFor({ state: "visible" });
    const background = await page.evaluate(() => getComputedStyle(document.documentElement).backgroundColor);
    assert.equal(background, colorScheme === "dark" ? "rgb(18, 22, 30)" : "rgb(246, 247, 250)", "the theme follows the system");
    // Evaluated by the browser's debugging protocol: the page's CSP forbids a script tag.
    await page.evaluate(readFileSync(axePath, "utf8"));
    const violations = await page.evaluate(async () => {
      const results = await window.axe.run(document, { resultTypes: ["violations"] });
      return results.violations.map((v) => `${v.id}: ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`);
    });
    assert.deepEqual(violations, []);
    assert.deepEqual(problems, []);
  });
}

test("sizes compared with the original are cut, never rounded to all or nothing", async () => {
  const page = await browser.newPage();
  await page.goto(lab.url);
  await page.waitForSelector("body[data-ready=true]");
  const shown = await page.evaluate(() =>
    [[5, 1000], [4, 1000], [0, 1000], [57, 1000], [1000, 1000], [1004, 1000], [1500, 1000]].map(([bytes, original]) =>
      saving(bytes, original),
    ),
  );
  assert.deepEqual(shown, ["−99.5 %", "−99.6 %", "−100 %", "−94 %", "0 %", "0 %", "+50 %"]);
  await page.close();
});

test("an upload can be cancelled while it goes up, and tried again", async () => {
  const { page, problems } = await openPage();
  await page.selectOption("#recipe", "web");
  // Hold the upload to the store until it is cancelled.
  let held;
  const holding = new Promise((resolve) => (held = resolve));
  await page.route(/\/minilab-uploads$/, (route) => {
    held();
    return new Promise(() => {}); // never answered: the page aborts it
  });
  await page.setInputFiles("#file", path.join(photos, "photo-small.jpg"));
  const card = page.locator("article.upload").first();
  await holding;
  await card.locator("button.cancel").click();
  await card.locator(".state[data-state=cancelled]").waitFor();
  assert.equal(await card.locator(".error").getAttribute("data-code"), "cancelled");
  assert.equal(await card.locator("button.cancel").isVisible(), false);

  await page.unroute(/\/minilab-uploads$/);
  await card.locator("button.retry").click();
  const again = page.locator("article.upload").first();
  await expectFinal(again, "succeeded");
  assert.equal(await page.locator("article.upload", { hasText: "photo-small.jpg" }).count(), 1, "the retry replaces the card");
  assert.equal(await again.locator("button.retry").isVisible(), false);
  assert.deepEqual(problems, []);
});

test("previews show the image's placeholder until the image itself arrives", async () => {
  const { page, problems } = await openPage();
  // Hold the large preview's download until the placeholder has been seen.
  let release;
  const released = new Promise((resolve) => (release = resolve));
  await page.route(/\/large\.jpg\?/, async (route) => {
    await released;
    await route.continue();
  });
  await page.selectOption("#recipe", "web");
  await page.setInputFiles("#file", path.join(photos, "photo-12mp.jpg"));
  const card = page.locator("article.upload").first();
  await expectFinal(card, "succeeded");
  const image = card.locator("figure.output[data-name=large] img");
  const waiting = await image.evaluate((img) => ({
    complete: img.complete && img.naturalWidth > 0,
    color: img.style.backgroundColor,
    image: img.style.backgroundImage,
  }));
  assert.equal(waiting.complete, false, "the held image has not loaded");
  assert.match(waiting.color, /^rgb\(\d+, \d+, \d+\)$/);
  assert.match(waiting.image, /^url\("data:image\/png;base64,/);
  release();
  // Bounded: the image loads and the page clears the placeholder, or this times out.
  await page.waitForFunction((img) => img.naturalWidth > 0 && img.style.backgroundImage === "",
    await image.elementHandle(), { timeout: FINISH_TIMEOUT_MS });
  const loaded = await image.evaluate((img) => [img.style.backgroundImage, img.className]);
  assert.deepEqual(loaded, ["", ""], "the placeholder goes once the image is there");
  assert.deepEqual(problems, []);
});

test("recent uploads come back after a reload, placeholders first, links fresh", async () => {
  const { page, problems } = await openPage();
  await page.selectOption("#recipe", "web");
  await page.setInputFiles("#file", path.join(photos, "photo-small.jpg"));
  await expectFinal(page.locator("article.upload").first(), "succeeded");

  // Hold the previews' downloads after the reload until the placeholder is seen.
  let release;
  const released = new Promise((resolve) => (release = resolve));
  await page.route(/\/large\.jpg\?/, async (route) => {
    await released;
    await route.continue();
  });
  const asked = page.waitForRequest(/\/api\/v1\/uploads\/[0-9a-z]+\/events$/);
  await page.reload();
  await page.waitForSelector("body[data-ready=true]");
  await asked; // the status, and with it fresh download links, asked for again
  const card = page.locator("article.upload").first();
  assert.equal(await card.locator(".filename").innerText(), "photo-small.jpg");
  await expectFinal(card, "succeeded");
  const image = card.locator("figure.output[data-name=large] img");
  assert.match(await image.evaluate((img) => img.style.backgroundImage), /^url\("data:image\/png;base64,/);
  release();
  await page.waitForFunction((img) => img.naturalWidth > 0 && img.style.backgroundImage === "",
    await image.elementHandle(), { timeout: FINISH_TIMEOUT_MS });
  assert.equal(await image.evaluate((img) => img.style.backgroundImage), "");
  assert.deepEqual(problems, []);
});

test("an upload is deleted from its card: its images are gone, and so is its card after a reload", async () => {
  const { page, problems } = await openPage();
  const card = await processed(page, "web", "photo-small.jpg");
  const markup = await card.locator(".embed textarea").inputValue();
  const address = markup.match(/https?:\/\/[^" ]+\/i\/[^" ]+\.jpg/)[0];
  // What the server answers: a browser (or CDN) that kept the image keeps it.
  const served = (url) => page.evaluate(async (url) => (await fetch(url, { cache: "no-store" })).status, url);
  assert.equal(await served(address), 200);

  await card.locator("button.delete").click();
  await card.locator(".state[data-state=deleted]").waitFor({ timeout: FINISH_TIMEOUT_MS });
  assert.equal(await card.locator("figure.output").count(), 0);
  assert.equal(await card.locator(".embed").isVisible(), false);
  assert.equal(await served(address), 404);

  await page.reload();
  await page.waitForSelector("body[data-ready=true]");
  assert.equal(await page.locator("article.upload").count(), 0, "no longer among the recent uploads");
  assert.deepEqual(problems, []);
});

test("progress comes over the event stream, and by polling when the stream breaks", async () => {
  const { page, problems } = await openPage();
  const asked = [];
  page.on("request", (request) => {
    const match = request.url().match(/\/api\/v1\/uploads\/[0-9a-z]+(\/events|\?wait=)/);
    if (match) asked.push(match[1]);
  });
  await page.selectOption("#recipe", "web");
  await page.setInputFiles("#file", path.join(photos, "photo-small.jpg"));
  await expectFinal(page.locator("article.upload").first(), "succeeded");
  assert.deepEqual(asked, ["/events"], "the event stream alone brought the result");

  // A proxy that breaks the stream: the page polls the status instead.
  asked.length = 0;
  await page.route(/\/events$/, (route) => route.abort("connectionreset"));
  await page.setInputFiles("#file", path.join(photos, "photo-small.jpg"));
  await expectFinal(page.locator("article.upload").first(), "succeeded");
  assert.equal(asked[0], "/events");
  assert.ok(asked.includes("?wait="), `the status was polled: ${asked}`);
  assert.deepEqual(problems.filter((p) => !/events/.test(p)), []);
});

test("an iPhone's HEIC photo is offered, accepted and shown turned", async () => {
  const { page, problems } = await openPage();
  // ./tests/run builds with libheif, so the picker offers HEIC.
  assert.match(await page.locator("#file").getAttribute("accept"), /image\/heic/);
  assert.match(await page.locator("#limits").innerText(), /HEIC/);
  await page.selectOption("#recipe", "web");
  await page.setInputFiles("#file", path.join(photos, "heic-rotate6.heic"));
  const card = page.locator("article.upload").first();
  await expectFinal(card, "succeeded");
  const large = card.locator("figure.output[data-name=large]");
  assert.match(await large.locator("figcaption").innerText(), /768×1024/);
  assert.deepEqual(problems, []);
});

test("a photo dropped on the page is processed too", async () => {
  const { page, problems } = await openPage();
  await page.selectOption("#recipe", "thumbnail");
  const bytes = [...readFileSync(path.join(photos, "photo-small.jpg"))];
  const dataTransfer = await page.evaluateHandle((data) => {
    const transfer = new DataTransfer();
    transfer.items.add(new File([new Uint8Array(data)], "dropped.jpg", { type: "image/jpeg" }));
    return transfer;
  }, bytes);
  await page.dispatchEvent("#dropzone", "drop", { dataTransfer });
  const card = page.locator("article.upload").first();
  await expectFinal(card, "succeeded");
  assert.match(await card.locator("figure.output figcaption").innerText(), /256×256/);
  assert.deepEqual(problems, []);
});

test("a file that is not an image gets a clear message", async () => {
  const { page, problems } = await openPage();
  await page.setInputFiles("#file", {
    name: "notes.txt",
    mimeType: "text/plain",
    buffer: Buffer.from("shopping list: milk, eggs"),
  });
  const card = page.locator("article.upload").first();
  const error = card.locator(".error");
  await error.waitFor({ state: "visible" });
  assert.equal(await error.getAttribute("data-code"), "unsupported-type");
  assert.match(await error.innerText(), /not supported.*JPEG, PNG, WebP or GIF/);

  // A web page renamed to .jpg passes the type check, and fails in processing.
  await page.setInputFiles("#file", {
    name: "holiday.jpg",
    mimeType: "image/jpeg",
    buffer: Buffer.from("<!doctype html><html><body>surprise</body></html>"),
  });
  const second = page.locator("article.upload", { hasText: "holiday.jpg" });
  await expectFinal(second, "failed");
  assert.equal(await second.locator(".error").getAttribute("data-code"), "unsupported-format");
  assert.match(await second.locator(".error").innerText(), /Processing failed/);
  assert.ok(await second.locator("button.retry").isVisible(), "a failed upload can be tried again");
  assert.deepEqual(problems, []);
});

test("a sign-in token handed over in the URL is sent with every API request", async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const problems = [];
  page.on("pageerror", (error) => problems.push(error.message));
  const sent = [];
  // The API answers as one with sign-in on would for an expired token.
  await page.route("**/api/v1/uploads", (route) => {
    sent.push(route.request().headers().authorization);
    route.fulfill({
      status: 401,
      contentType: "application/json",
      body: JSON.stringify({ error: { code: "token-expired", message: "the bearer token has expired; sign in again" } }),
    });
  });
  await page.goto(`${lab.url}#access_token=token-123&token_type=Bearer`);
  await page.waitForSelector("body[data-ready=true]");
  assert.doesNotMatch(page.url(), /access_token/, "the token leaves the address bar");
  await page.setInputFiles("#file", path.join(photos, "photo-small.jpg"));
  const error = page.locator("article.upload .error").first();
  await error.waitFor({ state: "visible" });
  assert.equal(await error.getAttribute("data-code"), "token-expired");
  assert.match(await error.innerText(), /sign-in has expired/);
  // After a reload (no token in the URL any more) the tab still has it.
  await page.reload();
  await page.waitForSelector("body[data-ready=true]");
  await page.setInputFiles("#file", path.join(photos, "photo-small.jpg"));
  await page.locator("article.upload .error").first().waitFor({ state: "visible" });
  assert.deepEqual(sent, ["Bearer token-123", "Bearer token-123"]);
  // A link with another account's token does not switch the signed-in tab: it is
  // ignored with a notice, and requests keep the tab's own token.
  await page.goto("about:blank");
  await page.goto(`${lab.url}#access_token=token-other&token_type=Bearer`);
  await page.waitForSelector("body[data-ready=true]");
  assert.doesNotMatch(page.url(), /access_token/, "the ignored token leaves the address bar too");
  const notice = page.locator("#page-error");
  assert.equal(await notice.getAttribute("data-code"), "sign-in-link-ignored");
  assert.match(await notice.innerText(), /ignored.*new tab/);
  await page.setInputFiles("#file", path.join(photos, "photo-small.jpg"));
  await page.locator("article.upload .error").first().waitFor({ state: "visible" });
  assert.deepEqual(sent, ["Bearer token-123", "Bearer token-123", "Bearer token-123"]);
  assert.deepEqual(problems, []);
  await context.close();
});
