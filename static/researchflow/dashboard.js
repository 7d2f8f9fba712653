// ResearchFlow dashboard: the user's projects and runs, kept live over `/ws`.
//
// Plain ES module, no framework, no build step. Loaded by templates/web/dashboard.html.
//
// How it stays correct:
// * It loads the state over REST, remembering the newest event id that state reflects, then
//   opens the socket with `auth.lastEventId` set to that id: the server replays every later
//   event from its log, then streams live ones (see loadSnapshot() for why the order of the
//   REST reads matters).
// * Every event is applied idempotently: statuses only move forward (pending → running →
//   completed/failed), progress never goes back, artifacts and approvals are keyed by id. So an
//   event whose effect the REST state already shows changes nothing, and applying one twice is
//   harmless.
// * The approvals inbox ("Waiting for me") is loaded in the same snapshot, after the same
//   `since`, and kept by the same events (approvals-inbox.js holds its rules), so its count is
//   right on load and moves with governance events without opening any run.
// * On `resync.required` (the log no longer holds what the socket missed) it reloads the state
//   over REST, holding the events that arrive meanwhile and applying them afterwards.
// * All text reaches the page through textContent / text nodes, never innerHTML.

import { ApprovalInbox } from "./approvals-inbox.js";
import { ConnectionState, EVENT_CATEGORIES, RunEventsClient, categoryOf } from "./run-events.js";

const RUNS_PER_PROJECT = 10; // older runs are fetched on demand when an event names them
const FETCH_CONCURRENCY = 4;
const FEED_LIMIT = 300; // feed entries kept in the page; older ones are dropped
const INBOX_PAGE = 1000; // the API's largest page
const INBOX_MAX_PAGES = 10; // bounds the load; nobody has 10,000 approvals waiting

const RUN_RANK = Object.freeze({ created: 0, running: 1, completed: 2, failed: 2 });
const STAGE_RANK = Object.freeze({ pending: 0, running: 1, completed: 2, failed: 2 });
const STATUS_LABEL = Object.freeze({
  created: "Created",
  pending: "Pending",
  running: "Running",
  completed: "Completed",
  failed: "Failed",
  granted: "Granted",
  denied: "Denied",
});
// A shape as well as a colour, so status never depends on colour alone.
const STATUS_ICON = Object.freeze({
  created: "○",
  pending: "○",
  running: "▶",
  completed: "✓",
  failed: "✕",
  granted: "✓",
  denied: "✕",
});
const ACRONYMS = new Set(["PHI", "IRB", "QA"]);
const DECIDING_ROLES = new Set(["owner", "member"]);

// --------------------------------------------------------------------------------- set-up

const config = readConfig();
const els = {
  projects: /** @type {HTMLElement} */ (document.getElementById("projects")),
  feed: /** @type {HTMLOListElement} */ (document.getElementById("event-feed")),
  feedHint: document.getElementById("feed-hint"),
  notice: /** @type {HTMLElement} */ (document.getElementById("notice")),
  connection: /** @type {HTMLElement} */ (document.getElementById("connection")),
  connectionLabel: /** @type {HTMLElement} */ (document.querySelector("#connection .connection-label")),
  reconnect: /** @type {HTMLButtonElement|null} */ (document.getElementById("reconnect-button")),
  demoForm: /** @type {HTMLFormElement|null} */ (document.getElementById("demo-form")),
  demoStatus: document.getElementById("demo-status"),
  inbox: /** @type {HTMLElement} */ (document.getElementById("inbox")),
  inboxTitle: /** @type {HTMLElement} */ (document.getElementById("inbox-title")),
  inboxCount: /** @type {HTMLElement} */ (document.getElementById("inbox-count")),
  inboxList: /** @type {HTMLUListElement} */ (document.getElementById("inbox-list")),
};

/**
 * The in-page state. Runs are normalised: stages / artifacts / approvals are Maps by id.
 * @type {{projects: Map<string, {id: string, name: string, role: string|null}>, runs: Map<string, any>}}
 */
const state = { projects: new Map(), runs: new Map() };
/** Run id → events waiting for that run's REST detail (a run this page has not loaded yet). */
const waitingForRun = new Map();
/** Events held while a resync reload is in flight; null when not reloading. @type {any[]|null} */
let heldDuringReload = null;
/** Approval ids with a grant/deny request in flight. */
const busyApprovals = new Set();
/** Run id → its DOM pieces, so updates touch only what changed (and keep focus in place). */
const views = new Map();
/** Event ids already in the feed (the client drops repeats too; this keeps the feed honest). */
const feedIds = new Set();
/** @type {RunEventsClient|null} */
let client = null;
/** Pending approvals the user may decide, across projects ("Waiting for me"). */
const inbox = new ApprovalInbox({
  username: String(config.username ?? ""),
  // null: a project this page has not loaded yet (its role is unknown until loadRun fetches it).
  mayDecide: (projectId) => (config.isStaff || state.projects.has(projectId) ? canDecide(projectId) : null),
});
/** Approval id → its inbox row. */
const inboxRows = new Map();
const baseTitle = document.title;

function readConfig() {
  const node = document.getElementById("researchflow-config");
  try {
    return node ? JSON.parse(node.textContent || "{}") : {};
  } catch {
    return {};
  }
}

function csrfToken() {
  return document.querySelector('meta[name="csrf-token"]')?.getAttribute("content") ?? "";
}

// ----------------------------------------------------------------------------------- REST

class ApiError extends Error {
  /** @param {string} message @param {number} status */
  constructor(message, status) {
    super(message);
    this.name = "ApiError";
    this.status = status;
  }
}

/**
 * JSON request to our API with the session cookie (and the CSRF header on writes).
 * @param {string} path
 * @param {{method?: string, body?: unknown}} [options]
 */
