// The dagwright web console: executions, the live DAG, jobs and their logs,
// pools and the queue. Hash routes: #/login, #/ (executions), #/x/NS/NAME
// (an execution; ?job=NAME opens a job), #/pools.

import { ApiError, call, get, live, readText, session } from "./api.js";
import { duration, h, present, when } from "./dom.js";
import { type Graph, GraphView, type Group, group, PHASE_COLORS } from "./graph.js";

const app = document.getElementById("app")!;
const banner = document.getElementById("banner")!;
let teardown: Array<() => void> = [];

function say(message: string, kind: "error" | "info" = "info"): void {
  banner.textContent = message;
  banner.className = `banner ${kind}`;
  banner.hidden = !message;
  banner.setAttribute("role", kind === "error" ? "alert" : "status");
}

function fail(error: unknown): void {
  if (error instanceof ApiError && error.status === 401) {
    session.clear();
    location.hash = "#/login";
  }
  say(error instanceof Error ? error.message : String(error), "error");
}

function phaseBadge(phase: string | null | undefined): HTMLElement {
  const name = phase || "Pending";
  return h("span", { class: "phase", "data-phase": name, style: `background:${PHASE_COLORS[name] ?? "#c9ced6"}` }, name);
}

function navigate(): void {
  for (const stop of teardown) stop();
  teardown = [];
  say("");
  const hash = location.hash || "#/";
  if (!session.token && hash !== "#/login") {
    location.hash = "#/login";
    return;
  }
  const [path, query = ""] = hash.slice(1).split("?");
  const params = new URLSearchParams(query);
  const parts = path!.split("/").filter(Boolean);
  for (const link of document.querySelectorAll<HTMLAnchorElement>("nav a")) {
    link.classList.toggle("active", hash.startsWith(link.getAttribute("href")!) && link.getAttribute("href") !== "#/" || (link.getAttribute("href") === "#/" && parts.length === 0));
  }
  if (parts[0] === "login") loginPage();
  else if (parts[0] === "x" && parts[1] && parts[2]) void executionPage(parts[1], parts[2], params.get("job"));
  else if (parts[0] === "pools") void poolsPage();
  else void executionsPage(params);
}

// --- login -------------------------------------------------------------------

function loginPage(): void {
  const token = h("input", { type: "password", id: "token", autocomplete: "off", placeholder: "a Kubernetes token" });
  const namespace = h("input", { id: "namespace", value: session.namespace, placeholder: "the API's default" });
  const form = h(
    "form",
    { class: "login" },
    h("h1", {}, "Sign in to dagwright"),
    h("p", {}, "Paste a Kubernetes token (kubectl create token NAME): the API checks it with TokenReview and every action with SubjectAccessReview. It is kept in this tab's session only."),
    h("label", {}, "Token", token),
    h("label", {}, "Namespace", namespace),
    h("button", { type: "submit", id: "login" }, "Sign in"),
  );
  form.addEventListener("submit", (event) => void signIn(event));
  const signIn = async (event: Event): Promise<void> => {
    event.preventDefault();
    session.token = token.value.trim();
    session.namespace = namespace.value.trim();
    try {
      await get("/execute", { namespace: session.namespace, limit: 1 });
      location.hash = "#/";
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) session.clear();
      say(error instanceof Error ? error.message : String(error), "error");
    }
  };
  app.replaceChildren(form);
  token.focus();
}

// --- executions ----------------------------------------------------------------

interface Summary {
  executionId: string;
  namespace: string;
  workflowId: string | null;
  phase: string | null;
  progress: string;
  failed: number;
  priority: number;
  startedAt: string | null;
  finishedAt: string | null;
  message: string;
  labels: Record<string, string>;
  type?: string;
}

const PHASES = ["", "Pending", "Running", "Suspended", "Succeeded", "Failed", "Cancelled"];

