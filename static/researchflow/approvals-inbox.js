// The approvals inbox's state: the pending approvals the user may decide, across projects,
// loaded over REST (`GET /api/approvals/inbox/`) and kept current by governance and run events.
//
// Pure state, no DOM: the dashboard renders it (static/researchflow/dashboard.js), the tests
// drive it with plain objects (tests/js/approvals-inbox.test.js).
//
// What must stay true:
// * The REST load reflects every event up to `since` (the dashboard reads the log head before
//   the inbox, as for the rest of its state), so events with an id <= `since` are ignored and
//   later ones are applied. Applying is idempotent: an approval is keyed by id, a second
//   `governance.required` for it changes nothing, and one that was decided (by an event or by
//   this page) never comes back. So the count is right after a load, a replay or a resync.
// * Membership in the inbox follows the server's rule (runs/api/inbox.py): pending, of a run in
//   progress, in a project where the user may decide (owner, member; staff everywhere). A
//   `governance.required` of a project whose role the page does not know yet (one the user
//   was just added to) waits until `projectKnown()` says whether the user may decide there.

/** Most urgent first, as the server orders the inbox. */
export const PRIORITY_RANK = Object.freeze({ CRITICAL: 0, HIGH: 1, MEDIUM: 2, LOW: 3 });

/**
 * @typedef {object} InboxItem
 * @property {string} id
 * @property {string} runId
 * @property {string|null} runName      null until known (an item added from an event)
 * @property {string} projectId
 * @property {string|null} projectName  null until known
 * @property {string} governanceType
 * @property {string} priority
 * @property {string[]} assignedTo
 * @property {boolean} assignedToMe
 * @property {string|null} requestedAt
 */

/**
 * The server's order: priority, then the longest waiting, then id.
 * @param {InboxItem} a @param {InboxItem} b
 */
export function compareInboxItems(a, b) {
  const rank = (/** @type {InboxItem} */ x) => PRIORITY_RANK[/** @type {keyof PRIORITY_RANK} */ (x.priority)] ?? 4;
  return (
    rank(a) - rank(b) ||
    String(a.requestedAt ?? "").localeCompare(String(b.requestedAt ?? "")) ||
    (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)
  );
}

/**
 * An item of `GET /api/approvals/inbox/` → the inbox's shape.
 * @param {any} raw
 * @returns {InboxItem}
 */
export function normaliseInboxItem(raw) {
  return {
    id: String(raw.id),
    runId: String(raw.runId),
    runName: raw.runName == null ? null : String(raw.runName),
    projectId: String(raw.projectId),
    projectName: raw.projectName == null ? null : String(raw.projectName),
    governanceType: String(raw.governanceType ?? ""),
    priority: String(raw.priority ?? ""),
    assignedTo: Array.isArray(raw.assignedTo) ? raw.assignedTo.map(String) : [],
    assignedToMe: Boolean(raw.assignedToMe),
    requestedAt: raw.requestedAt ?? null,
  };
}

const DECISIONS = new Set(["approval.granted", "approval.denied"]);
const RUN_ENDS = new Set(["run.completed", "run.failed"]);

export class ApprovalInbox {
  /**
   * @param {{username: string, mayDecide: (projectId: string) => boolean|null}} options
   *   `mayDecide`: whether the user may decide approvals of that project; null when the page
   *   does not know the project (yet).
   */
  constructor({ username, mayDecide }) {
    this.username = username;
    this.mayDecide = mayDecide;
    /** @type {Map<string, InboxItem>} */
    this.items = new Map();
    /** Approval ids decided or refused: never added again. */
    this.settled = new Set();
    /** governance.required events waiting for their project's role, by approval id. @type {Map<string, any>} */
    this.deferred = new Map();
    this.since = 0;
  }

  /** How many approvals wait for the user. */
  get count() {
    return this.items.size;
  }

  /** The items, most urgent first. @returns {InboxItem[]} */
  list() {
    return [...this.items.values()].sort(compareInboxItems);
  }

  /** @param {string} id */
  get(id) {
    return this.items.get(id);
  }

  /**
   * Replace the state with a REST load that reflects every event up to `since`.
   * @param {any[]} rawItems every page of the inbox @param {number} since
   */
  load(rawItems, since) {
    this.items = new Map();
    this.deferred = new Map();
    this.since = Number.isInteger(since) ? since : 0;
    for (const raw of rawItems) {
      const item = normaliseInboxItem(raw);
      if (!this.settled.has(item.id)) this.items.set(item.id, item);
    }
  }

  /**
   * Apply one event (any type; the irrelevant ones change nothing).
   * @param {any} event @returns {boolean} whether the inbox changed
   */
  apply(event) {
    if (typeof event?.id === "number" && event.id <= this.since) return false; // in the load
    const p = event?.payload ?? {};
    if (event?.type === "governance.required") return this._required(event);
    if (DECISIONS.has(event?.type)) return this.remove(String(p.governanceId));
    if (RUN_ENDS.has(event?.type)) return this._runEnded(String(p.runId));
    return false;
  }

  /**
   * The page learnt the user's role in `projectId`: apply the events that waited for it.
   * @param {string} projectId @returns {boolean} whether the inbox changed
   */
  projectKnown(projectId) {
    let changed = false;
    for (const [id, event] of [...this.deferred]) {
      if (event.payload.projectId !== projectId) continue;
      this.deferred.delete(id);
      changed = this._required(event) || changed;
    }
    return changed;
  }

  /**
   * The approval was decided (or may no longer be decided by this user): out, for good.
   * @param {string} id @returns {boolean} whether the inbox changed
   */
  remove(id) {
    this.settled.add(id);
    this.deferred.delete(id);
    return this.items.delete(id);
  }

  /** @param {any} event */
  _required(event) {
    const p = event.payload ?? {};
    const id = String(p.governanceId);
    if (this.settled.has(id) || this.items.has(id)) return false;
    const allowed = this.mayDecide(String(p.projectId));
    if (allowed === null) {
      this.deferred.set(id, event);
      return false;
    }
    if (!allowed) return false;
    const assignedTo = Array.isArray(p.assignedTo) ? p.assignedTo.map(String) : [];
    this.items.set(
      id,
      normaliseInboxItem({
        id,
        runId: p.runId,
        projectId: p.projectId,
        governanceType: p.governanceType,
        priority: p.priority,
        assignedTo,
        assignedToMe: assignedTo.includes(this.username),
        requestedAt: p.requestedAt ?? event.timestamp ?? null,
      }),
    );
    return true;
  }

  /** A finished run waits on nothing: its approvals leave the inbox. @param {string} runId */
  _runEnded(runId) {
    let changed = false;
    for (const [id, item] of [...this.items]) {
      if (item.runId === runId) {
        this.items.delete(id);
        changed = true;
      }
    }
    for (const [id, event] of [...this.deferred]) {
      if (event.payload.runId === runId) this.deferred.delete(id);
    }
    return changed;
  }
}
