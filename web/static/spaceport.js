// Spaceport UI: live stage badges, streaming logs (EventSource), dialogs and small form helpers.
"use strict";

const STAGE_POLL_MS = 1500;
const SERVING = ["RUNNING", "RUNNING_BUILDING", "RUNNING_APP_STARTING"];
const BUSY = ["BUILDING", "APP_STARTING", "RUNNING_BUILDING", "RUNNING_APP_STARTING", "DELETING"];
const ERRORS = ["NO_APP_FILE", "CONFIG_ERROR", "BUILD_ERROR", "RUNTIME_ERROR"];

function stageKind(stage) {
  if (SERVING.includes(stage)) return "ok";
  if (BUSY.includes(stage)) return "busy";
  if (ERRORS.includes(stage)) return "error";
  return "idle";
}

function updateBadges(url, runtime) {
  document.querySelectorAll(`[data-runtime="${url}"]`).forEach((badge) => {
    const before = badge.dataset.stage;
    badge.textContent = runtime.stage;
    badge.dataset.stage = runtime.stage;
    badge.className = `badge badge-${stageKind(runtime.stage)}`;
    if (before === runtime.stage) return;
    if (runtime.stage === "RUNNING") reloadApp();
    reopenEndedLogs();
  });
  document.querySelectorAll("[data-error-for]").forEach((el) => {
    if (!url.includes(`/api/spaces/${el.dataset.errorFor}/`)) return;
    el.textContent = runtime.errorMessage || "";
    el.hidden = !runtime.errorMessage;
  });
}

function reloadApp() {
  const frame = document.getElementById("app-frame");
  if (frame) frame.src = frame.src;
}

function pollStages() {
  const urls = new Set([...document.querySelectorAll("[data-runtime]")].map((b) => b.dataset.runtime));
  urls.forEach(async (url) => {
    try {
      const response = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
      if (response.ok) updateBadges(url, await response.json());
    } catch (_error) { /* offline for a moment: keep the last stage */ }
  });
}

function logState(name, text) {
  const el = document.querySelector(`[data-log-state="${name}"]`);
  if (el) el.textContent = text;
}

const endedLogs = new Set();

function reopenEndedLogs() {
  const ended = [...endedLogs];
  endedLogs.clear();
  ended.forEach(streamLog);
}

function streamLog(pre) {
  const name = pre.dataset.state;
  const source = new EventSource(pre.dataset.sse);
  let received = false;
  source.onopen = () => { pre.textContent = ""; logState(name, "Streaming live."); };
  source.onmessage = (event) => {
    received = true;
    let line = event.data;
    try { line = JSON.parse(event.data).data; } catch (_error) { /* plain text line */ }
    const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 8;
    pre.append(document.createTextNode(line.endsWith("\n") ? line : `${line}\n`));
    if (atBottom) pre.scrollTop = pre.scrollHeight;
  };
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED) {
      logState(name, "Logs are not available from this server right now (the stream could not be opened).");
    } else if (received) {
      // The server ended the stream (build finished, app stopped): keep what we have and reopen
      // when the stage changes instead of replaying the whole log every few seconds.
      source.close();
      endedLogs.add(pre);
      logState(name, "Stream ended; it reopens when the space's stage changes.");
    } else {
      logState(name, "Waiting for output…");
    }
  };
}

function wireDialogs() {
  document.querySelectorAll("[data-open-dialog]").forEach((opener) => {
    const dialog = document.getElementById(opener.dataset.openDialog);
    if (!dialog || typeof dialog.showModal !== "function") return;
    opener.addEventListener("click", (event) => { event.preventDefault(); dialog.showModal(); });
  });
}

function wireForms() {
  document.querySelectorAll("form[data-confirm]").forEach((form) => {
    form.addEventListener("submit", (event) => { if (!window.confirm(form.dataset.confirm)) event.preventDefault(); });
  });
  document.querySelectorAll("input[data-must-equal]").forEach((input) => {
    const check = () => input.setCustomValidity(
      input.value === input.dataset.mustEqual ? "" : `Type ${input.dataset.mustEqual} exactly to confirm.`);
    input.addEventListener("input", check);
  });
  document.querySelectorAll("input[data-select-on-focus]").forEach((input) => {
    input.addEventListener("focus", () => input.select());
  });
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("pre[data-sse]").forEach(streamLog);
  wireDialogs();
  wireForms();
  if (document.querySelector("[data-runtime]")) {
    pollStages();
    setInterval(pollStages, STAGE_POLL_MS);
  }
});