async function executionsPage(params: URLSearchParams): Promise<void> {
  const namespace = params.get("ns") ?? session.namespace;
  const phase = params.get("phase") ?? "";
  const selector = params.get("selector") ?? "";
  const nsInput = h("input", { name: "ns", value: namespace, placeholder: "namespace" });
  const phaseInput = h("select", { name: "phase" }, ...PHASES.map((p) => h("option", { value: p, selected: p === phase }, p || "any phase")));
  const selectorInput = h("input", { name: "selector", value: selector, placeholder: "label selector" });
  const filters = h("form", { class: "filters" }, nsInput, phaseInput, selectorInput, h("button", { type: "submit" }, "Filter"));
  filters.addEventListener("submit", (event) => {
    event.preventDefault();
    const q = new URLSearchParams({ ns: nsInput.value, phase: phaseInput.value, selector: selectorInput.value });
    location.hash = `#/?${q}`;
  });
  const body = h("tbody");
  const more = h("button", { class: "more", hidden: true }, "More");
  const table = h(
    "table",
    { class: "executions" },
    h("thead", {}, h("tr", {}, ...["Execution", "Phase", "Progress", "Failed", "Priority", "Started", "Duration", "Message"].map((t) => h("th", {}, t)))),
    body,
  );
  app.replaceChildren(h("h1", {}, "Executions"), filters, table, more);
  const rows = new Map<string, HTMLTableRowElement>();
  const render = (s: Summary): HTMLTableRowElement =>
    h(
      "tr",
      { "data-execution": s.executionId },
      h("td", {}, h("a", { href: `#/x/${s.namespace}/${s.executionId}` }, s.executionId)),
      h("td", {}, phaseBadge(s.phase)),
      h("td", {}, s.progress),
      h("td", {}, s.failed || ""),
      h("td", {}, s.priority),
      h("td", {}, when(s.startedAt)),
      h("td", {}, duration(s.startedAt, s.finishedAt)),
      h("td", { class: "message" }, s.message),
    );
  const matches = (s: Summary) =>
    (!phase || (s.phase ?? "Pending") === phase) &&
    selector.split(",").every((term) => {
      if (!term.trim()) return true;
      const [k, v] = term.split("=");
      return s.labels[k!.trim()] === v?.trim();
    });
  let token: string | null = null;
  const load = async (reset: boolean): Promise<void> => {
    const page = await get<{ items: Summary[]; continue: string | null }>("/execute", {
      namespace,
      phase: phase || undefined,
      selector: selector || undefined,
      limit: 50,
      continue: reset ? undefined : token ?? undefined,
    });
    if (reset) {
      body.replaceChildren();
      rows.clear();
    }
    for (const s of page.items) {
      const row = render(s);
      rows.set(s.executionId, row);
      body.append(row);
    }
    token = page.continue;
    more.hidden = !token;
  };
  more.addEventListener("click", () => void load(false).catch(fail));
  try {
    await load(true);
  } catch (error) {
    fail(error);
    return;
  }
  const stream = live({ namespace }, (event, data) => {
    if (event === "error") fail(data);
    else if (event === "resync") void load(true).catch(fail);
    else if (event === "execution") {
      const s = data as Summary;
      const old = rows.get(s.executionId);
      if (s.type === "DELETED" || !matches(s)) {
        old?.remove();
        rows.delete(s.executionId);
        return;
      }
      const row = render(s);
      rows.set(s.executionId, row);
      if (old) old.replaceWith(row);
      else body.prepend(row);
    }
  });
  teardown.push(() => stream.close());
}

// --- one execution -----------------------------------------------------------------

interface State {
  executionId: string;
  phase: string | null;
  message: string;
  progress: string;
  counts: Record<string, number>;
  suspended: boolean;
  shutdown: string | null;
}

