// minilab's upload page: ask the API for a presigned POST, upload straight to the
// bucket with progress, wait for the worker's manifest, show and offer the outputs.
"use strict";

const $ = (selector, root = document) => root.querySelector(selector);

/** An error with a stable code, from the API, the store or the worker. */
class UploadError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

/** What a person should read for each stable code. */
const MESSAGES = {
  "too-large": (e) => `This file is too large. ${e.message}`,
  "unsupported-type": () => "This file type is not supported. Choose a JPEG, PNG, WebP or GIF image.",
  "empty-file": () => "This file is empty.",
  "unsupported-format": () => "Processing failed: this file is not a JPEG, PNG, WebP or GIF image.",
  "corrupt-image": () => "Processing failed: the image is damaged or incomplete.",
  "dimensions-too-large": (e) => `Processing failed: the image is too wide or too tall. ${e.message}`,
  "too-many-pixels": (e) => `Processing failed: the image has too many pixels. ${e.message}`,
  "file-too-large": (e) => `Processing failed: the file is too large. ${e.message}`,
  "too-many-frames": (e) => `Processing failed: too many frames (or JPEG scans). ${e.message}`,
  "time-budget-exceeded": () => "Processing failed: the image took too long to process.",
  "link-expired": () => "The upload link expired before the upload finished. Please try again.",
  "upload-expired": () => "The upload link expired before any file arrived. Please try again.",
  "network": () => "The upload could not reach the storage. Check your connection and try again.",
  "token-missing": () => "Sign in to upload photos.",
  "token-expired": () => "Your sign-in has expired. Sign in again and retry.",
  "rate-limited": (e) => `Too many uploads at once. ${e.message}`,
  "cancelled": () => "The upload was cancelled.",
};

function describe(error) {
  const message = MESSAGES[error.code];
  if (message) return message(error);
  if (error.code && error.code.startsWith("token-")) return `Sign-in failed: ${error.message}`;
  if (error.code && error.code.startsWith("storage-")) return `The storage refused the upload: ${error.message}`;
  return error.message || "Something went wrong. Please try again.";
}

function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

/** The API's base URL: the page's own origin unless the page was published with another. */
const API_BASE = (document.querySelector('meta[name="minilab-api"]')?.content || "").replace(/\/+$/, "");

/**
 * The sign-in token, when the site signed the person in: handed over in the page's
 * URL as `#access_token=...` (what an OIDC implicit redirect delivers), then kept for
 * this tab in sessionStorage and taken out of the address bar. A link carrying
 * another token does not switch a signed-in tab to that account (a page elsewhere
 * could send a person into someone else's account that way): it is ignored, and the
 * page says so; a new tab takes it.
 */
const TOKEN_KEY = "minilab-token";
function signInToken() {
  const handed = new URLSearchParams(location.hash.slice(1)).get("access_token");
  const kept = sessionStorage.getItem(TOKEN_KEY);
  if (handed) history.replaceState(null, "", location.pathname + location.search);
  if (handed && kept && handed !== kept) return { token: kept, ignoredLink: true };
  if (handed) sessionStorage.setItem(TOKEN_KEY, handed);
  return { token: handed || kept, ignoredLink: false };
}
const SIGN_IN = signInToken();
const TOKEN = SIGN_IN.token;

async function api(path, options = {}) {
  const authorization = TOKEN ? { authorization: `Bearer ${TOKEN}` } : {};
  const response = await fetch(API_BASE + path, {
    ...options,
    headers: { "content-type": "application/json", ...authorization, ...options.headers },
  });
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const error = body && body.error;
    throw new UploadError(error ? error.code : `http-${response.status}`, error ? error.message : response.statusText);
  }
  return body;
}

/**
 * POSTs the form to the bucket, reporting progress; resolves when stored, rejects
 * with `cancelled` when `signal` aborts it first.
 */