async function api(path, { method = "GET", body } = {}) {
  /** @type {Record<string, string>} */
  const headers = { Accept: "application/json" };
  /** @type {RequestInit} */
  const init = { method, headers, credentials: "same-origin" };
  if (method !== "GET") {
    headers["X-CSRFToken"] = csrfToken();
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body ?? {});
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError("the server cannot be reached", 0);
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!response.ok) {
    const detail = data && typeof data.detail === "string" ? data.detail : `HTTP ${response.status}`;
    throw new ApiError(detail, response.status);
  }
  return data;
}

/**
 * Run `fn` over `items`, at most `limit` at a time, keeping the order of results.
 * @template T, R
 * @param {T[]} items @param {number} limit @param {(item: T) => Promise<R>} fn
 * @returns {Promise<R[]>}
 */
async function mapLimit(items, limit, fn) {
  const results = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const index = next++;
      results[index] = await fn(items[index]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

/** A run's detail, or null when it is gone or no longer visible (404). @param {string} runId */
async function fetchRunDetail(runId) {
  try {
    return await api(`/api/runs/${encodeURIComponent(runId)}/`);
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) return null;
    throw err;
  }
}

/**
 * The state over REST, and the newest event id it is guaranteed to reflect.
 *
 * Order matters. We read `lastEventId` FIRST, then the state. An event is committed in the
 * same transaction as the change it describes, so every event up to `since` had its change
 * committed before we started reading the state: the state reflects it. Events after `since`
 * may or may not be reflected already; the socket replays all of them from `since`, and
 * applying an already-reflected event is a no-op (applyEvent is idempotent). Nothing falls
 * between the two reads.
 *
 * The other order (state first, then the id) has a gap: an event committed between the two
 * reads is not in the state, yet its id is <= the id we resume from, so it is never replayed.
 */
async function loadSnapshot() {
  const head = await api("/api/events/?limit=1");
  const since = Number.isInteger(head?.lastEventId) ? head.lastEventId : 0;
  const projectPage = await api("/api/projects/?limit=1000");
  const projects = Array.isArray(projectPage?.results) ? projectPage.results : [];
  const lists = await Promise.all(
    projects.map((p) => api(`/api/runs/?project=${encodeURIComponent(p.id)}&limit=${RUNS_PER_PROJECT}`)),
  );
  const runIds = lists.flatMap((page) => (page?.results ?? []).map((/** @type {any} */ r) => String(r.id)));
  const details = await mapLimit(runIds, FETCH_CONCURRENCY, fetchRunDetail);
  const approvals = await loadInbox();
  return { since, projects, runs: details.filter(Boolean), approvals };
}

/** Every page of `GET /api/approvals/inbox/` (read after `since`, like the rest). */
async function loadInbox() {
  const items = [];
  for (let page = 0; page < INBOX_MAX_PAGES; page += 1) {
    const answer = await api(`/api/approvals/inbox/?limit=${INBOX_PAGE}&offset=${page * INBOX_PAGE}`);
    const results = Array.isArray(answer?.results) ? answer.results : [];
    items.push(...results);
    if (!answer?.next || results.length === 0) break;
  }
  return items;
}

// ---------------------------------------------------------------------------- state model

/** @param {any} p */
function normaliseProject(p) {
  return { id: String(p.id), name: String(p.name ?? p.id), role: p.role ?? null };
}

/** @param {any} s */
function normaliseStage(s) {
  return {
    id: String(s.id),
    name: String(s.name ?? ""),
    stageIndex: Number(s.stageIndex ?? 0),
    status: String(s.status ?? "pending"),
    progress: Number(s.progress ?? 0),
    itemsProcessed: s.itemsProcessed ?? null,
    itemsTotal: s.itemsTotal ?? null,
    statusMessage: String(s.statusMessage ?? ""),
    errorCode: s.errorCode ?? null,
  };
}

/** @param {any} a */
function normaliseArtifact(a) {
  return {
    id: String(a.id),
    name: String(a.name ?? ""),
    kind: String(a.kind ?? ""),
    sizeBytes: Number(a.sizeBytes ?? 0),
    contentType: String(a.contentType ?? ""),
    stageId: a.stageId ?? null,
    createdAt: a.createdAt ?? null,
  };
}

/** @param {any} a */
function normaliseApproval(a) {
  return {
    id: String(a.id),
    governanceType: String(a.governanceType ?? ""),
    priority: String(a.priority ?? ""),
    status: String(a.status ?? "pending"),
    assignedTo: Array.isArray(a.assignedTo) ? a.assignedTo.map(String) : [],
    decidedBy: a.decidedBy ?? null,
    decidedAt: a.decidedAt ?? null,
    reasonCode: a.reasonCode ?? null,
    requestedAt: a.requestedAt ?? null,
  };
}

/** A run detail from the REST API → the in-page shape. @param {any} r */
function normaliseRun(r) {
  const byId = (/** @type {any[]} */ list, /** @type {(x: any) => any} */ fn) =>
    new Map((Array.isArray(list) ? list : []).map((x) => [String(x.id), fn(x)]));
  return {
    id: String(r.id),
    projectId: String(r.projectId),
    name: String(r.name ?? r.id),
    status: String(r.status ?? "created"),
    createdBy: r.createdBy ?? null,
    createdAt: r.createdAt ?? null,
    startedAt: r.startedAt ?? null,
    finishedAt: r.finishedAt ?? null,
    errorCode: r.errorCode ?? null,
    stages: byId(r.stages, normaliseStage),
    artifacts: byId(r.artifacts, normaliseArtifact),
    approvals: byId(r.approvals, normaliseApproval),
  };
}

/** @param {Record<string, number>} ranks @param {string} status */
function rank(ranks, status) {
  return ranks[status] ?? 0;
}

/** Is stage `a` further along than stage `b` (same stage, two observations)? */
function stageAhead(/** @type {any} */ a, /** @type {any} */ b) {
  const ra = rank(STAGE_RANK, a.status);
  const rb = rank(STAGE_RANK, b.status);
  return ra > rb || (ra === rb && a.progress > b.progress);
}

/**
 * Put a REST-loaded run into the state without ever moving anything backwards: the page may
 * already have applied events newer than the REST answer (a request races the socket).
 * @param {any} fresh normalised run
 */
function mergeRun(fresh) {
  const old = state.runs.get(fresh.id);
  if (!old) {
    state.runs.set(fresh.id, fresh);
    return fresh;
  }
  if (rank(RUN_RANK, fresh.status) > rank(RUN_RANK, old.status)) {
    Object.assign(old, {
      status: fresh.status,
      startedAt: fresh.startedAt,
      finishedAt: fresh.finishedAt,
      errorCode: fresh.errorCode,
    });
  }
  for (const stage of fresh.stages.values()) {
    const known = old.stages.get(stage.id);
    if (!known || stageAhead(stage, known)) old.stages.set(stage.id, stage);
  }
  for (const artifact of fresh.artifacts.values()) {
    if (!old.artifacts.has(artifact.id)) old.artifacts.set(artifact.id, artifact);
  }
  for (const approval of fresh.approvals.values()) {
    const known = old.approvals.get(approval.id);
    if (!known || (known.status === "pending" && approval.status !== "pending")) {
      old.approvals.set(approval.id, approval);
    }
  }
  return old;
}

/**
 * Move `obj.status` forward to `status` (never back) and copy `extra` when it moved.
 * @returns {boolean} changed
 */
function advance(/** @type {any} */ obj, /** @type {Record<string, number>} */ ranks, /** @type {string} */ status, extra = {}) {
  if (rank(ranks, status) <= rank(ranks, obj.status)) return false;
  obj.status = status;
  for (const [key, value] of Object.entries(extra)) if (value !== undefined) obj[key] = value;
  return true;
}

/** The stage an event names; created from the payload if the run detail lacked it. */
function stageOf(/** @type {any} */ run, /** @type {any} */ p) {
  let stage = run.stages.get(p.stageId);
  if (!stage) {
    stage = normaliseStage({ id: p.stageId, name: p.stageName, stageIndex: p.stageIndex });
    run.stages.set(stage.id, stage);
  }
  return stage;
}

/**
 * Apply one event to its (known) run. Idempotent and order-tolerant.
 * @returns {boolean} whether anything visible changed
 */
function applyEvent(/** @type {any} */ run, /** @type {any} */ event) {
  const p = event.payload ?? {};
  switch (event.type) {
    case "run.created":
      return false; // the run exists: its REST detail already says everything this does
    case "run.started":
      return advance(run, RUN_RANK, "running", { startedAt: p.startedAt });
    case "run.completed":
      return advance(run, RUN_RANK, "completed", { finishedAt: p.completedAt });
    case "run.failed":
      return advance(run, RUN_RANK, "failed", { finishedAt: p.failedAt, errorCode: p.errorCode });
    case "stage.started":
      return advance(stageOf(run, p), STAGE_RANK, "running");
    case "stage.progress": {
      const stage = stageOf(run, p);
      if (rank(STAGE_RANK, stage.status) >= STAGE_RANK.completed) return false; // history
      let changed = advance(stage, STAGE_RANK, "running");
      const progress = Number(p.progress);
      if (Number.isFinite(progress) && progress >= stage.progress) {
        // Progress never goes back, so a lower value is an older report: ignore it.
        stage.progress = progress;
        if (p.statusMessage != null) stage.statusMessage = String(p.statusMessage);
        if (p.itemsProcessed != null) stage.itemsProcessed = p.itemsProcessed;
        if (p.itemsTotal != null) stage.itemsTotal = p.itemsTotal;
        changed = true;
      }
      return changed;
    }
    case "stage.completed": {
      const stage = stageOf(run, p);
      const changed = advance(stage, STAGE_RANK, "completed");
      if (changed) {
        stage.progress = 100; // as the server records it
        if (stage.itemsTotal != null) stage.itemsProcessed = stage.itemsTotal;
      }
      return changed;
    }
    case "stage.failed":
      return advance(stageOf(run, p), STAGE_RANK, "failed", { errorCode: p.errorCode });
    case "artifact.created": {
      if (run.artifacts.has(p.artifactId)) return false;
      run.artifacts.set(
        String(p.artifactId),
        normaliseArtifact({
          id: p.artifactId,
          name: p.artifactName,
          kind: p.artifactKind,
          sizeBytes: p.sizeBytes,
          contentType: p.contentType,
          stageId: p.stageId,
          createdAt: p.createdAt,
        }),
      );
      return true;
    }
    case "governance.required": {
      if (run.approvals.has(p.governanceId)) return false;
      run.approvals.set(
        String(p.governanceId),
        normaliseApproval({
          id: p.governanceId,
          governanceType: p.governanceType,
          priority: p.priority,
          assignedTo: p.assignedTo,
          requestedAt: p.requestedAt,
          status: "pending",
        }),
      );
      return true;
    }
    case "approval.granted":
    case "approval.denied": {
      const decided = event.type === "approval.granted" ? "granted" : "denied";
      let approval = run.approvals.get(p.governanceId);
      if (!approval) {
        approval = normaliseApproval({ id: p.governanceId, governanceType: p.governanceType });
        run.approvals.set(approval.id, approval);
      }
      if (approval.status !== "pending") return false; // a decision is final
      Object.assign(approval, {
        status: decided,
        decidedBy: p.decidedBy ?? null,
        decidedAt: p.decidedAt ?? null,
        reasonCode: p.reasonCode ?? null,
      });
      return true;
    }
    default:
      return false;
  }
}

// --------------------------------------------------------------------------------- events

/** Every event the client delivers (replayed or live), in id order. @param {any} event */
function onEvent(event) {
  addToFeed(event);
  if (heldDuringReload) {
    heldDuringReload.push(event);
    return;
  }
  dispatch(event);
}

/** @param {any} event */
function dispatch(event) {
  if (inbox.apply(event)) renderInbox();
  const runId = event.payload?.runId;
  if (typeof runId !== "string") return;
  const waiting = waitingForRun.get(runId);
  if (waiting) {
    waiting.push(event); // keeps this run's events in order behind its REST detail
    return;
  }
  const run = state.runs.get(runId);
  if (!run) {
    waitingForRun.set(runId, [event]);
    void loadRun(runId, event.payload?.projectId);
    return;
  }
  if (applyEvent(run, event)) renderRun(run);
}

/**
 * A run this page does not have (new, or older than the first page): load it over REST, then
 * apply the events that arrived meanwhile (idempotently: the detail may already show them).
 * @param {string} runId @param {unknown} projectId
 */
async function loadRun(runId, projectId) {
  try {
    if (typeof projectId === "string" && !state.projects.has(projectId)) {
      // A project we were just added to.
      const project = await api(`/api/projects/${encodeURIComponent(projectId)}/`);
      state.projects.set(String(project.id), normaliseProject(project));
      ensureProjectSection(state.projects.get(String(project.id)));
      if (inbox.projectKnown(String(project.id))) renderInbox();
    }
    const detail = await fetchRunDetail(runId);
    if (!detail) return;
    const run = mergeRun(normaliseRun(detail));
    for (const event of waitingForRun.get(runId) ?? []) applyEvent(run, event);
    renderRun(run);
    renderInbox(); // its items may name this run
  } catch (err) {
    showNotice(`Could not load a run: ${errorText(err)}. It will load with its next event.`);
  } finally {
    waitingForRun.delete(runId);
  }
}

/** `resync.required`: the log no longer holds what we missed, so reload the state over REST. */
async function resync() {
  if (heldDuringReload) return; // already reloading; events keep being held
  heldDuringReload = [];
  showNotice("The dashboard missed too many events while disconnected and is reloading its state…", "info");
  try {
    const snapshot = await withRetry(loadSnapshot);
    installSnapshot(snapshot);
    hideNotice();
  } finally {
    // Events that arrived during the reload: the snapshot may or may not reflect them, and
    // applying them is idempotent either way.
    const held = heldDuringReload ?? [];
    heldDuringReload = null;
    for (const event of held) dispatch(event);
  }
}

/** @template T @param {() => Promise<T>} fn @returns {Promise<T>} */
async function withRetry(fn) {
  for (let attempt = 0; ; attempt += 1) {
    try {
      return await fn();
    } catch (err) {
      if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
        showNotice("Your session has ended. Reload the page to sign in again.");
        throw err;
      }
      const delay = Math.min(30_000, 1000 * 2 ** attempt);
      showNotice(`Could not load the dashboard (${errorText(err)}); retrying in ${Math.round(delay / 1000)} s…`);
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }
}

// ------------------------------------------------------------------------------ rendering

/**
 * Create an element. Text children become text nodes; attributes go through setAttribute.
 * @param {string} tag
 * @param {Record<string, any>} [attrs]
 * @param {...any} children
 */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = String(value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child)); // append(string) makes a text node
  }
  return el;
}