async function executionPage(namespace: string, name: string, openJob: string | null): Promise<void> {
  const started = performance.now();
  const header = h("div", { class: "header" });
  const actions = h("div", { class: "actions" });
  const canvas = h("div", { class: "canvas" });
  const side = h("aside", { class: "side", hidden: true });
  const tabs = h("div", { class: "tabs" });
  const main = h("div", { class: "main" }, tabs, canvas);
  app.replaceChildren(header, actions, h("div", { class: "split" }, main, side));
  let state: State;
  let graph: Graph;
  let view: GraphView;
  let groups: Group[] = [];
  let groupOf: Int32Array = new Int32Array();
  const index = new Map<string, number>();

  // The header's counts follow the graph's phases (the status object is
  // published less often than jobs change).
  let headerQueued = false;
  const countFromGraph = (): void => {
    if (headerQueued) return;
    headerQueued = true;
    requestAnimationFrame(() => {
      headerQueued = false;
      const counts: Record<string, number> = { total: graph.phases.length };
      let ended = 0;
      for (const phase of graph.phases) {
        const key = phase.toLowerCase();
        counts[key] = (counts[key] ?? 0) + 1;
        if (["Succeeded", "Cached", "Failed", "Skipped", "Cancelled"].includes(phase)) ended++;
      }
      state = { ...state, counts, progress: `${ended}/${graph.phases.length}` };
      drawHeader();
    });
  };
  const drawHeader = (): void => {
    const counts = Object.entries(state.counts)
      .filter(([k, v]) => v && k !== "total")
      .map(([k, v]) => `${v} ${k}`)
      .join(", ");
    header.replaceChildren(...present(
      h("h1", {}, name, " ", phaseBadge(state.phase)),
      h("p", { class: "progress", id: "progress" }, `${state.progress || "0/" + (state.counts["total"] ?? 0)} jobs ended · ${counts}`),
      state.message ? h("p", { class: "message", id: "message" }, state.message) : null,
    ));
  };
  const act = (label: string, method: string, path: string, body?: unknown, confirmText?: string): HTMLButtonElement => {
    const run = async (): Promise<void> => {
      if (confirmText && !confirm(confirmText)) return;
      try {
        const answer = await call<{ phase?: string | null; executionId?: string } | undefined>(method, path, { namespace }, body);
        const created = answer?.executionId && answer.executionId !== name ? answer.executionId : null;
        const phase = answer && "phase" in answer ? `the execution is ${answer.phase ?? "Pending"}` : "done";
        say(`${label}: ${phase}${created ? ` (new execution ${created})` : ""}`);
        if (method === "DELETE") location.hash = "#/";
        else if (created) location.hash = `#/x/${namespace}/${created}`;
      } catch (error) {
        fail(error);
      }
    };
    return h("button", { "data-action": label, onclick: () => void run() }, label);
  };
  actions.replaceChildren(
    act("Suspend", "POST", `/execute/${name}/suspend`),
    act("Resume", "POST", `/execute/${name}/resume`),
    act("Stop", "POST", `/execute/${name}/cancel`, { mode: "Stop" }, "Stop: start nothing new, let running jobs finish?"),
    act("Terminate", "POST", `/execute/${name}/cancel`, { mode: "Terminate" }, "Terminate: delete running pods now?"),
    act("Retry failed", "POST", `/execute/${name}/retry`),
    act("Resubmit", "POST", `/execute/${name}/resubmit`),
    act("Delete", "DELETE", `/execute/${name}`, undefined, `Delete ${name} and its pods?`),
  );

  // One request: the graph carries the execution's state too.
  const loadGraph = async (): Promise<State> => {
    const fetched = await get<Graph & { state: State }>(`/execute/${name}/graph`, { namespace });
    graph = fetched;
    index.clear();
    graph.names.forEach((n, i) => index.set(n, i));
    ({ groups, groupOf } = group(graph));
    view = new GraphView(graph, groups, (g) => (g.members.length === 1 ? showJob(graph.names[g.members[0]!]!) : showGroup(g)));
    showTab(current);
    return fetched.state;
  };
  const tabNames = ["Graph", "Timeline"];
  let current = "Graph";
  const showTab = (tab: string): void => {
    current = tab;
    tabs.replaceChildren(...tabNames.map((t) => h("button", { class: t === tab ? "tab active" : "tab", onclick: () => showTab(t) }, t)));
    if (tab === "Graph") canvas.replaceChildren(view.root);
    else void timeline(canvas, namespace, name).catch(fail);
  };

  const showGroup = (g: Group): void => {
    // A virtual list: only the rows in view exist, whatever the group's size.
    const rowHeight = 26;
    const list = h("div", { class: "vlist", style: `height:${Math.min(g.members.length * rowHeight, 560)}px` });
    const spacer = h("div", { style: `height:${g.members.length * rowHeight}px;position:relative` });
    list.append(spacer);
    const draw = (): void => {
      const first = Math.floor(list.scrollTop / rowHeight);
      const last = Math.min(g.members.length, first + Math.ceil(list.clientHeight / rowHeight) + 2);
      spacer.replaceChildren();
      for (let i = first; i < last; i++) {
        const m = g.members[i]!;
        spacer.append(
          h("div", { class: "vrow", style: `top:${i * rowHeight}px`, "data-job": graph.names[m], onclick: () => showJob(graph.names[m]!) }, phaseBadge(graph.phases[m]), " ", graph.names[m]),
        );
      }
    };
    list.addEventListener("scroll", draw);
    side.hidden = false;
    side.replaceChildren(h("h2", {}, `${g.label} ×${g.members.length}`), list);
    requestAnimationFrame(draw);
    redrawGroupList = draw;
  };
  let redrawGroupList: (() => void) | null = null;
  let closeJob: (() => void) | null = null;
  const showJob = (job: string): void => {
    closeJob?.();
    redrawGroupList = null;
    side.hidden = false;
    closeJob = jobPanel(side, namespace, name, job);
  };
  teardown.push(() => closeJob?.());

  try {
    state = await loadGraph();
    drawHeader();
  } catch (error) {
    fail(error);
    return;
  }
  // Interactive: the graph is drawn and clickable (the browser test reads it).
  document.body.dataset["interactiveMs"] = String(Math.round(performance.now() - started));
  if (openJob) showJob(openJob);

  const stream = live({ namespace, execution: name }, (event, data) => {
    if (event === "error") fail(data);
    else if (event === "resync")
      void loadGraph().then((fresh) => {
        state = fresh;
        drawHeader();
      }, fail);
    else if (event === "jobs") {
      const touched = new Set<number>();
      for (const [job, [phase, attempt]] of Object.entries(data as Record<string, [string, number]>)) {
        const i = index.get(job);
        if (i === undefined) continue;
        graph.phases[i] = phase;
        graph.attempts[i] = attempt;
        touched.add(groupOf[i]!);
      }
      for (const g of touched) view.paint(groups[g]!);
      redrawGroupList?.();
      countFromGraph();
      document.body.dataset["lastUpdate"] = String(Date.now());
    } else if (event === "execution") {
      const s = data as Summary & { type: string };
      if (s.executionId !== name) return;
      if (s.type === "DELETED") {
        say(`${name} was deleted`);
        return;
      }
      state = { ...state, phase: s.phase, message: s.message, progress: s.progress };
      void get<State>(`/execute/${name}`, { namespace }).then((fresh) => {
        state = fresh;
        drawHeader();
      }, fail);
    }
  });
  teardown.push(() => stream.close());
}