function postToStore(upload, file, onProgress, signal) {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(new UploadError("cancelled", ""));
    const form = new FormData();
    for (const [name, value] of Object.entries(upload.fields)) form.append(name, value);
    form.append("file", file); // S3 ignores fields after the file
    const request = new XMLHttpRequest();
    request.open("POST", upload.url);
    request.upload.onprogress = (event) => {
      if (event.lengthComputable) onProgress(event.loaded / event.total);
    };
    request.onload = () => {
      if (request.status >= 200 && request.status < 300) return resolve();
      reject(storeError(request.responseText, request.status));
    };
    request.onerror = () => reject(new UploadError("network", ""));
    request.onabort = () => reject(new UploadError("cancelled", ""));
    signal.addEventListener("abort", () => request.abort(), { once: true });
    request.send(form);
  });
}

/** Turns S3's XML error into a stable code and a readable message. */
function storeError(xml, status) {
  const doc = new DOMParser().parseFromString(xml || "", "application/xml");
  const code = (doc.querySelector("Code") || {}).textContent || `http-${status}`;
  const message = (doc.querySelector("Message") || {}).textContent || "";
  if (code === "EntityTooLarge") return new UploadError("too-large", "The storage refused it.");
  if (/expired/i.test(message) || /expired/i.test(code)) return new UploadError("link-expired", message);
  return new UploadError(`storage-${code}`, `${code}${message ? `: ${message}` : ""}`);
}

const FINAL_STATES = ["succeeded", "failed", "expired", "deleted"];

/**
 * The upload's final status, reporting each state on the way: from the API's event
 * stream when it can be read, by long-polling the status otherwise.
 */
async function waitForResult(statusUrl, onState) {
  try {
    const status = await followEvents(statusUrl, onState);
    if (status) return status;
  } catch {
    // The stream broke (a proxy that buffers, a dropped connection): poll instead.
  }
  return pollForResult(statusUrl, onState);
}

/** Silence longer than this (the API sends a keep-alive every 15 s) ends the stream. */
const STREAM_SILENCE_MS = 45000;

/**
 * Reads `GET {statusUrl}/events` (Server-Sent Events, read with fetch so the sign-in
 * header goes along) until the final status; null when the stream ends before it.
 */
async function followEvents(statusUrl, onState) {
  const abort = new AbortController();
  let silence = setTimeout(() => abort.abort(), STREAM_SILENCE_MS);
  try {
    const authorization = TOKEN ? { authorization: `Bearer ${TOKEN}` } : {};
    const response = await fetch(`${API_BASE}${statusUrl}/events`, {
      headers: { accept: "text/event-stream", ...authorization },
      signal: abort.signal,
    });
    if (!response.ok || !response.body) return null;
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return null;
      clearTimeout(silence);
      silence = setTimeout(() => abort.abort(), STREAM_SILENCE_MS);
      buffer += value.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const event = parseEvent(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
        if (event.name === "api-error") return null;
        if (event.name !== "status" || !event.data) continue;
        const status = JSON.parse(event.data);
        onState(status.state);
        if (FINAL_STATES.includes(status.state)) return status;
      }
    }
  } finally {
    clearTimeout(silence);
    abort.abort();
  }
}

/** One Server-Sent Event block: its name and its data lines joined. */
function parseEvent(block) {
  let name = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) name = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
  }
  return { name, data: data.join("\n") };
}

/** Long-polls the status until it is final; bounded to about ten minutes. */
async function pollForResult(statusUrl, onState) {
  for (let attempt = 0; attempt < 40; attempt++) {
    const status = await api(`${statusUrl}?wait=15`);
    onState(status.state);
    if (FINAL_STATES.includes(status.state)) return status;
  }
  throw new UploadError("timeout", "Processing is taking unusually long. Reload the page later to check again.");
}

const STATE_LABELS = {
  preparing: "Preparing…",
  uploading: "Uploading…",
  awaiting_upload: "Uploading…",
  processing: "Processing…",
  succeeded: "Done",
  failed: "Failed",
  expired: "Expired",
  refused: "Refused",
  cancelled: "Cancelled",
  deleted: "Deleted",
};

