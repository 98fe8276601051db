// The DAG as a picture a person can read at 10,000 jobs: jobs are grouped
// (a sweep's members together; in a layer wider than MAX_IN_LAYER, jobs by
// name prefix), groups are laid out in layers left to right (longest path
// from the roots; within a layer ordered by the mean position of their
// parents), and drawn as SVG. A group shows how many of its jobs are in
// each phase and opens as a list. The layout is a few dozen lines because
// grouping keeps the drawn graph small; a general layout library would
// spend seconds on 10,000 nodes that nobody could read anyway.

export interface Graph {
  names: string[];
  deps: number[][];
  phases: string[];
  attempts: number[];
  sweeps: Record<string, number[]>;
  finallyJobs: number[];
}

export interface Group {
  id: number;
  label: string;
  members: number[];
  layer: number;
  order: number;
  parents: Set<number>;
}

export const MAX_IN_LAYER = 24;
export const NODE_W = 180;
export const NODE_H = 46;
const GAP_X = 70;
const GAP_Y = 16;

export const PHASE_COLORS: Record<string, string> = {
  Waiting: "#c9ced6",
  Ready: "#9fb3c8",
  Starting: "#7fb2e5",
  Running: "#2f80ed",
  Backoff: "#b07cd8",
  Succeeded: "#27ae60",
  Cached: "#6fcf97",
  Failed: "#eb5757",
  Skipped: "#f2c94c",
  Cancelled: "#f2994a",
};
const PHASE_ORDER = Object.keys(PHASE_COLORS);

function prefix(name: string): string {
  const match = /^(.*?)[-_.]?\d+$/.exec(name);
  if (match && match[1]) return match[1];
  const dash = name.indexOf("-");
  return dash > 0 ? name.slice(0, dash) : name;
}

/** Layers of jobs: the longest path from a root (names are in topological order). */
function layers(graph: Graph): number[] {
  const layer = new Array<number>(graph.names.length).fill(0);
  for (let i = 0; i < graph.names.length; i++) {
    for (const d of graph.deps[i]!) layer[i] = Math.max(layer[i]!, layer[d]! + 1);
  }
  return layer;
}

// More groups than this (a long chain, say) are grouped again, coarser.
export const MAX_GROUPS = 300;

export function group(graph: Graph): { groups: Group[]; groupOf: Int32Array } {
  const layered = groupBy(graph, "layer");
  if (layered.groups.length <= MAX_GROUPS) return layered;
  const prefixed = groupBy(graph, "prefix");
  return prefixed.groups.length <= MAX_GROUPS ? prefixed : groupBy(graph, "range");
}

function groupBy(graph: Graph, how: "layer" | "prefix" | "range"): { groups: Group[]; groupOf: Int32Array } {
  const n = graph.names.length;
  const layer = layers(graph);
  const groupOf = new Int32Array(n).fill(-1);
  const groups: Group[] = [];
  const add = (label: string, members: number[]): void => {
    const id = groups.length;
    let top = 0;
    for (const m of members) {
      groupOf[m] = id;
      top = Math.max(top, layer[m]!);
    }
    groups.push({ id, label, members, layer: top, order: 0, parents: new Set() });
  };
  if (how === "range") {
    // Runs of jobs in topological order, as many as fit.
    const size = Math.ceil(n / MAX_GROUPS);
    for (let start = 0; start < n; start += size) {
      const members = Array.from({ length: Math.min(size, n - start) }, (_, i) => start + i);
      add(`${graph.names[start]} .. ${graph.names[start + members.length - 1]}`, members);
    }
    return finish(graph, groups, groupOf);
  }
  for (const [name, members] of Object.entries(graph.sweeps)) add(name, members);
  if (how === "prefix") {
    const byPrefix = new Map<string, number[]>();
    for (let i = 0; i < n; i++) {
      if (groupOf[i] !== -1) continue;
      const key = prefix(graph.names[i]!);
      const list = byPrefix.get(key) ?? [];
      list.push(i);
      byPrefix.set(key, list);
    }
    for (const [key, list] of byPrefix) add(list.length === 1 ? graph.names[list[0]!]! : key, list);
    return finish(graph, groups, groupOf);
  }
  const byLayer = new Map<number, number[]>();
  for (let i = 0; i < n; i++) {
    if (groupOf[i] !== -1) continue;
    const list = byLayer.get(layer[i]!) ?? [];
    list.push(i);
    byLayer.set(layer[i]!, list);
  }
  for (const [, members] of [...byLayer.entries()].sort((a, b) => a[0] - b[0])) {
    if (members.length <= MAX_IN_LAYER) {
      for (const m of members) add(graph.names[m]!, [m]);
      continue;
    }
    const byPrefix = new Map<string, number[]>();
    for (const m of members) {
      const key = prefix(graph.names[m]!);
      const list = byPrefix.get(key) ?? [];
      list.push(m);
      byPrefix.set(key, list);
    }
    if (byPrefix.size > MAX_IN_LAYER) {
      add(`layer ${layer[members[0]!]! + 1}`, members);
    } else {
      for (const [key, list] of byPrefix) {
        if (list.length === 1) add(graph.names[list[0]!]!, list);
        else add(key, list);
      }
    }
  }
  return finish(graph, groups, groupOf);
}