// --- a job -------------------------------------------------------------------------

interface Attempt {
  attempt: number;
  outcome: string;
  pod: string | null;
  node: string | null;
  pool: string | null;
  startedAt: number | null;
  finishedAt: number | null;
  exitCode: number | null;
  message: string;
}

interface JobView {
  name: string;
  phase: string;
  attempt: number;
  failures: number;
  infraFailures: number;
  retries: number;
  infraRetries: number;
  pool: string | null;
  node: string | null;
  startedAt: string | null;
  finishedAt: string | null;
  exitCode: number | null;
  message: string;
  progress: unknown;
  checkpointStep: number | null;
  checkpointPath: string | null;
  outputs: Record<string, unknown> | null;
  attempts: Attempt[];
  image: string;
  command: string[] | null;
  args: string[] | null;
  config: unknown;
  when: string | null;
  item: unknown;
}

const epoch = (s: number | null): string => (s ? new Date(s * 1000).toLocaleTimeString() : "");

function jobPanel(side: HTMLElement, namespace: string, execution: string, job: string): () => void {
  const controller = new AbortController();
  const logView = h("pre", { class: "log", id: "log" });
  const logNote = h("p", { class: "note", id: "log-source" });
  const render = async (): Promise<void> => {
    const j = await get<JobView>(`/execute/${execution}/jobs/${job}`, { namespace });
    const events = await get<Array<{ type: string; reason: string; message: string; at: string | null }>>(`/execute/${execution}/events`, { namespace, job }).catch(() => []);
    const select = h("select", { id: "attempt" }, ...Array.from({ length: j.attempt }, (_, i) => h("option", { value: i + 1, selected: i + 1 === j.attempt }, `attempt ${i + 1}`)));
    const showLog = (attempt: number): void => {
      logView.textContent = "";
      const running = attempt === j.attempt && ["Running", "Starting"].includes(j.phase);
      readText(`/execute/${execution}/jobs/${job}/logs`, { namespace, attempt, follow: running ? "true" : undefined }, (text, source) => {
        logNote.textContent = source ? `from ${source}${running ? ", following" : ""}` : "";
        logView.textContent += text;
        logView.scrollTop = logView.scrollHeight;
      }, controller.signal).catch((error: unknown) => {
        if (!controller.signal.aborted) logNote.textContent = error instanceof Error ? error.message : String(error);
      });
    };
    select.addEventListener("change", () => showLog(Number(select.value)));
    side.replaceChildren(...present(
      h("h2", { id: "job-name" }, job, " ", phaseBadge(j.phase)),
      j.message ? h("p", { class: "message", id: "job-message" }, j.message) : null,
      h("dl", {},
        h("dt", {}, "Attempts"), h("dd", {}, `${j.attempt} (failures ${j.failures}/${j.retries}, lost to the infrastructure ${j.infraFailures}/${j.infraRetries})`),
        h("dt", {}, "Where"), h("dd", {}, [j.pool, j.node].filter(Boolean).join(" / ")),
        h("dt", {}, "Time"), h("dd", {}, `${when(j.startedAt)} ${duration(j.startedAt, j.finishedAt)}`),
        j.progress ? h("dt", {}, "Progress") : null, j.progress ? h("dd", {}, JSON.stringify(j.progress)) : null,
        j.checkpointPath ? h("dt", {}, "Checkpoint") : null, j.checkpointPath ? h("dd", {}, `${j.checkpointPath} (step ${j.checkpointStep ?? "?"})`) : null,
        h("dt", {}, "Runs"), h("dd", {}, h("code", {}, [j.image, ...(j.command ?? []), ...(j.args ?? [])].join(" "))),
        j.when ? h("dt", {}, "When") : null, j.when ? h("dd", {}, h("code", {}, j.when)) : null,
        j.outputs ? h("dt", {}, "Outputs") : null, j.outputs ? h("dd", {}, h("code", {}, JSON.stringify(j.outputs))) : null,
        j.config ? h("dt", {}, "Config") : null, j.config ? h("dd", {}, h("pre", {}, JSON.stringify(j.config, null, 2))) : null,
      ),
      h("table", { class: "attempts" },
        h("thead", {}, h("tr", {}, ...["#", "Outcome", "Pod", "Node", "Pool", "Started", "Ended", "Exit", "Why"].map((t) => h("th", {}, t)))),
        h("tbody", {}, ...j.attempts.map((a) => h("tr", {}, h("td", {}, a.attempt), h("td", {}, a.outcome.replace("_", " ")), h("td", {}, a.pod ?? ""), h("td", {}, a.node ?? ""), h("td", {}, a.pool ?? ""), h("td", {}, epoch(a.startedAt)), h("td", {}, epoch(a.finishedAt)), h("td", {}, a.exitCode ?? ""), h("td", {}, a.message)))),
      ),
      events.length ? h("details", {}, h("summary", {}, `Events (${events.length})`), h("ul", { class: "events" }, ...events.map((e) => h("li", { class: e.type }, `${when(e.at)} ${e.reason}: ${e.message}`)))) : null,
      h("h3", {}, "Log ", j.attempt ? select : null),
      logNote,
      logView,
    ));
    if (j.attempt) showLog(j.attempt);
    else logNote.textContent = "not started yet";
  };
  render().catch(fail);
  return () => controller.abort();
}