function setState(card, state) {
  const label = $(".state", card);
  label.dataset.state = state;
  label.textContent = STATE_LABELS[state] || state;
}

function showError(card, error) {
  const box = $(".error", card);
  box.textContent = describe(error);
  box.dataset.code = error.code;
  box.hidden = false;
}

/** The placeholder as CSS: the dominant colour under the decoded ThumbHash
 * (thumbHashToRGBA and rgbaToDataURL: web/vendor/thumbhash.js). */
function placeholderStyle(placeholder) {
  if (!placeholder) return null;
  try {
    const hash = Uint8Array.from(atob(placeholder.thumbhash), (c) => c.charCodeAt(0));
    const { w, h, rgba } = thumbHashToRGBA(hash);
    return { color: placeholder.dominantColor, image: `url("${rgbaToDataURL(w, h, rgba)}")` };
  } catch {
    return { color: placeholder.dominantColor, image: "none" };
  }
}

/**
 * "−94 %": how much smaller `bytes` is than the original (or "+12 %" larger). Cut, not
 * rounded, and to a tenth past 99: 99.5 % smaller is "−99.5 %", never "−100 %".
 */
function saving(bytes, original) {
  if (!original) return "";
  const percent = (bytes / original - 1) * 100;
  const scale = Math.abs(percent) >= 99 && Math.abs(percent) < 100 ? 10 : 1;
  const size = Math.trunc(Math.abs(percent) * scale) / scale;
  if (size === 0) return "0 %";
  return percent < 0 ? `−${size} %` : `+${size} %`;
}

/** What the original was and what processing made of it, in one line. */
function summary(status) {
  const parts = [];
  const source = status.source;
  if (source) {
    const size = source.width && source.height ? `${source.width}×${source.height}, ` : "";
    const largest = largestOutput(status.outputs);
    const became = largest
      ? ` → ${largest.name} ${formatBytes(largest.bytes)} (${saving(largest.bytes, source.bytes)})`
      : "";
    parts.push(`Original ${size}${formatBytes(source.bytes)}${became}`);
  }
  if (typeof status.processingMs === "number") parts.push(`processed in ${formatDuration(status.processingMs)}`);
  return parts.join(" · ");
}