/** A status badge: icon (hidden from screen readers) + word. */
function badge(/** @type {string} */ status, /** @type {string} */ extraClass = "") {
  return h(
    "span",
    { class: `badge ${extraClass}`.trim(), dataset: { status } },
    h("span", { class: "badge-icon", "aria-hidden": "true" }, STATUS_ICON[status] ?? "•"),
    " ",
    STATUS_LABEL[status] ?? status,
  );
}

/** @param {Element} old @param {Element} fresh */
function swap(old, fresh) {
  old.replaceWith(fresh);
  return fresh;
}

function humanise(/** @type {string} */ code) {
  const words = String(code ?? "")
    .split("_")
    .filter(Boolean)
    .map((w) => (ACRONYMS.has(w) ? w : w.toLowerCase()));
  const text = words.join(" ");
  return text.charAt(0).toUpperCase() + text.slice(1);
}

const numberFormat = new Intl.NumberFormat();

function formatBytes(/** @type {number} */ n) {
  if (!Number.isFinite(n)) return "";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit === 0 ? value : value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

function formatTime(/** @type {string|null} */ iso) {
  if (!iso) return "";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? "" : date.toLocaleTimeString([], { hour12: false });
}

function formatDateTime(/** @type {string|null} */ iso) {
  if (!iso) return "";
  const date = new Date(iso);
  return Number.isNaN(date.getTime())
    ? ""
    : date.toLocaleString([], { dateStyle: "medium", timeStyle: "short", hour12: false });
}

function errorText(/** @type {unknown} */ err) {
  return err instanceof Error ? err.message : String(err);
}

function canDecide(/** @type {string} */ projectId) {
  const role = state.projects.get(projectId)?.role;
  return Boolean(config.isStaff) || DECIDING_ROLES.has(String(role));
}

/** Sort runs newest first. */
function byNewest(/** @type {any} */ a, /** @type {any} */ b) {
  return String(b.createdAt ?? "").localeCompare(String(a.createdAt ?? "")) || String(b.id).localeCompare(String(a.id));
}

/** Draw everything from the state (first load, resync). */
function renderAll() {
  views.clear();
  els.projects.replaceChildren();
  const projects = [...state.projects.values()].sort(
    (a, b) => a.name.localeCompare(b.name) || a.id.localeCompare(b.id),
  );
  if (projects.length === 0) {
    els.projects.append(h("p", { class: "empty" }, "You are not a member of any project yet."));
  }
  for (const project of projects) ensureProjectSection(project);
  for (const run of [...state.runs.values()].sort(byNewest)) renderRun(run);
  els.projects.removeAttribute("aria-busy");
}

/** The section of a project, created (in name order) if missing. @param {any} project */
function ensureProjectSection(project) {
  const id = `project-${project.id}`;
  const existing = document.getElementById(id);
  if (existing) return existing;
  els.projects.querySelector(":scope > .empty")?.remove();
  const titleId = `${id}-title`;
  const section = h(
    "section",
    { id, class: "project", "aria-labelledby": titleId, dataset: { projectId: project.id, name: project.name } },
    h(
      "header",
      { class: "project-head" },
      h("h2", { id: titleId }, project.name),
      project.role ? h("span", { class: "role" }, `Your role: ${project.role}`) : null,
    ),
    h("p", { class: "empty muted" }, "No runs yet."),
    h("div", { class: "runs" }),
  );
  const after = [...els.projects.querySelectorAll(":scope > section.project")].find(
    (s) => String(/** @type {HTMLElement} */ (s).dataset.name ?? "").localeCompare(project.name) > 0,
  );
  els.projects.insertBefore(section, after ?? null);
  return section;
}

/** Create or update a run's card. @param {any} run */
function renderRun(run) {
  let view = views.get(run.id);
  if (!view || !view.card.isConnected) view = createRunCard(run);
  if (!view) return;
  const { card } = view;
  card.dataset.status = run.status;
  view.badge = swap(view.badge, badge(run.status, "run-badge"));

  const stages = [...run.stages.values()].sort((a, b) => a.stageIndex - b.stageIndex);
  const done = stages.filter((s) => s.status === "completed").length;
  const meta = [
    run.createdBy ? `Created by ${run.createdBy}` : null,
    run.createdAt ? formatDateTime(run.createdAt) : null,
    `${done} of ${stages.length} stages done`,
  ].filter(Boolean);
  if (run.status === "failed" && run.errorCode) meta.push(`Error: ${humanise(run.errorCode)}`);
  view.meta.textContent = meta.join(" · ");

  for (const stage of stages) renderStage(view, stage);
  renderArtifacts(view, run);
  renderApprovals(view, run);
}

/** @param {any} run */
function createRunCard(run) {
  const section = ensureProjectSection(
    state.projects.get(run.projectId) ?? { id: run.projectId, name: run.projectId, role: null },
  );
  section.querySelector(":scope > .empty")?.remove();
  const list = /** @type {HTMLElement} */ (section.querySelector(".runs"));
  const titleId = `run-${run.id}-title`;
  const badgeEl = badge(run.status, "run-badge");
  const metaEl = h("p", { class: "run-meta muted" });
  const stageList = h("ol", { class: "stages", "aria-label": `Stages of ${run.name}` });
  const artifactList = h("ul", { class: "artifacts" });
  const approvalList = h("ul", { class: "approvals" });
  const card = h(
    "article",
    { id: `run-${run.id}`, class: "run", "aria-labelledby": titleId, dataset: { runId: run.id, createdAt: run.createdAt ?? "" } },
    h("header", { class: "run-head" }, h("h3", { id: titleId }, run.name), badgeEl),
    metaEl,
    stageList,
    h(
      "div",
      { class: "run-extras" },
      h("section", { class: "run-part", "aria-label": `Artifacts of ${run.name}` }, h("h4", {}, "Artifacts"), artifactList),
      h("section", { class: "run-part", "aria-label": `Approvals of ${run.name}` }, h("h4", {}, "Approvals"), approvalList),
    ),
  );
  // Newest first: before the first card created earlier than this one.
  const before = [...list.children].find(
    (c) => byNewest(run, { createdAt: /** @type {HTMLElement} */ (c).dataset.createdAt, id: c.id.slice(4) }) < 0,
  );
  list.insertBefore(card, before ?? null);
  const view = {
    card,
    badge: badgeEl,
    meta: metaEl,
    stageList,
    stageRows: new Map(),
    artifactList,
    artifactRows: new Map(),
    approvalList,
    approvalRows: new Map(),
  };
  views.set(run.id, view);
  return view;
}

/** @param {any} view @param {any} stage */
function renderStage(view, stage) {
  let row = view.stageRows.get(stage.id);
  if (!row) {
    const labelId = `stage-${stage.id}-label`;
    const fill = h("span", { class: "bar-fill" });
    row = {
      li: h("li", { class: "stage", dataset: { stageId: stage.id } }),
      badge: badge(stage.status),
      bar: h(
        "div",
        {
          class: "bar",
          role: "progressbar",
          "aria-valuemin": "0",
          "aria-valuemax": "100",
          "aria-valuenow": "0",
          "aria-labelledby": labelId,
        },
        fill,
      ),
      fill,
      percent: h("span", { class: "stage-percent" }),
      message: h("p", { class: "stage-message muted" }),
    };
    row.li.append(
      h("div", { class: "stage-head" }, h("span", { id: labelId, class: "stage-name" }, stage.name), row.badge),
      h("div", { class: "stage-progress" }, row.bar, row.percent),
      row.message,
    );
    // Keep stage order even if a stage row is created late.
    const before = [...view.stageList.children].find(
      (li) => Number(/** @type {HTMLElement} */ (li).dataset.index) > stage.stageIndex,
    );
    row.li.dataset.index = String(stage.stageIndex);
    view.stageList.insertBefore(row.li, before ?? null);
    view.stageRows.set(stage.id, row);
  }
  const progress = Math.max(0, Math.min(100, Math.round(stage.progress)));
  row.li.dataset.status = stage.status;
  row.badge = swap(row.badge, badge(stage.status));
  row.bar.setAttribute("aria-valuenow", String(progress));
  row.bar.setAttribute("aria-valuetext", `${progress}%`);
  row.fill.style.width = `${progress}%`;
  row.percent.textContent = `${progress}%`;
  const parts = [];
  if (stage.status === "completed") {
    // The last progress message ("Processing 500 of 1000 rows") is stale once a stage is done.
    parts.push(stage.itemsTotal != null ? `Done: ${numberFormat.format(stage.itemsTotal)} items` : "Done");
  } else {
    if (stage.status === "failed") parts.push(`Failed: ${humanise(stage.errorCode ?? "error")}`);
    if (stage.statusMessage) parts.push(stage.statusMessage);
    else if (stage.itemsTotal != null && stage.itemsProcessed != null) {
      parts.push(`${numberFormat.format(stage.itemsProcessed)} of ${numberFormat.format(stage.itemsTotal)} items`);
    }
    if (parts.length === 0 && stage.status === "pending") parts.push("Waiting to start");
  }
  row.message.textContent = parts.join(" — ");
}

/** @param {any} view @param {any} run */
function renderArtifacts(view, run) {
  const artifacts = [...run.artifacts.values()].sort((a, b) =>
    String(a.createdAt ?? "").localeCompare(String(b.createdAt ?? "")),
  );
  if (artifacts.length === 0) {
    if (!view.artifactList.querySelector(".none")) view.artifactList.replaceChildren(h("li", { class: "none muted" }, "None yet"));
    return;
  }
  view.artifactList.querySelector(".none")?.remove();
  for (const artifact of artifacts) {
    if (view.artifactRows.has(artifact.id)) continue; // artifacts never change
    const li = h(
      "li",
      { class: "artifact", dataset: { artifactId: artifact.id } },
      h("span", { class: "artifact-name" }, artifact.name),
      " ",
      h("span", { class: "muted" }, [artifact.kind, formatBytes(artifact.sizeBytes), artifact.contentType].filter(Boolean).join(" · ")),
    );
    view.artifactList.append(li);
    view.artifactRows.set(artifact.id, li);
  }
}

/** @param {any} view @param {any} run */
function renderApprovals(view, run) {
  const approvals = [...run.approvals.values()].sort((a, b) =>
    String(a.requestedAt ?? "").localeCompare(String(b.requestedAt ?? "")),
  );
  if (approvals.length === 0) {
    if (!view.approvalList.querySelector(".none")) view.approvalList.replaceChildren(h("li", { class: "none muted" }, "None requested"));
    return;
  }
  view.approvalList.querySelector(".none")?.remove();
  for (const approval of approvals) {
    let row = view.approvalRows.get(approval.id);
    if (!row) {
      const titleId = `approval-${approval.id}-title`;
      row = {
        li: h("li", { class: "approval", tabindex: "-1", dataset: { approvalId: approval.id } }),
        title: h("span", { id: titleId, class: "approval-title" }),
        badge: badge(approval.status),
        detail: h("span", { class: "approval-detail muted" }),
        actions: h("span", { class: "approval-actions" }),
        titleId,
      };
      row.li.append(h("div", { class: "approval-head" }, row.title, row.badge), row.detail, row.actions);
      view.approvalList.append(row.li);
      view.approvalRows.set(approval.id, row);
    }
    updateApprovalRow(row, approval, run);
  }
}

/** @param {any} row @param {any} approval @param {any} run */
function updateApprovalRow(row, approval, run) {
  row.li.dataset.status = approval.status;
  row.title.textContent = `${humanise(approval.governanceType)} · ${humanise(approval.priority)} priority`;
  row.badge = swap(row.badge, badge(approval.status));
  if (approval.status === "pending") {
    row.detail.textContent = approval.assignedTo.length
      ? `Assigned to ${approval.assignedTo.join(", ")}`
      : "Unassigned";
  } else {
    const verb = approval.status === "granted" ? "Granted" : "Denied";
    const by = approval.decidedBy ? ` by ${approval.decidedBy}` : "";
    const at = approval.decidedAt ? ` at ${formatTime(approval.decidedAt)}` : "";
    const why = approval.reasonCode ? ` (${humanise(approval.reasonCode)})` : "";
    row.detail.textContent = `${verb}${by}${at}${why}`;
  }

  const wantButtons = approval.status === "pending" && canDecide(run.projectId);
  const busy = busyApprovals.has(approval.id);
  if (!wantButtons) {
    const hadFocus = row.actions.contains(document.activeElement);
    row.actions.replaceChildren();
    if (hadFocus) row.li.focus(); // the button that had focus is gone: keep the user in place
    return;
  }
  if (row.actions.childElementCount === 0) {
    const make = (/** @type {"grant"|"deny"} */ verdict, /** @type {string} */ label) =>
      h(
        "button",
        {
          type: "button",
          class: `button ${verdict}`,
          dataset: { verdict },
          "aria-describedby": row.titleId,
          onclick: () => decide(run.id, approval.id, verdict),
        },
        label,
      );
    row.actions.append(make("grant", "Grant"), make("deny", "Deny"));
  }
  for (const button of row.actions.querySelectorAll("button")) {
    const verdict = /** @type {HTMLElement} */ (button).dataset.verdict;
    /** @type {HTMLButtonElement} */ (button).disabled = busy;
    button.textContent = busy ? (verdict === "grant" ? "Granting…" : "Denying…") : verdict === "grant" ? "Grant" : "Deny";
  }
}

/**
 * Grant or deny through the REST API; the REST answer updates the page at once, and the
 * approval.* event that follows is then a no-op.
 * @param {string} runId @param {string} approvalId @param {"grant"|"deny"} verdict
 */
async function decide(runId, approvalId, verdict) {
  if (busyApprovals.has(approvalId)) return;
  busyApprovals.add(approvalId);
  rerender(runId);
  renderInbox();
  try {
    const result = await api(`/api/approvals/${encodeURIComponent(approvalId)}/${verdict}/`, { method: "POST", body: {} });
    inbox.remove(approvalId);
    const approval = state.runs.get(runId)?.approvals.get(approvalId);
    if (approval && approval.status === "pending" && result) Object.assign(approval, normaliseApproval(result));
  } catch (err) {
    showNotice(`Could not ${verdict} the approval: ${errorText(err)}`);
    // Decided by someone else (409), or no longer ours to decide (403, 404): not waiting for us.
    if (err instanceof ApiError && [403, 404, 409].includes(err.status)) inbox.remove(approvalId);
    if (err instanceof ApiError && err.status === 409) {
      // Someone decided first: show what the server has.
      const detail = await fetchRunDetail(runId).catch(() => null);
      if (detail) mergeRun(normaliseRun(detail));
    }
  } finally {
    busyApprovals.delete(approvalId);
    rerender(runId);
    renderInbox();
  }
}

function rerender(/** @type {string} */ runId) {
  const run = state.runs.get(runId);
  if (run) renderRun(run);
}

// ----------------------------------------------------------------------------------- inbox

/** "Waiting for me": the count (announced politely when it changes) and one row per approval. */
function renderInbox() {
  const items = inbox.list();
  const n = items.length;
  const words = n === 0 ? "No approvals waiting for you" : `${n} ${n === 1 ? "approval" : "approvals"} waiting for you`;
  if (els.inboxCount.textContent !== words) els.inboxCount.textContent = words; // unchanged: no re-announcement
  els.inbox.dataset.count = String(n);
  els.inbox.removeAttribute("aria-busy");
  document.title = n > 0 ? `(${n}) ${baseTitle}` : baseTitle;

  const wanted = new Set(items.map((item) => item.id));
  /** Where the focused row was, if it is removed now; -1 when focus is elsewhere. */
  let focusAt = -1;
  for (const [id, row] of inboxRows) {
    if (wanted.has(id)) continue;
    if (row.li.contains(document.activeElement)) focusAt = [...els.inboxList.children].indexOf(row.li);
    row.li.remove();
    inboxRows.delete(id);
  }
  if (n === 0) {
    if (!els.inboxList.querySelector(".none")) {
      els.inboxList.replaceChildren(h("li", { class: "none muted" }, "Nothing is waiting for you."));
    }
  } else {
    els.inboxList.querySelector(".none")?.remove();
    items.forEach((item, index) => {
      const row = inboxRows.get(item.id) ?? createInboxRow(item);
      updateInboxRow(row, item);
      // Move only what is out of place, so a focused row is not re-inserted (which would blur it).
      const at = els.inboxList.children[index];
      if (at !== row.li) els.inboxList.insertBefore(row.li, at ?? null);
    });
  }
  if (focusAt >= 0) {
    // The button that had focus is gone: keep the keyboard user in the queue, on the row that
    // took its place (or the last one), else on the inbox's heading.
    const rows = els.inboxList.querySelectorAll(".inbox-item");
    const target = /** @type {HTMLElement|undefined} */ (rows[Math.min(focusAt, rows.length - 1)]);
    (target ?? els.inboxTitle).focus();
  }
}

/** @param {import("./approvals-inbox.js").InboxItem} item */
function createInboxRow(item) {
  const titleId = `inbox-${item.id}-title`;
  const whereId = `inbox-${item.id}-where`;
  const row = {
    li: h("li", {
      class: "inbox-item",
      tabindex: "-1",
      dataset: { approvalId: item.id, runId: item.runId, projectId: item.projectId, priority: item.priority },
    }),
    title: h("span", { id: titleId, class: "approval-title" }),
    mine: h("span", { class: "tag" }, "Assigned to you"),
    where: h("p", { id: whereId, class: "inbox-where" }),
    when: h("p", { class: "inbox-when muted" }),
    actions: h("div", { class: "approval-actions" }),
  };
  const make = (/** @type {"grant"|"deny"} */ verdict, /** @type {string} */ label) =>
    h(
      "button",
      {
        type: "button",
        class: `button ${verdict}`,
        dataset: { verdict },
        "aria-describedby": `${titleId} ${whereId}`,
        onclick: () => decide(item.runId, item.id, verdict),
      },
      label,
    );
  row.actions.append(make("grant", "Grant"), make("deny", "Deny"));
  row.li.append(h("div", { class: "approval-head" }, row.title, row.mine), row.where, row.when, row.actions);
  inboxRows.set(item.id, row);
  return row;
}

/** @param {any} row @param {import("./approvals-inbox.js").InboxItem} item */
function updateInboxRow(row, item) {
  const runName = state.runs.get(item.runId)?.name ?? item.runName ?? item.runId;
  const projectName = state.projects.get(item.projectId)?.name ?? item.projectName ?? item.projectId;
  row.li.dataset.assignedToMe = String(item.assignedToMe);
  row.title.textContent = `${humanise(item.governanceType)} · ${humanise(item.priority)} priority`;
  row.mine.hidden = !item.assignedToMe;
  row.where.textContent = `Run “${runName}” in ${projectName}`;
  const assigned = item.assignedTo.length ? `assigned to ${item.assignedTo.join(", ")}` : "unassigned";
  const requested = item.requestedAt ? `Requested ${formatDateTime(item.requestedAt)} · ` : "";
  row.when.textContent = `${requested}${assigned}`;
  const busy = busyApprovals.has(item.id);
  for (const button of row.actions.querySelectorAll("button")) {
    const verdict = /** @type {HTMLElement} */ (button).dataset.verdict;
    // aria-disabled, not disabled: a disabled button drops the keyboard focus, which should
    // stay in the queue (decide() ignores a second press while the first is in flight).
    if (busy) button.setAttribute("aria-disabled", "true");
    else button.removeAttribute("aria-disabled");
    button.textContent = busy ? (verdict === "grant" ? "Granting…" : "Denying…") : verdict === "grant" ? "Grant" : "Deny";
  }
}

// ------------------------------------------------------------------------------------ feed

/** @param {any} event */
function describe(event) {
  const p = event.payload ?? {};
  const runName = state.runs.get(p.runId)?.name ?? p.runName ?? p.runId ?? "a run";
  const stage = p.stageName ? `${runName} › ${p.stageName}` : runName;
  switch (event.type) {
    case "run.created":
      return `Run “${runName}” created${p.createdBy ? ` by ${p.createdBy}` : ""} (${p.stageCount ?? "?"} stages)`;
    case "run.started":
      return `Run “${runName}” started`;
    case "run.completed":
      return `Run “${runName}” completed in ${((p.durationMs ?? 0) / 1000).toFixed(1)} s`;
    case "run.failed":
      return `Run “${runName}” failed: ${humanise(p.errorCode)}`;
    case "stage.started":
      return `${stage}: started`;
    case "stage.progress":
      return `${stage}: ${p.progress}%${p.statusMessage ? ` — ${p.statusMessage}` : ""}`;
    case "stage.completed":
      return `${stage}: completed`;
    case "stage.failed":
      return `${stage}: failed (${humanise(p.errorCode)})`;
    case "artifact.created":
      return `${runName}: artifact ${p.artifactName} (${p.artifactKind}, ${formatBytes(p.sizeBytes)})`;
    case "governance.required":
      return `${runName}: ${humanise(p.governanceType)} approval requested (${humanise(p.priority)} priority)`;
    case "approval.granted":
    case "approval.denied":
      return `${runName}: ${humanise(p.governanceType)} ${event.type === "approval.granted" ? "granted" : "denied"}${p.decidedBy ? ` by ${p.decidedBy}` : ""}`;
    default:
      return event.type;
  }
}

/** @param {any} event */
function addToFeed(event) {
  if (typeof event.id === "number") {
    if (feedIds.has(event.id)) return;
    feedIds.add(event.id);
  }
  els.feedHint?.remove();
  const category = categoryOf(event.type) ?? "OTHER";
  const li = h(
    "li",
    {
      class: `feed-item feed-${category.toLowerCase().replace("_events", "")}`,
      dataset: { eventId: String(event.id ?? ""), runId: String(event.payload?.runId ?? ""), type: event.type },
    },
    h(
      "span",
      { class: "feed-meta" },
      h("time", { datetime: event.timestamp }, formatTime(event.timestamp)),
      " ",
      h("code", {}, event.type),
      " ",
      h("span", { class: "feed-id" }, `#${event.id}`),
    ),
    h("span", { class: "feed-text" }, describe(event)),
  );
  els.feed.prepend(li); // newest on top
  while (els.feed.childElementCount > FEED_LIMIT) {
    const last = /** @type {HTMLElement} */ (els.feed.lastElementChild);
    feedIds.delete(Number(last.dataset.eventId));
    last.remove();
  }
}

// ------------------------------------------------------------------- connection indicator

/** @param {string} connection */
function renderConnection(connection) {
  let key = connection;
  let label;
  if (connection === ConnectionState.OPEN) label = "Connected";
  else if (connection === ConnectionState.CONNECTING) label = "Connecting…";
  else if (connection === ConnectionState.RECONNECTING) {
    if (navigator.onLine === false) {
      key = "offline";
      label = "Offline — waiting for the network";
    } else {
      label = "Reconnecting…";
    }
  } else {
    key = "offline";
    label = "Offline";
  }
  els.connection.dataset.state = key;
  // "sse" once the client fell back to Server-Sent Events (a proxy that refuses WebSockets).
  els.connection.dataset.transport = client?.transport ?? "websocket";
  els.connectionLabel.textContent = label;
  if (els.reconnect) els.reconnect.hidden = !(key === "reconnecting" || (key === "offline" && client !== null));
}

function showNotice(/** @type {string} */ text, kind = "error") {
  els.notice.textContent = text;
  els.notice.dataset.kind = kind;
  els.notice.hidden = false;
}

function hideNotice() {
  els.notice.hidden = true;
  els.notice.textContent = "";
}

// ---------------------------------------------------------------------------- start-up

/** @param {{since: number, projects: any[], runs: any[]}} snapshot */
function installSnapshot(snapshot) {
  state.projects = new Map(snapshot.projects.map((p) => [String(p.id), normaliseProject(p)]));
  state.runs = new Map();
  for (const run of snapshot.runs) state.runs.set(String(run.id), normaliseRun(run));
  inbox.load(snapshot.approvals, snapshot.since);
  renderAll();
  renderInbox();
}

/** @param {number} since */
function connect(since) {
  client = new RunEventsClient({
    url: config.websocketUrl || undefined,
    // Same-origin page: the socket authenticates with the session cookie; `auth` still carries
    // the subscriptions and the resume position.
    eventCategories: Object.keys(EVENT_CATEGORIES),
    lastEventId: since,
    // A dashboard is left open for hours: never give up, but don't wait long once back.
    reconnectAttempts: Infinity,
    reconnectDelay: 1000,
    maxReconnectDelay: 10_000,
    onStateChange: (connection) => {
      renderConnection(connection);
      if (connection === ConnectionState.OPEN && els.notice.dataset.kind === "connection") hideNotice();
    },
    onResync: () => void resync(),
    onEvent,
    onError: (err) => {
      const code = /** @type {any} */ (err).code;
      if (code === "auth_failed" || code === "unauthorized" || code === "forbidden") {
        showNotice("The live connection was refused. Your session may have ended: reload the page to sign in again.", "connection");
      } else if (code === "handler_error") {
        console.error("dashboard:", err);
      }
    },
  });
}

function wireControls() {
  els.reconnect?.addEventListener("click", () => client?.reconnect());
  window.addEventListener("online", () => {
    if (client && client.connectionState !== ConnectionState.OPEN) client.reconnect();
  });
  window.addEventListener("offline", () => client && renderConnection(client.connectionState));

  const form = els.demoForm;
  if (form) {
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const button = /** @type {HTMLButtonElement|null} */ (form.querySelector("button[type=submit]"));
      if (button) button.disabled = true;
      if (els.demoStatus) els.demoStatus.textContent = "Starting…";
      try {
        const response = await fetch(form.action, {
          method: "POST",
          credentials: "same-origin",
          headers: { Accept: "application/json", "X-CSRFToken": csrfToken() },
          body: new FormData(form),
        });
        const data = await response.json().catch(() => ({}));
        const detail = typeof data.detail === "string" ? data.detail : `HTTP ${response.status}`;
        if (els.demoStatus) els.demoStatus.textContent = response.ok ? detail : `Could not start: ${detail}`;
      } catch (err) {
        if (els.demoStatus) els.demoStatus.textContent = `Could not start: ${errorText(err)}`;
      } finally {
        if (button) button.disabled = false;
      }
    });
  }
}

async function main() {
  wireControls();
  try {
    const snapshot = await withRetry(loadSnapshot);
    installSnapshot(snapshot);
    hideNotice();
    connect(snapshot.since);
  } catch (err) {
    renderConnection(ConnectionState.CLOSED);
    console.error("dashboard: could not start", err);
  }
}

void main();
