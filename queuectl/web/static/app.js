// queuectl web dashboard: plain JavaScript, no build step, no CDN. Data comes from the JSON API;
// changes arrive over the event stream (/api/events) instead of polling. The token lives in an
// HttpOnly cookie set by POST /api/session; writes carry the CSRF cookie's value as a header.
"use strict";

const STATES = ["pending", "waiting", "processing", "completed", "failed", "dead", "cancelled"];
const FINISHED = ["completed", "dead", "cancelled"];
const $ = (id) => document.getElementById(id);
let session = null;      // {name, scopes}
let cursors = [];        // the cursors of the pages before this one
let pageCursor = null;   // this page's cursor
let follow = null;       // AbortController of the output being followed
let refreshTimer = null;

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function csrf() {
  const match = document.cookie.match(/(?:^|;\s*)queuectl_csrf=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : "";
}

async function api(path, options = {}) {
  const headers = { "Accept": "application/json", ...(options.headers || {}) };
  if (options.method && options.method !== "GET") headers["X-CSRF-Token"] = csrf();
  if (options.json !== undefined) { headers["Content-Type"] = "application/json"; options.body = JSON.stringify(options.json); }
  const response = await fetch(path, { ...options, headers, credentials: "same-origin" });
  const body = response.headers.get("content-type")?.includes("json") ? await response.json() : await response.text();
  if (response.status === 401 && path !== "/api/session") { showLogin("Your session ended: sign in again."); }
  if (!response.ok) throw new Error(body && body.error ? body.error : `HTTP ${response.status}`);
  return body;
}

const can = (scope) => !!session && session.scopes.includes(scope);

function ago(iso) {
  if (!iso) return "-";
  const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (seconds < 90) return `${Math.round(seconds)}s ago`;
  if (seconds < 5400) return `${Math.round(seconds / 60)}m ago`;
  return `${Math.round(seconds / 3600)}h ago`;
}

function seconds(value) {
  if (value === null || value === undefined) return "-";
  return value < 90 ? `${value.toFixed(1)}s` : `${Math.round(value / 60)}m`;
}

// --- sign in / out ---------------------------------------------------------------------------

function showLogin(message) {
  session = null;
  for (const id of ["view-dash", "view-job", "logout"]) $(id).hidden = true;
  $("login").hidden = false;
  $("who").textContent = "";
  $("login-error").textContent = message || "";
}

async function signIn(event) {
  event.preventDefault();
  try {
    session = await api("/api/session", { method: "POST", json: { token: $("token").value.trim() } });
    $("token").value = "";
    start();
  } catch (error) {
    $("login-error").textContent = error.message;
  }
}

async function signOut() {
  await fetch("/api/session", { method: "DELETE", credentials: "same-origin" });
  showLogin("Signed out.");
}

// --- the dashboard ----------------------------------------------------------------------------

// "team=infra env=prod": a job's labels in one short cell (the whole set in the cell's title)
function labelsText(labels, max = 40) {
  const text = Object.entries(labels || {}).map(([key, value]) => `${key}=${value}`).join(" ");
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

function labelsCell(labels) {
  const cell = el("td", labelsText(labels) || "-", "labels");
  cell.title = labelsText(labels, Infinity);
  return cell;
}

function renderCounts(dash) {
  const cards = $("counts");
  if (!cards.children.length) {  // built once; each refresh changes only the numbers
    for (const state of STATES) {
      const card = el("div", null, "card");
      const number = el("b", "-");
      number.id = `count-${state}`;
      card.append(number, el("span", state));
      cards.append(card);
    }
  }
  for (const state of STATES) $(`count-${state}`).textContent = dash.states[state] || 0;
  $("lag").textContent = seconds(dash.lag);
  const done = dash.completed_per_bucket;
  $("rate").textContent = done.length > 1 ? done[done.length - 2] : "-";
  $("workers-alive").textContent = `${dash.workers_alive} alive` + (dash.workers_unresponsive ? `, ${dash.workers_unresponsive} unresponsive` : "");
}

function renderQueues(queues) {
  const body = $("queues").tBodies[0];
  body.replaceChildren();
  for (const queue of queues) {
    const row = el("tr");
    row.append(el("td", queue.name + (queue.paused ? " (paused)" : "")));
    for (const state of ["pending", "processing", "failed", "dead"]) row.append(el("td", queue.states[state]));
    row.append(el("td", queue.total));
    const cell = el("td");
    if (can("control")) {
      const button = el("button", queue.paused ? "Resume" : "Pause", "control");
      button.type = "button";
      button.dataset.queue = queue.name;
      button.addEventListener("click", () => act(`/api/queues/${encodeURIComponent(queue.name)}/${queue.paused ? "resume" : "pause"}`));
      cell.append(button);
    }
    row.append(cell);
    body.append(row);
  }
}

function renderWorkers(dash) {
  const body = $("workers").tBodies[0];
  body.replaceChildren();
  for (const worker of dash.workers) {
    const row = el("tr", null, worker.unresponsive ? "unresponsive" : "");
    row.append(el("td", worker.id), el("td", worker.unresponsive ? "unresponsive" : worker.state),
      el("td", `${worker.heartbeat_age.toFixed(1)}s`), el("td", worker.jobs.map((job) => job.id + (Object.keys(job.labels || {}).length ? ` [${labelsText(job.labels, 24)}]` : "") + (job.progress ? ` ${job.progress}` : "")).join(", ") || "-"));
    body.append(row);
  }
  if (!dash.workers.length) {
    const row = el("tr");
    const cell = el("td", "no worker running (queuectl worker start)", "muted");
    cell.colSpan = 4;
    row.append(cell);
    body.append(row);
  }
}

function renderFailures(dash) {
  const list = $("failures");
  list.replaceChildren();
  for (const failure of dash.failures) {
    const item = el("li");
    const link = el("a", failure.id);
    link.href = `#/job/${encodeURIComponent(failure.id)}`;
    item.append(link, ` ${failure.state} (attempt ${failure.attempts} of ${failure.max_attempts}): ${failure.error || failure.last_output || ""}`);
    list.append(item);
  }
  if (!dash.failures.length) list.append(el("li", "none", "muted"));
}

async function loadJobs() {
  const params = new URLSearchParams({ limit: "25", count: "1" });
  if ($("f-state").value) params.set("state", $("f-state").value);
  if ($("f-queue").value.trim()) params.set("queue", $("f-queue").value.trim());
  if (pageCursor) params.set("cursor", pageCursor);
  const page = await api(`/api/jobs?${params}`);
  const body = $("jobs").tBodies[0];
  body.replaceChildren();
  for (const job of page.jobs) {
    const row = el("tr");
    const link = el("a", job.id);
    link.href = `#/job/${encodeURIComponent(job.id)}`;
    const id = el("td");
    id.append(link);
    row.append(id, el("td", job.state), el("td", job.queue));
    row.append(labelsCell(job.labels));
    row.append(el("td", job.command, "cmd"), el("td", ago(job.created_at)));
    body.append(row);
  }
  $("jobs-shown").textContent = `${page.jobs.length} shown of ${page.matched} matching`;
  const next = $("next-page");
  next.hidden = !page.next_cursor;
  next.dataset.cursor = page.next_cursor || "";
  $("first-page").hidden = cursors.length === 0;
}

async function loadDashboard() {
  const [dash, queues] = await Promise.all([api("/api/dashboard"), api("/api/queues"), loadJobs()]);
  renderCounts(dash);
  renderQueues(queues);
  renderWorkers(dash);
  renderFailures(dash);
  const status = await api("/api/status");
  $("overload").hidden = !status.overload.overloaded;
}

async function act(path) {
  $("action-error").textContent = "";
  $("job-error").textContent = "";
  try {
    await api(path, { method: "POST" });
    refresh();
  } catch (error) {
    ($("view-job").hidden ? $("action-error") : $("job-error")).textContent = error.message;
  }
}

// --- one job ------------------------------------------------------------------------------------

async function showJob(id) {
  const job = await api(`/api/jobs/${encodeURIComponent(id)}`);
  $("job-id").textContent = job.id;
  $("job-state").textContent = job.state;
  $("job-state").className = `state ${job.state}`;
  const fields = $("job-fields");
  fields.replaceChildren();
  const shown = ["command", "queue", "priority", "attempts", "max_retries", "exit_code", "last_error", "created_at",
    "started_at", "finished_at", "duration", "run_at", "locked_by", "after", "unique_key", "schedule"];
  for (const name of shown) {
    const value = job[name];
    if (value === null || value === undefined || (Array.isArray(value) && !value.length)) continue;
    fields.append(el("dt", name), el("dd", Array.isArray(value) ? value.join(", ") : value));
  }
  if (job.progress && job.state === "processing") fields.append(el("dt", "progress"), el("dd", job.progress.text));
  if (job.env && Object.keys(job.env).length) fields.append(el("dt", "env"), el("dd", Object.keys(job.env).join(", ")));
  if (Object.keys(job.labels || {}).length) fields.append(el("dt", "labels"), el("dd", labelsText(job.labels, Infinity)));
  $("cancel").hidden = !can("control") || FINISHED.includes(job.state);
  $("retry").hidden = !can("control") || job.state !== "dead";
  return job;
}

async function followOutput(id, job) {
  if (follow) follow.abort();
  follow = new AbortController();
  const output = $("output");
  const live = !FINISHED.includes(job.state);
  $("following").hidden = !live;
  const response = await fetch(`/api/jobs/${encodeURIComponent(id)}/logs${live ? "?follow=1" : ""}`,
    { signal: follow.signal, credentials: "same-origin" });
  if (!response.ok) { output.textContent = ""; return; }
  output.textContent = "";
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      output.textContent += decoder.decode(value, { stream: true });
      output.scrollTop = output.scrollHeight;
    }
  } catch (error) { return; }  // aborted: the page moved on
  $("following").hidden = true;
  showJob(id).catch(() => {});
}

