import { describe, expect, it } from "vitest";
import { ApprovalInbox, compareInboxItems, normaliseInboxItem } from "../../static/researchflow/approvals-inbox.js";

const P1 = "prj_aaaaaaaaaaaaaaaaaaaa";
const P2 = "prj_bbbbbbbbbbbbbbbbbbbb";
const VIEWED = "prj_vvvvvvvvvvvvvvvvvvvv";
const RUN = "run_aaaaaaaaaaaaaaaaaaaa";

/** Roles as the dashboard knows them: member of P1 and P2, viewer of VIEWED, others unknown. */
function makeInbox(known = new Map([[P1, true], [P2, true], [VIEWED, false]])) {
  return new ApprovalInbox({ username: "bob", mayDecide: (projectId) => known.get(projectId) ?? null });
}

let nextId = 100;

function required(governanceId, { projectId = P1, runId = RUN, priority = "HIGH", assignedTo = [], id = nextId++, requestedAt = "2026-12-07T10:00:00.000Z" } = {}) {
  return {
    id,
    type: "governance.required",
    timestamp: requestedAt,
    payload: { runId, projectId, governanceId, governanceType: "PHI_SCAN", priority, assignedTo, requestedAt },
  };
}

function decided(governanceId, { granted = true, projectId = P1, runId = RUN, id = nextId++ } = {}) {
  return {
    id,
    type: granted ? "approval.granted" : "approval.denied",
    timestamp: "2026-12-07T10:05:00.000Z",
    payload: { runId, projectId, governanceId, governanceType: "PHI_SCAN", decidedBy: "alice", decidedAt: "2026-12-07T10:05:00.000Z" },
  };
}

function restItem(id, overrides = {}) {
  return {
    id,
    runId: RUN,
    runName: "Cohort A",
    runStatus: "running",
    projectId: P1,
    projectName: "Cardiology",
    governanceType: "ETHICS_REVIEW",
    priority: "MEDIUM",
    status: "pending",
    assignedTo: ["bob"],
    assignedToMe: true,
    requestedAt: "2026-12-07T09:00:00.000Z",
    ...overrides,
  };
}

