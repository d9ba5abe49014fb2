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

const FINAL_STATES = ["succeeded", "failed", "expired"];

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

/** The placeholder as CSS: the dominant colour under the decoded ThumbHash. */
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

/** Waits for the upload's final status and shows it on its card. */
async function finish(card, statusUrl, original) {
  const progress = $(".progress", card);
  setState(card, "processing");
  const status = await waitForResult(statusUrl, (state) => setState(card, state));
  progress.hidden = true;
  if (status.state === "succeeded") showOutputs(card, status, original);
  else if (status.state === "failed") showError(card, new UploadError(status.error.code, status.error.message));
  else if (status.state === "expired") showError(card, new UploadError("upload-expired", ""));
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

function remember(upload) {
  const list = [upload, ...recentUploads().filter((u) => u.id !== upload.id)].slice(0, MAX_RECENT);
  try {
    localStorage.setItem(RECENT_KEY, JSON.stringify(list));
  } catch {
    // Storage full or disabled: the upload still works, it is just not kept.
  }
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
    remember({ id: ticket.id, statusUrl: ticket.statusUrl, filename: file.name });
    setState(card, "uploading");
    await postToStore(ticket.upload, file, (fraction) => (progress.value = fraction), cancel.signal);
    cancelButton.hidden = true;
    progress.value = 1;
    await finish(card, ticket.statusUrl, file);
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
    finish(card, upload.statusUrl).catch((error) => refused(card, error));
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

// ThumbHash decoding, from thumbhash 0.1.1 by Evan Wallace (https://github.com/evanw/thumbhash),
// MIT licence: Copyright (c) 2023 Evan Wallace. Permission is hereby granted, free of charge,
// to any person obtaining a copy of this software and associated documentation files (the
// "Software"), to deal in the Software without restriction, including without limitation the
// rights to use, copy, modify, merge, publish, distribute, sublicense, and/or sell copies of
// the Software, and to permit persons to whom the Software is furnished to do so, subject to
// the following conditions: The above copyright notice and this permission notice shall be
// included in all copies or substantial portions of the Software. THE SOFTWARE IS PROVIDED
// "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED.
/**
 * Decodes a ThumbHash to an RGBA image. RGB is not be premultiplied by A.
 *
 * @param hash The bytes of the ThumbHash.
 * @returns The width, height, and pixels of the rendered placeholder image.
 */
function thumbHashToRGBA(hash) {
  let { PI, min, max, cos, round } = Math

  // Read the constants
  let header24 = hash[0] | (hash[1] << 8) | (hash[2] << 16)
  let header16 = hash[3] | (hash[4] << 8)
  let l_dc = (header24 & 63) / 63
  let p_dc = ((header24 >> 6) & 63) / 31.5 - 1
  let q_dc = ((header24 >> 12) & 63) / 31.5 - 1
  let l_scale = ((header24 >> 18) & 31) / 31
  let hasAlpha = header24 >> 23
  let p_scale = ((header16 >> 3) & 63) / 63
  let q_scale = ((header16 >> 9) & 63) / 63
  let isLandscape = header16 >> 15
  let lx = max(3, isLandscape ? hasAlpha ? 5 : 7 : header16 & 7)
  let ly = max(3, isLandscape ? header16 & 7 : hasAlpha ? 5 : 7)
  let a_dc = hasAlpha ? (hash[5] & 15) / 15 : 1
  let a_scale = (hash[5] >> 4) / 15

  // Read the varying factors (boost saturation by 1.25x to compensate for quantization)
  let ac_start = hasAlpha ? 6 : 5
  let ac_index = 0
  let decodeChannel = (nx, ny, scale) => {
    let ac = []
    for (let cy = 0; cy < ny; cy++)
      for (let cx = cy ? 0 : 1; cx * ny < nx * (ny - cy); cx++)
        ac.push((((hash[ac_start + (ac_index >> 1)] >> ((ac_index++ & 1) << 2)) & 15) / 7.5 - 1) * scale)
    return ac
  }
  let l_ac = decodeChannel(lx, ly, l_scale)
  let p_ac = decodeChannel(3, 3, p_scale * 1.25)
  let q_ac = decodeChannel(3, 3, q_scale * 1.25)
  let a_ac = hasAlpha && decodeChannel(5, 5, a_scale)

  // Decode using the DCT into RGB
  let ratio = thumbHashToApproximateAspectRatio(hash)
  let w = round(ratio > 1 ? 32 : 32 * ratio)
  let h = round(ratio > 1 ? 32 / ratio : 32)
  let rgba = new Uint8Array(w * h * 4), fx = [], fy = []
  for (let y = 0, i = 0; y < h; y++) {
    for (let x = 0; x < w; x++, i += 4) {
      let l = l_dc, p = p_dc, q = q_dc, a = a_dc

      // Precompute the coefficients
      for (let cx = 0, n = max(lx, hasAlpha ? 5 : 3); cx < n; cx++)
        fx[cx] = cos(PI / w * (x + 0.5) * cx)
      for (let cy = 0, n = max(ly, hasAlpha ? 5 : 3); cy < n; cy++)
        fy[cy] = cos(PI / h * (y + 0.5) * cy)

      // Decode L
      for (let cy = 0, j = 0; cy < ly; cy++)
        for (let cx = cy ? 0 : 1, fy2 = fy[cy] * 2; cx * ly < lx * (ly - cy); cx++, j++)
          l += l_ac[j] * fx[cx] * fy2

      // Decode P and Q
      for (let cy = 0, j = 0; cy < 3; cy++) {
        for (let cx = cy ? 0 : 1, fy2 = fy[cy] * 2; cx < 3 - cy; cx++, j++) {
          let f = fx[cx] * fy2
          p += p_ac[j] * f
          q += q_ac[j] * f
        }
      }

      // Decode A
      if (hasAlpha)
        for (let cy = 0, j = 0; cy < 5; cy++)
          for (let cx = cy ? 0 : 1, fy2 = fy[cy] * 2; cx < 5 - cy; cx++, j++)
            a += a_ac[j] * fx[cx] * fy2

      // Convert to RGB
      let b = l - 2 / 3 * p
      let r = (3 * l - b + q) / 2
      let g = r - q
      rgba[i] = max(0, 255 * min(1, r))
      rgba[i + 1] = max(0, 255 * min(1, g))
      rgba[i + 2] = max(0, 255 * min(1, b))
      rgba[i + 3] = max(0, 255 * min(1, a))
    }
  }
  return { w, h, rgba }
}


/**
 * Extracts the approximate aspect ratio of the original image.
 *
 * @param hash The bytes of the ThumbHash.
 * @returns The approximate aspect ratio (i.e. width / height).
 */
function thumbHashToApproximateAspectRatio(hash) {
  let header = hash[3]
  let hasAlpha = hash[2] & 0x80
  let isLandscape = hash[4] & 0x80
  let lx = isLandscape ? hasAlpha ? 5 : 7 : header & 7
  let ly = isLandscape ? header & 7 : hasAlpha ? 5 : 7
  return lx / ly
}

/**
 * Encodes an RGBA image to a PNG data URL. RGB should not be premultiplied by
 * A. This is optimized for speed and simplicity and does not optimize for size
 * at all. This doesn't do any compression (all values are stored uncompressed).
 *
 * @param w The width of the input image. Must be ≤100px.
 * @param h The height of the input image. Must be ≤100px.
 * @param rgba The pixels in the input image, row-by-row. Must have w*h*4 elements.
 * @returns A data URL containing a PNG for the input image.
 */
function rgbaToDataURL(w, h, rgba) {
  let row = w * 4 + 1
  let idat = 6 + h * (5 + row)
  let bytes = [
    137, 80, 78, 71, 13, 10, 26, 10, 0, 0, 0, 13, 73, 72, 68, 82, 0, 0,
    w >> 8, w & 255, 0, 0, h >> 8, h & 255, 8, 6, 0, 0, 0, 0, 0, 0, 0,
    idat >>> 24, (idat >> 16) & 255, (idat >> 8) & 255, idat & 255,
    73, 68, 65, 84, 120, 1
  ]
  let table = [
    0, 498536548, 997073096, 651767980, 1994146192, 1802195444, 1303535960,
    1342533948, -306674912, -267414716, -690576408, -882789492, -1687895376,
    -2032938284, -1609899400, -1111625188
  ]
  let a = 1, b = 0
  for (let y = 0, i = 0, end = row - 1; y < h; y++, end += row - 1) {
    bytes.push(y + 1 < h ? 0 : 1, row & 255, row >> 8, ~row & 255, (row >> 8) ^ 255, 0)
    for (b = (b + a) % 65521; i < end; i++) {
      let u = rgba[i] & 255
      bytes.push(u)
      a = (a + u) % 65521
      b = (b + a) % 65521
    }
  }
  bytes.push(
    b >> 8, b & 255, a >> 8, a & 255, 0, 0, 0, 0,
    0, 0, 0, 0, 73, 69, 78, 68, 174, 66, 96, 130
  )
  for (let [start, end] of [[12, 29], [37, 41 + idat]]) {
    let c = ~0
    for (let i = start; i < end; i++) {
      c ^= bytes[i]
      c = (c >>> 4) ^ table[c & 15]
      c = (c >>> 4) ^ table[c & 15]
    }
    c = ~c
    bytes[end++] = c >>> 24
    bytes[end++] = (c >> 16) & 255
    bytes[end++] = (c >> 8) & 255
    bytes[end++] = c & 255
  }
  return 'data:image/png;base64,' + btoa(String.fromCharCode(...bytes))
}