// --- timeline ------------------------------------------------------------------------

async function timeline(canvas: HTMLElement, namespace: string, execution: string): Promise<void> {
  const page = await get<{ items: JobView[]; total: number }>(`/execute/${execution}/jobs`, { namespace, limit: 500 });
  const bars: Array<{ job: string; attempt: number; start: number; end: number; outcome: string }> = [];
  const now = Date.now() / 1000;
  for (const j of page.items) {
    for (const a of j.attempts) {
      if (a.startedAt) bars.push({ job: j.name, attempt: a.attempt, start: a.startedAt, end: a.finishedAt ?? now, outcome: a.outcome });
    }
    if (j.startedAt && ["Running", "Starting", "Succeeded"].includes(j.phase) && !j.attempts.some((a) => a.attempt === j.attempt)) {
      const start = new Date(j.startedAt).getTime() / 1000;
      const end = j.finishedAt ? new Date(j.finishedAt).getTime() / 1000 : now;
      bars.push({ job: j.name, attempt: j.attempt, start, end, outcome: j.phase === "Succeeded" ? "succeeded" : "running" });
    }
  }
  if (!bars.length) {
    canvas.replaceChildren(h("p", {}, "No attempt has run yet."));
    return;
  }
  const first = Math.min(...bars.map((b) => b.start));
  const last = Math.max(...bars.map((b) => b.end));
  const width = 900;
  const scale = (t: number) => 160 + ((t - first) / Math.max(last - first, 1)) * (width - 170);
  const jobs = [...new Set(bars.map((b) => b.job))];
  const row = new Map(jobs.map((j, i) => [j, i]));
  const colors: Record<string, string> = { succeeded: PHASE_COLORS["Succeeded"]!, running: PHASE_COLORS["Running"]!, cancelled: PHASE_COLORS["Cancelled"]!, infrastructure_failure: "#9b51e0" };
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("width", String(width));
  svg.setAttribute("height", String(jobs.length * 18 + 24));
  svg.setAttribute("class", "timeline");
  for (const [job, i] of row) {
    const label = document.createElementNS(ns, "text");
    label.setAttribute("x", "4");
    label.setAttribute("y", String(i * 18 + 14));
    label.textContent = job;
    svg.append(label);
  }
  for (const b of bars) {
    const rect = document.createElementNS(ns, "rect");
    rect.setAttribute("x", String(scale(b.start)));
    rect.setAttribute("y", String(row.get(b.job)! * 18 + 3));
    rect.setAttribute("width", String(Math.max(scale(b.end) - scale(b.start), 2)));
    rect.setAttribute("height", "12");
    rect.setAttribute("fill", colors[b.outcome] ?? PHASE_COLORS["Failed"]!);
    const title = document.createElementNS(ns, "title");
    title.textContent = `${b.job} attempt ${b.attempt}: ${b.outcome}, ${Math.round(b.end - b.start)}s`;
    rect.append(title);
    svg.append(rect);
  }
  canvas.replaceChildren(
    h("p", { class: "note" }, `${page.items.length < page.total ? `the first ${page.items.length} of ${page.total} jobs; ` : ""}${Math.round(last - first)}s from the first start to the last end`),
    svg,
  );
}