// --- navigation and live updates ------------------------------------------------------------------

function route() {
  if (!session) return;
  const match = location.hash.match(/^#\/job\/(.+)$/);
  $("view-dash").hidden = !!match;
  $("view-job").hidden = !match;
  if (follow && !match) { follow.abort(); follow = null; }
  if (match) {
    const id = decodeURIComponent(match[1]);
    $("job-error").textContent = "";
    showJob(id).then((job) => followOutput(id, job)).catch((error) => { $("job-error").textContent = error.message; });
  } else {
    loadDashboard().catch((error) => { $("action-error").textContent = error.message; });
  }
}

function refresh() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => {
    const match = location.hash.match(/^#\/job\/(.+)$/);
    if (match) showJob(decodeURIComponent(match[1])).catch(() => {});
    else loadDashboard().catch(() => {});
  }, 250);
}

let events = null;
function listen() {
  if (events) events.close();
  events = new EventSource("/api/events");
  events.addEventListener("open", () => { $("live").textContent = "● live"; $("live").className = "on"; });
  events.addEventListener("error", () => { $("live").textContent = "● reconnecting"; $("live").className = "muted"; });
  events.addEventListener("job", refresh);     // the event log's events, as `queuectl events --json`
  events.addEventListener("worker", refresh);  // a worker started, stopped or stopped answering
  events.addEventListener("end", () => { events.close(); showLogin("The token was revoked."); });
}

function start() {
  $("login").hidden = true;
  $("logout").hidden = false;
  $("who").textContent = `${session.name} (${session.scopes.join(", ")})`;
  listen();
  route();
}

document.addEventListener("DOMContentLoaded", async () => {
  for (const state of STATES) $("f-state").append(new Option(state, state));
  $("login-form").addEventListener("submit", signIn);
  $("logout").addEventListener("click", signOut);
  $("filters").addEventListener("submit", (event) => { event.preventDefault(); cursors = []; pageCursor = null; loadJobs(); });
  $("next-page").addEventListener("click", () => { cursors.push(pageCursor); pageCursor = $("next-page").dataset.cursor; loadJobs(); });
  $("first-page").addEventListener("click", () => { cursors = []; pageCursor = null; loadJobs(); });
  $("cancel").addEventListener("click", () => act(`/api/jobs/${encodeURIComponent($("job-id").textContent)}/cancel`));
  $("retry").addEventListener("click", () => act(`/api/jobs/${encodeURIComponent($("job-id").textContent)}/retry`));
  window.addEventListener("hashchange", route);
  try {
    session = await api("/api/session");
    start();
  } catch (error) {
    showLogin("");
  }
});