/** Edges between groups, then layers and the order within each layer. */
function finish(graph: Graph, groups: Group[], groupOf: Int32Array): { groups: Group[]; groupOf: Int32Array } {
  for (let i = 0; i < graph.names.length; i++) {
    const mine = groupOf[i]!;
    for (const d of graph.deps[i]!) {
      const theirs = groupOf[d]!;
      if (theirs !== mine) groups[mine]!.parents.add(theirs);
    }
  }
  // Groups to layers again (a group sits right of all its parents), then
  // order each layer by the mean position of the parents.
  const sorted = [...groups].sort((a, b) => a.layer - b.layer || a.id - b.id);
  for (const g of sorted) {
    for (const p of g.parents) g.layer = Math.max(g.layer, groups[p]!.layer + 1);
  }
  const columns = new Map<number, Group[]>();
  for (const g of [...groups].sort((a, b) => a.layer - b.layer || a.id - b.id)) {
    const column = columns.get(g.layer) ?? [];
    const parents = [...g.parents];
    const mean = parents.length
      ? parents.reduce((sum, p) => sum + groups[p]!.order, 0) / parents.length
      : column.length;
    (g as Group & { mean: number }).mean = mean;
    column.push(g);
    columns.set(g.layer, column);
    column.sort((a, b) => (a as Group & { mean: number }).mean - (b as Group & { mean: number }).mean);
    column.forEach((member, i) => (member.order = i));
  }
  return { groups, groupOf };
}

export function counts(graph: Graph, members: number[]): Map<string, number> {
  const found = new Map<string, number>();
  for (const m of members) found.set(graph.phases[m]!, (found.get(graph.phases[m]!) ?? 0) + 1);
  return found;
}

const SVG = "http://www.w3.org/2000/svg";

function svg<K extends keyof SVGElementTagNameMap>(
  tag: K,
  attrs: Record<string, string | number>,
): SVGElementTagNameMap[K] {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}

export class GraphView {
  readonly root: SVGSVGElement;
  private bars = new Map<number, SVGGElement>();
  private labels = new Map<number, SVGTextElement>();

  constructor(
    private graph: Graph,
    groups: Group[],
    private onPick: (group: Group) => void,
  ) {
    const maxLayer = Math.max(0, ...groups.map((g) => g.layer));
    const tallest = Math.max(1, ...groups.map((g) => g.order + 1));
    const width = (maxLayer + 1) * (NODE_W + GAP_X) + GAP_X;
    const height = tallest * (NODE_H + GAP_Y) + GAP_Y;
    this.root = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, class: "dag" });
    const x = (g: Group) => GAP_X / 2 + g.layer * (NODE_W + GAP_X);
    const y = (g: Group) => GAP_Y + g.order * (NODE_H + GAP_Y);
    const edges = svg("g", { class: "edges" });
    for (const g of groups) {
      for (const p of g.parents) {
        const from = groups[p]!;
        const x1 = x(from) + NODE_W;
        const y1 = y(from) + NODE_H / 2;
        const x2 = x(g);
        const y2 = y(g) + NODE_H / 2;
        const mid = (x1 + x2) / 2;
        edges.append(svg("path", { d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}` }));
      }
    }
    this.root.append(edges);
    for (const g of groups) {
      const node = svg("g", {
        class: "node",
        transform: `translate(${x(g)},${y(g)})`,
        "data-group": g.label,
      });
      node.append(svg("rect", { class: "frame", width: NODE_W, height: NODE_H, rx: 6 }));
      const label = svg("text", { x: 8, y: 17 });
      node.append(label);
      this.labels.set(g.id, label);
      const bar = svg("g", { transform: `translate(8,26)` });
      node.append(bar);
      this.bars.set(g.id, bar);
      node.addEventListener("click", () => this.onPick(g));
      this.root.append(node);
      this.paint(g);
    }
  }

  /** Redraw a group's label and phase bar from the graph's phases. */
  paint(g: Group): void {
    const found = counts(this.graph, g.members);
    const label = this.labels.get(g.id)!;
    const single = g.members.length === 1;
    label.textContent = single
      ? `${g.label}  ${this.graph.phases[g.members[0]!]}`
      : `${g.label} ×${g.members.length}`;
    const bar = this.bars.get(g.id)!;
    bar.replaceChildren();
    const width = NODE_W - 16;
    let at = 0;
    for (const phase of PHASE_ORDER) {
      const n = found.get(phase) ?? 0;
      if (!n) continue;
      const w = (n / g.members.length) * width;
      const rect = svg("rect", { x: at, y: 0, width: Math.max(w, 1), height: 10, fill: PHASE_COLORS[phase]! });
      const title = svg("title", {});
      title.textContent = `${phase}: ${n}`;
      rect.append(title);
      bar.append(rect);
      at += w;
    }
  }
}
