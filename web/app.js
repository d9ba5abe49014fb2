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
  "too-many-frames": (e) => `Processing failed: the animation has too many frames. ${e.message}`,
  "time-budget-exceeded": () => "Processing failed: the image took too long to process.",
  "link-expired": () => "The upload link expired before the upload finished. Please try again.",
  "upload-expired": () => "The upload link expired before any file arrived. Please try again.",
  "network": () => "The upload could not reach the storage. Check your connection and try again.",
  "token-missing": () => "Sign in to upload photos.",
  "token-expired": () => "Your sign-in has expired. Sign in again and retry.",
  "rate-limited": (e) => `Too many uploads at once. ${e.message}`,
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
 * this tab in sessionStorage and taken out of the address bar.
 */
const TOKEN_KEY = "minilab-token";
function signInToken() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  const handed = fragment.get("access_token");
  if (handed) {
    sessionStorage.setItem(TOKEN_KEY, handed);
    history.replaceState(null, "", location.pathname + location.search);
  }
  return sessionStorage.getItem(TOKEN_KEY);
}
const TOKEN = signInToken();

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

/** POSTs the form to the bucket, reporting progress; resolves when stored. */
function postToStore(upload, file, onProgress) {
  return new Promise((resolve, reject) => {
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

/** Long-polls the status until it is final; bounded to about ten minutes. */
async function waitForResult(statusUrl, onState) {
  for (let attempt = 0; attempt < 40; attempt++) {
    const status = await api(`${statusUrl}?wait=15`);
    onState(status.state);
    if (!["awaiting_upload", "processing"].includes(status.state)) return status;
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

function showOutputs(card, outputs) {
  const list = $(".outputs", card);
  for (const output of outputs) {
    const figure = document.createElement("figure");
    figure.className = "output";
    figure.dataset.name = output.name;
    const image = document.createElement("img");
    image.src = output.url;
    image.alt = `${output.name} output`;
    image.width = output.width;
    image.height = output.height;
    const caption = document.createElement("figcaption");
    const title = document.createElement("strong");
    title.textContent = output.name;
    const meta = document.createElement("span");
    meta.className = "meta";
    meta.textContent = `${output.width}×${output.height} · ${formatBytes(output.bytes)} · ${output.contentType}`;
    caption.append(title, meta);
    const link = document.createElement("a");
    link.className = "download";
    link.href = output.url; // presigned with Content-Disposition: attachment
    link.download = "";
    link.textContent = `Download ${output.name}`;
    figure.append(image, caption, link);
    list.append(figure);
  }
}

async function handleFile(file, recipe) {
  const card = $("#upload-template").content.firstElementChild.cloneNode(true);
  $(".filename", card).textContent = file.name;
  $("#uploads").prepend(card);
  const progress = $(".progress", card);
  try {
    const ticket = await api("/api/v1/uploads", {
      method: "POST",
      body: JSON.stringify({
        filename: file.name,
        contentType: file.type || "application/octet-stream",
        size: file.size,
        recipe,
      }),
    });
    setState(card, "uploading");
    await postToStore(ticket.upload, file, (fraction) => (progress.value = fraction));
    progress.value = 1;
    setState(card, "processing");
    const status = await waitForResult(ticket.statusUrl, (state) => setState(card, state));
    progress.hidden = true;
    if (status.state === "succeeded") showOutputs(card, status.outputs);
    else if (status.state === "failed") showError(card, new UploadError(status.error.code, status.error.message));
    else if (status.state === "expired") showError(card, new UploadError("upload-expired", ""));
  } catch (error) {
    progress.hidden = true;
    setState(card, "refused");
    showError(card, error instanceof UploadError ? error : new UploadError("network", String(error)));
  }
}

async function start() {
  const select = $("#recipe");
  const pageError = $("#page-error");
  try {
    const { recipes, maxUploadBytes } = await api("/api/v1/recipes");
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
    $("#limits").textContent = `JPEG, PNG, WebP or GIF, up to ${formatBytes(maxUploadBytes)}.`;
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
  document.body.dataset.ready = "true";
}

start();