function formatDuration(ms) {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`;
}

function largestOutput(outputs) {
  return outputs.reduce((best, o) => (!best || o.width * o.height > best.width * best.height ? o : best), null);
}

function showOutputs(card, status, original) {
  const { outputs, placeholder } = status;
  const list = $(".outputs", card);
  const shown = placeholderStyle(placeholder);
  $(".summary", card).textContent = summary(status);
  const sourceBytes = status.source && status.source.bytes;
  for (const output of outputs) {
    const figure = document.createElement("figure");
    figure.className = "output";
    figure.dataset.name = output.name;
    const image = document.createElement("img");
    if (shown) {
      // Until the image arrives: a blurred picture of it, on its dominant colour.
      image.classList.add("placeholder");
      image.style.backgroundColor = shown.color;
      image.style.backgroundImage = shown.image;
      const clear = () => {
        image.classList.remove("placeholder");
        image.style.backgroundColor = image.style.backgroundImage = "";
      };
      image.addEventListener("load", clear, { once: true });
    }
    image.src = output.url;
    image.alt = `${output.name} output`;
    image.width = output.width;
    image.height = output.height;
    const caption = document.createElement("figcaption");
    const title = document.createElement("strong");
    title.textContent = output.name;
    const meta = document.createElement("span");
    meta.className = "meta";
    const saved = saving(output.bytes, sourceBytes);
    meta.textContent = `${output.width}×${output.height} · ${formatBytes(output.bytes)}${saved ? ` (${saved})` : ""} · ${output.contentType}`;
    caption.append(title, meta);
    const link = document.createElement("a");
    link.className = "download";
    link.href = output.url; // presigned with Content-Disposition: attachment
    link.download = "";
    link.textContent = `Download ${output.name}`;
    figure.append(image, caption, link);
    list.append(figure);
  }
  const largest = largestOutput(outputs);
  if (original && largest) showComparison(card, original, largest);
  showEmbed(card, outputs);
}

/** Escapes text for an HTML attribute value in double quotes. */
function attribute(text) {
  return String(text).replace(/&/g, "&amp;").replace(/"/g, "&quot;").replace(/</g, "&lt;");
}

/**
 * Markup for a website, from the outputs' stable addresses (`imageUrl`, and the
 * smaller `widths` each is made at on demand): outputs of one type and shape become
 * one `srcset` by width; the JPEG or PNG set with the
 * largest image is the `<img>`, other types of the same shape (AVIF, then WebP) its
 * `<source>`s in a `<picture>`. `null` when no output has a stable address (a
 * signed one, of a private upload, expires: nothing to put on a website).
 */
function embedMarkup(outputs, base) {
  // Each output, and each smaller width it is served at (`large.w640.jpg`).
  const stable = outputs.filter((o) => o.imageUrl && !/[?&]signature=/.test(o.imageUrl)).flatMap((o) => [
    o,
    ...(o.widths || []).map((w) => ({
      ...o,
      imageUrl: o.imageUrl.replace(/(\.[a-z]+)(?=\?|$)/, `.w${w}$1`),
      width: w,
      height: Math.max(1, Math.round((o.height * w) / o.width)),
    })),
  ]);
  if (stable.length === 0) return null;
  const shape = (o) => Math.round((o.width / o.height) * 50);
  const sets = new Map();
  for (const output of stable) {
    const key = `${output.contentType} ${shape(output)}`;
    if (!sets.has(key)) sets.set(key, []);
    sets.get(key).push(output);
  }
  const largest = (set) => set.reduce((a, b) => (b.width > a.width ? b : a));
  const srcset = (set) =>
    [...set].sort((a, b) => a.width - b.width).map((o) => `${new URL(o.imageUrl, base).href} ${o.width}w`).join(", ");
  const candidates = [...sets.values()];
  const fallbacks = candidates.filter((set) => /^image\/(jpeg|png|gif)$/.test(set[0].contentType));
  const biggest = (list) => list.reduce((a, b) => (largest(b).width > largest(a).width ? b : a));
  const fallback = biggest(fallbacks.length ? fallbacks : candidates);
  const top = largest(fallback);
  const order = ["image/avif", "image/webp", "image/png", "image/jpeg", "image/gif"];
  const sources = candidates
    .filter((set) => set !== fallback && shape(set[0]) === shape(top))
    .sort((a, b) => order.indexOf(a[0].contentType) - order.indexOf(b[0].contentType));
  // Each <source> needs its own sizes: without one it is 100vw, not the <img>'s.
  const sizes = `sizes="(max-width: ${top.width}px) 100vw, ${top.width}px"`;
  const img = `<img src="${attribute(new URL(top.imageUrl, base).href)}" srcset="${attribute(srcset(fallback))}" ` +
    `${sizes} width="${top.width}" height="${top.height}" alt="" loading="lazy" decoding="async">`;
  if (sources.length === 0) return img;
  const lines = sources.map((set) => `  <source type="${attribute(set[0].contentType)}" srcset="${attribute(srcset(set))}" ${sizes}>`);
  return ["<picture>", ...lines, `  ${img}`, "</picture>"].join("\n");
}

/** "Use on a website": the markup to copy, when the outputs have stable addresses. */
function showEmbed(card, outputs) {
  const markup = embedMarkup(outputs, API_BASE ? `${API_BASE}/` : location.href);
  const box = $(".embed", card);
  if (!markup) return;
  const code = $("textarea", box);
  code.value = markup;
  code.rows = markup.split("\n").length;
  const copy = $(".copy", box);
  copy.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(markup);
      copy.textContent = "Copied";
    } catch {
      code.select(); // no clipboard here: selected, for the keyboard's copy
    }
  });
  box.hidden = false;
}

/**
 * Before and after for the largest output: the original (this browser's own copy of
 * the file) and the output on top of each other, a slider moving the line between.
 * Not shown when the browser cannot display the original (HEIC in most browsers).
 */
function showComparison(card, original, output) {
  const box = $(".compare", card);
  const before = $("img.before", box);
  const after = $("img.after", box);
  const slider = $("input", box);
  const url = URL.createObjectURL(original);
  before.addEventListener("load", () => (box.hidden = false), { once: true });
  before.addEventListener("error", () => URL.revokeObjectURL(url), { once: true });
  before.src = url;
  after.src = output.url;
  after.alt = `${output.name} output (after)`;
  const move = () => {
    after.style.setProperty("clip-path", `inset(0 0 0 ${slider.value}%)`);
    box.style.setProperty("--split", `${slider.value}%`);
  };
  slider.addEventListener("input", move);
  move();
}

/** The file's type; browsers on Linux and Windows give HEIC photos none. */
function contentType(file) {
  if (file.type) return file.type;
  if (/\.(heic|heif)$/i.test(file.name)) return "image/heic";
  return "application/octet-stream";
}

/** A new card for an upload, on top of the list. */
function newCard(filename) {
  const card = $("#upload-template").content.firstElementChild.cloneNode(true);
  $(".filename", card).textContent = filename;
  $("#uploads").prepend(card);
  return card;
}

/** Waits for the upload's final status and shows it on its card; a finished upload
 * can be deleted by whoever holds its delete token (kept in this browser), or by
 * its signed-in owner. */
async function finish(card, upload, original) {
  const progress = $(".progress", card);
  setState(card, "processing");
  const status = await waitForResult(upload.statusUrl, (state) => setState(card, state));
  progress.hidden = true;
  if (status.state === "succeeded") showOutputs(card, status, original);
  else if (status.state === "failed") showError(card, new UploadError(status.error.code, status.error.message));
  else if (status.state === "expired") showError(card, new UploadError("upload-expired", ""));
  else if (status.state === "deleted") forget(upload.id);
  if (["succeeded", "failed"].includes(status.state) && (upload.deleteToken || TOKEN)) {
    offer(card, ".delete", () => deleteUpload(card, upload));
  }
}

/** DELETE the upload: its source, outputs and sizes are gone, and so is its card's
 * content and its place among the recent uploads. */
async function deleteUpload(card, upload) {
  const token = upload.deleteToken ? { "x-delete-token": upload.deleteToken } : {};
  try {
    await api(`/api/v1/uploads/${encodeURIComponent(upload.id)}`, { method: "DELETE", headers: token });
  } catch (error) {
    showError(card, error);
    return;
  }
  for (const part of [".outputs", ".summary"]) $(part, card).replaceChildren();
  for (const part of [".compare", ".embed", ".error"]) $(part, card).hidden = true;
  setState(card, "deleted");
  forget(upload.id);
}

function refused(card, error) {
  $(".progress", card).hidden = true;
  const cancelled = error instanceof UploadError && error.code === "cancelled";
  setState(card, cancelled ? "cancelled" : "refused");
  showError(card, error instanceof UploadError ? error : new UploadError("network", String(error)));
}

/** A button on the card that runs `action` once, then goes. */
function offer(card, selector, action) {
  const button = $(selector, card);
  button.hidden = false;
  button.addEventListener("click", () => {
    button.hidden = true;
    action();
  }, { once: true });
  return button;
}

// Recent uploads, newest first, kept across reloads in this browser: their status
// is asked again, so download links are fresh whenever the page is opened.
const RECENT_KEY = "minilab.recent-uploads";
const MAX_RECENT = 12;

function recentUploads() {
  try {
    const list = JSON.parse(localStorage.getItem(RECENT_KEY));
    return Array.isArray(list) ? list.filter((u) => u && typeof u.statusUrl === "string") : [];
  } catch {
    return [];
  }
}

function keepRecent(list) {
  try {
    localStorage.setItem(RECENT_KEY, JSON.stringify(list));
  } catch {
    // Storage full or disabled: the upload still works, it is just not kept.
  }
}

function remember(upload) {
  keepRecent([upload, ...recentUploads().filter((u) => u.id !== upload.id)].slice(0, MAX_RECENT));
}

function forget(id) {
  keepRecent(recentUploads().filter((u) => u.id !== id));
}

async function handleFile(file, recipe) {
  const card = newCard(file.name);
  const progress = $(".progress", card);
  const cancel = new AbortController();
  const cancelButton = offer(card, ".cancel", () => cancel.abort());
  try {
    const ticket = await api("/api/v1/uploads", {
      method: "POST",
      body: JSON.stringify({
        filename: file.name,
        contentType: contentType(file),
        size: file.size,
        recipe,
      }),
    });
    const upload = { id: ticket.id, statusUrl: ticket.statusUrl, filename: file.name, deleteToken: ticket.deleteToken };
    remember(upload);
    setState(card, "uploading");
    await postToStore(ticket.upload, file, (fraction) => (progress.value = fraction), cancel.signal);
    cancelButton.hidden = true;
    progress.value = 1;
    await finish(card, upload, file);
  } catch (error) {
    refused(card, error);
  }
  cancelButton.hidden = true;
  if (["failed", "refused", "cancelled", "expired"].includes($(".state", card).dataset.state)) {
    offer(card, ".retry", () => {
      card.remove();
      handleFile(file, recipe);
    });
  }
}

/** The recent uploads again, oldest first so the newest ends on top. */
function showRecent() {
  for (const upload of recentUploads().reverse()) {
    const card = newCard(upload.filename || upload.id);
    $(".progress", card).hidden = true;
    finish(card, upload).catch((error) => refused(card, error));
  }
}

async function start() {
  const select = $("#recipe");
  const pageError = $("#page-error");
  if (SIGN_IN.ignoredLink) {
    pageError.textContent =
      "A sign-in link for another account was ignored: this tab stays signed in as before. Open the link in a new tab to use that account.";
    pageError.dataset.code = "sign-in-link-ignored";
    pageError.hidden = false;
  }
  try {
    const { recipes, maxUploadBytes, acceptedContentTypes } = await api("/api/v1/recipes");
    select.replaceChildren(
      ...recipes.map((recipe) => {
        const option = new Option(recipe.name, recipe.name);
        option.dataset.description = recipe.description;
        return option;
      }),
    );
    if (recipes.some((r) => r.name === "web")) select.value = "web";
    select.disabled = false;
    const describeRecipe = () => ($("#recipe-description").textContent = select.selectedOptions[0].dataset.description);
    select.addEventListener("change", describeRecipe);
    describeRecipe();
    const heic = acceptedContentTypes.includes("image/heic");
    $("#limits").textContent = `JPEG, PNG, WebP, GIF${heic ? " or HEIC" : ""}, up to ${formatBytes(maxUploadBytes)}.`;
    if (heic) $("#file").accept += ",image/heic,image/heif,.heic,.heif";
  } catch (error) {
    pageError.textContent = `The service is not available: ${describe(error)}`;
    pageError.hidden = false;
    return;
  }

  const take = (files) => {
    for (const file of files) handleFile(file, select.value);
  };
  const input = $("#file");
  input.addEventListener("change", () => {
    take(input.files);
    input.value = "";
  });
  const zone = $("#dropzone");
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    take(event.dataTransfer.files);
  });
  zone.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") input.click();
  });
  showRecent();
  document.body.dataset.ready = "true";
}

start();