// --- pools and the queue -------------------------------------------------------------------

interface Pool {
  name: string;
  capabilities: string[];
  nodes: number;
  readyNodes: number;
  slots: number;
  slotsUsed: number;
  queued: number;
  queuedByPriority: Record<string, number>;
  desiredNodes: number | null;
  autoscaling: { min: number; max: number } | null;
  scaleReason: string;
  members: Array<{ name: string; ready: boolean; slotsUsed: number; draining: boolean }>;
  healthy: boolean;
  problems: string[];
}

interface Worker {
  workerId: string;
  source: string;
  hostname: string;
  capabilities: string[];
  currentLoad: number;
  maxConcurrency: number;
  healthy: boolean;
  lastHeartbeat: number | null;
  pool: string | null;
}

async function poolsPage(): Promise<void> {
  const root = h("div", {});
  app.replaceChildren(h("h1", {}, "Pools and queue"), root);
  const draw = async (): Promise<void> => {
    const [pools, workers] = await Promise.all([
      get<{ paused: boolean; pools: Pool[] }>("/pools"),
      get<Worker[]>("/workers"),
    ]);
    const toggle = h("button", {
      id: "pause",
      "data-paused": String(pools.paused),
      onclick: () =>
        void call("POST", pools.paused ? "/queue/resume" : "/queue/pause").then(draw).catch(fail),
    }, pools.paused ? "Resume the queue" : "Pause the queue");
    root.replaceChildren(
      h("p", { id: "queue-state", class: pools.paused ? "paused" : "" }, pools.paused ? "The queue is paused: no new job starts anywhere; running jobs finish. " : "The queue is running. ", toggle),
      h("table", { class: "pools" },
        h("thead", {}, h("tr", {}, ...["Pool", "Capabilities", "Nodes", "Slots", "Queued by priority", "Autoscaling", "Health"].map((t) => h("th", {}, t)))),
        h("tbody", {}, ...pools.pools.map((p) =>
          h("tr", { "data-pool": p.name },
            h("td", {}, p.name),
            h("td", {}, p.capabilities.join(", ")),
            h("td", {}, `${p.readyNodes}/${p.nodes} ready`, h("div", { class: "note" }, p.members.map((m) => `${m.name}${m.ready ? "" : " (not ready)"}${m.draining ? " (draining)" : ""}: ${m.slotsUsed}`).join(", "))),
            h("td", {}, h("meter", { min: 0, max: Math.max(p.slots, 1), value: p.slotsUsed }), ` ${p.slotsUsed}/${p.slots}`),
            h("td", {}, p.queued ? Object.entries(p.queuedByPriority).sort((a, b) => Number(b[0]) - Number(a[0])).map(([k, v]) => `p${k}: ${v}`).join(", ") : "none"),
            h("td", {}, p.autoscaling ? `${p.autoscaling.min}..${p.autoscaling.max}, target ${p.desiredNodes ?? "?"} ${p.scaleReason}` : "off"),
            h("td", {}, p.healthy ? "healthy" : p.problems.join("; ")),
          ))),
      ),
      h("h2", {}, "Workers"),
      h("table", { class: "workers" },
        h("thead", {}, h("tr", {}, ...["Worker", "Source", "Pool", "Capabilities", "Load", "Health", "Last heartbeat"].map((t) => h("th", {}, t)))),
        h("tbody", {}, ...workers.map((w) =>
          h("tr", {},
            h("td", {}, w.workerId),
            h("td", {}, w.source),
            h("td", {}, w.pool ?? ""),
            h("td", {}, w.capabilities.join(", ")),
            h("td", {}, `${w.currentLoad}/${w.maxConcurrency}`),
            h("td", {}, w.healthy ? "healthy" : "unhealthy"),
            h("td", {}, w.lastHeartbeat ? new Date(w.lastHeartbeat * 1000).toLocaleTimeString() : ""),
          ))),
      ),
    );
  };
  try {
    await draw();
  } catch (error) {
    fail(error);
    return;
  }
  const timer = setInterval(() => void draw().catch(fail), 3000);
  teardown.push(() => clearInterval(timer));
}

document.getElementById("signout")?.addEventListener("click", () => {
  session.clear();
  location.hash = "#/login";
});
window.addEventListener("hashchange", navigate);
navigate();