describe("ApprovalInbox", () => {
  it("counts what the REST load holds", () => {
    const inbox = makeInbox();
    inbox.load([restItem("gov_1"), restItem("gov_2")], 50);
    expect(inbox.count).toBe(2);
    expect(inbox.get("gov_1")).toMatchObject({ runName: "Cohort A", projectName: "Cardiology", assignedToMe: true });
  });

  it("adds a governance.required the user may decide, and removes it when granted or denied", () => {
    const inbox = makeInbox();
    inbox.load([], 0);
    expect(inbox.apply(required("gov_a", { assignedTo: ["bob", "alice"] }))).toBe(true);
    expect(inbox.apply(required("gov_b", { projectId: P2 }))).toBe(true);
    expect(inbox.count).toBe(2);
    expect(inbox.get("gov_a")).toMatchObject({ runId: RUN, projectId: P1, priority: "HIGH", assignedToMe: true, runName: null });
    expect(inbox.get("gov_b")?.assignedToMe).toBe(false);
    expect(inbox.apply(decided("gov_a"))).toBe(true);
    expect(inbox.apply(decided("gov_b", { granted: false, projectId: P2 }))).toBe(true);
    expect(inbox.count).toBe(0);
  });

  it("ignores approvals of projects where the user may not decide", () => {
    const inbox = makeInbox();
    inbox.load([], 0);
    expect(inbox.apply(required("gov_v", { projectId: VIEWED }))).toBe(false);
    expect(inbox.count).toBe(0);
  });

  it("is idempotent: a repeated event changes nothing, a decided approval never comes back", () => {
    const inbox = makeInbox();
    inbox.load([], 0);
    const ask = required("gov_a");
    inbox.apply(ask);
    expect(inbox.apply({ ...ask })).toBe(false);
    expect(inbox.count).toBe(1);
    inbox.apply(decided("gov_a"));
    expect(inbox.apply({ ...ask, id: nextId++ })).toBe(false);
    expect(inbox.count).toBe(0);
    // A decision for something the inbox never held changes nothing.
    expect(inbox.apply(decided("gov_unknown"))).toBe(false);
  });

  it("ignores events the REST load already reflects (id <= since)", () => {
    const inbox = makeInbox();
    // Loaded after gov_old was requested and gov_done decided: the load shows only gov_old.
    inbox.load([restItem("gov_old")], 200);
    expect(inbox.apply(required("gov_done", { id: 150 }))).toBe(false);
    expect(inbox.apply(decided("gov_old", { id: 190 }))).toBe(false);
    expect(inbox.count).toBe(1);
    // An event after the load that the load may already show is still harmless.
    expect(inbox.apply(required("gov_old", { id: 201 }))).toBe(false);
    expect(inbox.apply(decided("gov_old", { id: 202 }))).toBe(true);
    expect(inbox.count).toBe(0);
  });

  it("keeps a page's own decision out of a later load (the REST answer may predate it)", () => {
    const inbox = makeInbox();
    inbox.load([restItem("gov_1"), restItem("gov_2")], 10);
    expect(inbox.remove("gov_1")).toBe(true);
    inbox.load([restItem("gov_1"), restItem("gov_2")], 10);
    expect(inbox.list().map((i) => i.id)).toEqual(["gov_2"]);
  });

  it("drops the approvals of a run that completed or failed", () => {
    const inbox = makeInbox();
    const other = "run_bbbbbbbbbbbbbbbbbbbb";
    inbox.load([restItem("gov_1"), restItem("gov_2", { runId: other })], 0);
    expect(inbox.apply({ id: nextId++, type: "run.failed", payload: { runId: RUN, projectId: P1 } })).toBe(true);
    expect(inbox.list().map((i) => i.id)).toEqual(["gov_2"]);
    expect(inbox.apply({ id: nextId++, type: "run.completed", payload: { runId: other, projectId: P1 } })).toBe(true);
    expect(inbox.count).toBe(0);
    expect(inbox.apply({ id: nextId++, type: "stage.progress", payload: { runId: RUN } })).toBe(false);
  });

  it("holds a request from a project of unknown role until the role is known", () => {
    const known = new Map([[P1, true]]);
    const inbox = makeInbox(known);
    inbox.load([], 0);
    const fresh = "prj_nnnnnnnnnnnnnnnnnnnn";
    const viewerOnly = "prj_wwwwwwwwwwwwwwwwwwww";
    expect(inbox.apply(required("gov_new", { projectId: fresh }))).toBe(false);
    expect(inbox.apply(required("gov_seen", { projectId: viewerOnly }))).toBe(false);
    expect(inbox.count).toBe(0);
    known.set(fresh, true);
    known.set(viewerOnly, false);
    expect(inbox.projectKnown(fresh)).toBe(true);
    expect(inbox.projectKnown(viewerOnly)).toBe(false);
    expect(inbox.list().map((i) => i.id)).toEqual(["gov_new"]);
  });

  it("forgets a held request once it is decided before its project's role is known", () => {
    const known = new Map();
    const inbox = makeInbox(known);
    inbox.load([], 0);
    inbox.apply(required("gov_x", { projectId: P2 }));
    inbox.apply(decided("gov_x", { projectId: P2 }));
    known.set(P2, true);
    expect(inbox.projectKnown(P2)).toBe(false);
    expect(inbox.count).toBe(0);
  });

  it("lists the most urgent first, then the longest waiting, as the server does", () => {
    const inbox = makeInbox();
    inbox.load([], 0);
    inbox.apply(required("gov_low", { priority: "LOW", requestedAt: "2026-12-07T08:00:00.000Z" }));
    inbox.apply(required("gov_high_new", { priority: "HIGH", requestedAt: "2026-12-07T10:00:00.000Z" }));
    inbox.apply(required("gov_high_old", { priority: "HIGH", requestedAt: "2026-12-07T09:00:00.000Z" }));
    inbox.apply(required("gov_crit", { priority: "CRITICAL", requestedAt: "2026-12-07T11:00:00.000Z" }));
    expect(inbox.list().map((i) => i.id)).toEqual(["gov_crit", "gov_high_old", "gov_high_new", "gov_low"]);
  });
});

describe("helpers", () => {
  it("orders equal priority and time by id", () => {
    const a = normaliseInboxItem(restItem("gov_a"));
    const b = normaliseInboxItem(restItem("gov_b"));
    expect(compareInboxItems(a, b)).toBeLessThan(0);
    expect(compareInboxItems(b, a)).toBeGreaterThan(0);
    expect(compareInboxItems(a, a)).toBe(0);
  });

  it("normalises a REST item without trusting its shape", () => {
    expect(normaliseInboxItem({ id: 1, runId: 2, projectId: 3 })).toEqual({
      id: "1",
      runId: "2",
      runName: null,
      projectId: "3",
      projectName: null,
      governanceType: "",
      priority: "",
      assignedTo: [],
      assignedToMe: false,
      requestedAt: null,
    });
  });
});
