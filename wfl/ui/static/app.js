// wfl ui: one page, three views (runs, one run, schedules), each at its own URL.
// Data arrives as snapshots pushed by the server over Server-Sent Events; the page never polls.
// Everything user-provided (args, errors, names) is put in the DOM as text, never as HTML.
"use strict";

const CONFIG = JSON.parse(document.body.dataset.config || "{}");
const STATES = ["in_progress", "completed", "failed", "canceled"];
const STATE_LABEL = {
  in_progress: "in progress", completed: "completed", failed: "failed", canceled: "canceled",
  done: "done", running: "running", scheduled: "scheduled",
};
const main = document.getElementById("main");
let stream = null;      // the EventSource of the current view
let render = null;      // draws the current view from a snapshot
let current = null;     // the last snapshot drawn

// -- tiny DOM helpers ------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

// Reuse a node while its key is unchanged: a live page redraws often, and a node that is
// replaced under the pointer loses the click a person was making.
function keep(memo, name, key, build) {
  const old = memo.get(name);
  if (old && old.key === key) return old.node;
  const node = build();
  memo.set(name, { key, node });
  return node;
}

// Make `container`'s children exactly `nodes`, touching only those that differ.
function patch(container, nodes) {
  nodes = nodes.filter(Boolean);
  const wanted = new Set(nodes);
  for (const child of [...container.childNodes]) if (!wanted.has(child)) child.remove();
  nodes.forEach((node, i) => { // what stays is in order already: only new nodes move in
    const at = container.childNodes[i];
    if (at !== node) container.insertBefore(node, at || null);
  });
  while (container.childNodes.length > nodes.length) container.lastChild.remove();
}

function link(href, ...children) {
  return h("a", { href, "data-link": true }, ...children);
}

function badge(state) {
  return h("span", { class: `badge s-${state}`, title: state }, h("i"), STATE_LABEL[state] || state);
}

function json(value) {
  return JSON.stringify(value, null, 2);
}

function short(value, limit = 60) {
  const text = typeof value === "string" ? value : JSON.stringify(value);
  return text.length <= limit ? text : text.slice(0, limit - 1) + "…";
}

// -- time ------------------------------------------------------------------------------------

function ts(iso) { return iso ? Date.parse(iso) : null; }

function span(ms) {
  const s = Math.abs(ms) / 1000;
  if (s >= 86400) return `${(s / 86400).toFixed(s >= 864000 ? 0 : 1)}d`;
  if (s >= 3600) return `${(s / 3600).toFixed(s >= 36000 ? 0 : 1)}h`;
  if (s >= 60) return `${Math.floor(s / 60)}m ${Math.floor(s % 60)}s`;
  if (s >= 10) return `${s.toFixed(0)}s`;
  if (s >= 1) return `${s.toFixed(1)}s`;
  return `${Math.round(s * 1000)}ms`;
}

function relative(iso, mode) {
  const t = ts(iso);
  if (t === null) return "–";
  const d = t - Date.now();
  if (mode === "until") return d <= 0 ? "now" : `in ${span(d)}`;
  if (mode === "for") return span(d);
  return -d < 1000 ? "just now" : `${span(d)} ago`;
}

function absolute(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" });
}

// A time shown relative to now, kept fresh by one local timer (no server traffic).
function when(iso, mode = "ago") {
  return h("time", { datetime: iso || "", title: absolute(iso), dataset: { rel: mode } },
    relative(iso, mode));
}

setInterval(() => {
  for (const el of main.querySelectorAll("time[data-rel]")) {
    el.textContent = relative(el.getAttribute("datetime"), el.dataset.rel);
  }
}, 1000);

// -- live stream -----------------------------------------------------------------------------

function setLive(state, text) {
  const live = document.getElementById("live");
  live.dataset.state = state;
  live.lastElementChild.textContent = text;
}

function listen(params, draw) {
  if (stream) stream.close();
  render = draw;
  current = null;
  const source = new EventSource("/api/stream?" + new URLSearchParams(params));
  stream = source;
  source.onopen = () => setLive("live", "live");
  source.onerror = () => { if (stream === source) setLive("down", "reconnecting…"); };
  // Draw at most once a frame, and only the newest snapshot: a page that falls behind (a
  // busy machine, a run writing many records a second) skips the ones already outdated.
  let pending = null;
  source.onmessage = (event) => {
    if (stream !== source) return;
    const first = pending === null;
    pending = event.data;
    if (!first) return;
    requestAnimationFrame(() => {
      if (stream !== source || pending === null) return;
      current = JSON.parse(pending);
      pending = null;
      setLive("live", "live");
      draw(current);
    });
  };
}

// -- routing ---------------------------------------------------------------------------------

function route() {
  const path = location.pathname;
  for (const a of document.querySelectorAll(".tabs a")) {
    a.classList.toggle("active", a.dataset.tab === (path.startsWith("/schedules") ? "schedules" : "runs"));
  }
  const m = path.match(/^\/runs\/([0-9a-z]+)$/);
  if (m) return runPage(m[1]);
  if (path === "/schedules") return schedulesPage();
  return runsPage();
}

function go(url, replace = false) {
  if (replace) history.replaceState(null, "", url);
  else history.pushState(null, "", url);
  route();
}

document.addEventListener("click", (event) => {
  const a = event.target.closest("a[data-link]");
  if (!a || event.metaKey || event.ctrlKey || event.shiftKey || event.button !== 0) return;
  event.preventDefault();
  go(a.getAttribute("href"));
});
window.addEventListener("popstate", route);

// -- runs table ------------------------------------------------------------------------------

function runsPage() {
  const q = new URLSearchParams(location.search);
  const filters = {
    state: q.get("state") || "", workflow: q.get("workflow") || "",
    q: q.get("q") || "", page: q.get("page") || "1",
  };
  document.title = "Runs · wfl";
  const setFilter = (changes) => {
    Object.assign(filters, changes);
    if (!("page" in changes)) filters.page = "1";
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(filters)) if (v && !(k === "page" && v === "1")) params.set(k, v);
    const url = "/" + (params.toString() ? "?" + params : "");
    history.replaceState(null, "", url);
    drawn = false; // a new filter is a new list: nothing to flash
    listen({ view: "runs", ...filters }, draw);
  };

  const chips = h("div", { class: "chips", role: "tablist" });
  const workflowSelect = h("select", { "aria-label": "workflow", onchange: (e) => setFilter({ workflow: e.target.value }) });
  let typing = null;
  const search = h("input", {
    type: "search", placeholder: "Run id prefix", value: filters.q, "aria-label": "run id prefix",
    spellcheck: "false", autocomplete: "off",
    oninput: (e) => { clearTimeout(typing); typing = setTimeout(() => setFilter({ q: e.target.value.trim().toLowerCase() }), 200); },
  });
  const tbody = h("tbody");
  const footer = h("div", { class: "pager" });
  const summary = h("span", { class: "muted" });
  main.replaceChildren(
    h("section", { class: "toolbar" }, chips, h("div", { class: "filters" }, workflowSelect, search)),
    h("section", { class: "card table-card" },
      h("table", { class: "runs" },
        h("thead", {}, h("tr", {}, ["Run", "Workflow", "State", "Progress", "Current step", "Next wake", "Created", "Updated"].map((c) => h("th", { text: c })))),
        tbody),
      footer),
  );

  const seen = new Map(); // id -> the row last drawn and its data: reused, or redrawn and flashed
  let drawn = false;
  let chipsKey = "";
  let namesKey = "";
  function draw(data) {
    const key = JSON.stringify([data.counts, filters.state]);
    if (key !== chipsKey) {  // rebuilt only when they change: a click is never lost
      chipsKey = key;
      chips.replaceChildren(...chipButtons(data.counts));
    }
    const names = data.workflows;
    if (filters.workflow && !names.includes(filters.workflow)) names.push(filters.workflow);
    if (JSON.stringify(names) !== namesKey) {
      namesKey = JSON.stringify(names);
      workflowSelect.replaceChildren(h("option", { value: "", text: "All workflows" }),
        ...names.map((n) => h("option", { value: n, text: n, selected: n === filters.workflow })));
    }
    const rows = data.runs.map((r) => {
      const key = JSON.stringify(r);
      const kept = seen.get(r.id);
      if (kept && kept.key === key) return kept.node;
      const node = runRow(r, drawn); // flash what changed or arrived since the first draw
      seen.set(r.id, { key, node });
      return node;
    });
    drawn = true;
    if (rows.length) {
      patch(tbody, rows);
    } else {
      const empty = data.all === 0
        ? h("div", { class: "empty" }, h("strong", { text: "No runs yet." }), " Start one and it appears here at once: ", h("code", { text: "wfl start flow.py" }))
        : h("div", { class: "empty" }, h("strong", { text: "No run matches these filters." }));
      tbody.replaceChildren(h("tr", {}, h("td", { colspan: 8 }, empty)));
    }
    drawFooter(data);
  }

  function chipButtons(counts) {
    const all = Object.values(counts).reduce((a, b) => a + b, 0);
    return [["", "All", all], ...STATES.map((s) => [s, STATE_LABEL[s], counts[s] || 0])].map(([value, label, n]) =>
      h("button", {
        class: `chip ${value ? "s-" + value : ""} ${filters.state === value ? "on" : ""}`, role: "tab",
        "aria-selected": filters.state === value ? "true" : "false", dataset: { state: value },
        onclick: () => setFilter({ state: value }),
      }, value ? h("i") : null, label, h("b", { text: n.toLocaleString() })));
  }

  function drawFooter(data) {
    const all = data.all;
    const first = data.total ? (data.page - 1) * data.per_page + 1 : 0;
    const last = Math.min(data.total, data.page * data.per_page);
    summary.textContent = `${first.toLocaleString()}–${last.toLocaleString()} of ${data.total.toLocaleString()} run${data.total === 1 ? "" : "s"}` + (data.total !== all ? ` (${all.toLocaleString()} in the store)` : "");
    const key = `${data.page} ${data.pages}`;
    if (footer.dataset.key === key) return;
    footer.dataset.key = key;
    footer.replaceChildren(summary, h("span", { class: "spacer" }),
      h("button", { class: "btn", disabled: data.page <= 1, onclick: () => setFilter({ page: String(data.page - 1) }) }, "← Newer"),
      h("span", { class: "muted", text: `page ${data.page} of ${data.pages}` }),
      h("button", { class: "btn", disabled: data.page >= data.pages, onclick: () => setFilter({ page: String(data.page + 1) }) }, "Older →"));
  }
  listen({ view: "runs", ...filters }, draw);
}

function runRow(r, flash) {
  const pct = r.total ? Math.round((100 * r.done) / r.total) : (r.state === "completed" ? 100 : 0);
  return h("tr", { class: flash ? "flash" : "", dataset: { id: r.id, state: r.state } },
    h("td", { class: "id" }, link(`/runs/${r.id}`, r.id), r.parent ? h("span", { class: "tag", title: `child of ${r.parent}` }, "child") : null),
    h("td", { class: "wf", text: r.workflow || "?" }),
    h("td", {}, badge(r.state)),
    h("td", {}, h("div", { class: "progress" },
      h("span", { class: `meter s-${r.state}` }, h("span", { style: `width:${pct}%` })),
      h("span", { class: "num", text: `${r.done}/${r.total}` }))),
    h("td", { class: "current", title: r.error || [r.current, r.progress].filter(Boolean).join(" · ") }, r.error ? h("span", { class: "err", text: short(r.error, 70) }) : (r.current || (r.progress ? "" : h("span", { class: "muted", text: "–" }))), r.progress && !r.error ? h("span", { class: "progress-note", text: short(r.progress, 40) }) : null),
    h("td", { class: "time" }, r.state === "in_progress" && r.next_wake_at ? when(r.next_wake_at, "until") : h("span", { class: "muted", text: "–" })),
    h("td", { class: "time" }, when(r.created_at)),
    h("td", { class: "time" }, when(r.updated_at)));
}

// -- one run ---------------------------------------------------------------------------------

function runPage(runId) {
  document.title = `${runId} · wfl`;
  main.replaceChildren(h("p", { class: "muted", text: "loading…" }));
  const open = new Set(); // steps whose details are unfolded survive redraws
  const memo = new Map(); // sections that did not change keep their nodes (and clicks)
  let showJournal = true;
  listen({ view: "run", id: runId }, (run) => {
    if (run.missing) {
      main.replaceChildren(h("div", { class: "empty card" }, h("strong", { text: `Run ${runId} is gone.` }), " It was cleaned up. ", link("/", "All runs")));
      return;
    }
    document.title = `${run.workflow} ${run.id} · wfl`;
    const y = window.scrollY;
    // the journal scrolls on its own: keep its place, or its bottom when it was there
    const old = main.querySelector(".journal .scroll");
    const atBottom = !old || old.scrollTop + old.clientHeight >= old.scrollHeight - 4;
    const top = old ? old.scrollTop : 0;
    const { timeline, journal, events, why, ...head } = run;
    patch(main, [
      keep(memo, "crumbs", run.id, () => h("nav", { class: "crumbs" }, link("/", "Runs"), h("span", { text: "/" }), h("span", { class: "mono", text: run.id }))),
      keep(memo, "head", [run.id, run.state, run.workflow, run.restarts, run.created_at].join(" "), () => runHeader(run)),
      keep(memo, "why", run.state + why, () => h("div", { class: `why s-${run.state}` }, h("span", { class: "why-label", text: run.state === "in_progress" ? "Waiting for" : "Outcome" }), h("span", { text: whyText(why) }))),
      keep(memo, "grid", JSON.stringify(head), () => h("div", { class: "grid" }, overview(run), values(run))),
      stepsCard(run, open, memo),
      run.children.length ? keep(memo, "children", JSON.stringify(run.children), () => childrenCard(run)) : null,
      keep(memo, "events", JSON.stringify(events), () => eventsCard(run)),
      journalCard(run, () => showJournal, (v) => { showJournal = v; }, memo),
    ]);
    const box = main.querySelector(".journal .scroll");
    if (box) box.scrollTop = atBottom ? box.scrollHeight : top;
    window.scrollTo(0, y);
  });
}

function whyText(why) {
  // `wfl status --why` answers "what does it wait for?"; a finished run waits for nothing
  return (why || "").replace(/^nothing: it /, "It ");
}

function runHeader(run) {
  const actions = h("div", { class: "actions" });
  if (run.state === "in_progress") {
    actions.append(
      h("button", { class: "btn", onclick: () => sendEventDialog(current) }, "Send event…"),
      h("button", { class: "btn danger", onclick: () => cancelDialog(current) }, "Cancel run…"));
  } else {
    actions.append(h("button", { class: "btn", onclick: () => restartDialog(current) }, "Restart…"));
  }
  return h("header", { class: "run-head" },
    h("div", {},
      h("h1", {}, h("span", { text: run.workflow }), badge(run.state)),
      h("div", { class: "sub" }, h("span", { class: "mono", text: run.id }), " · started ", when(run.created_at), run.restarts ? ` · restarted ${run.restarts}×` : "")),
    actions);
}

function kv(rows) {
  return h("dl", { class: "kv" }, rows.filter(Boolean).map(([k, v]) => [h("dt", { text: k }), h("dd", {}, v)]));
}

function finished(run) { return run.state !== "in_progress"; }

function overview(run) {
  const pct = run.total ? Math.round((100 * run.done) / run.total) : 0;
  const chain = [];
  if (run.continued_from) chain.push(["Continued from", link(`/runs/${run.continued_from}`, run.continued_from)]);
  if (run.continued_as) chain.push(["Continued as", link(`/runs/${run.continued_as}`, run.continued_as)]);
  const progress = run.progress !== undefined && run.progress !== null
    ? ["Progress", h("code", { class: "inline", text: short(run.progress, 120) })] : null;
  return h("section", { class: "card" }, h("h2", { text: "Overview" }), kv([
    ["State", badge(run.state)],
    ["Steps", h("span", { class: "steps-meter" }, h("span", { class: `meter wide s-${run.state}` }, h("span", { style: `width:${pct}%` })), `${run.done} of ${run.total} done`)],
    progress,
    run.current ? ["Current step", run.current] : null,
    run.state === "in_progress" ? ["Next wake", run.next_wake_at ? h("span", {}, when(run.next_wake_at, "until"), h("span", { class: "muted", text: "  " + absolute(run.next_wake_at) })) : "when an event arrives"] : null,
    run.deadline ? ["Deadline", h("span", {}, when(run.deadline, "until"), h("span", { class: "muted", text: "  " + absolute(run.deadline) }))] : null,
    ["Duration", finished(run) ? span(ts(run.updated_at) - ts(run.created_at)) : h("span", {}, "running for ", h("time", { datetime: run.created_at, dataset: { rel: "for" } }, relative(run.created_at, "for")))],
    ["Created", h("span", {}, when(run.created_at), h("span", { class: "muted", text: "  " + absolute(run.created_at) }))],
    ["Updated", h("span", {}, when(run.updated_at), h("span", { class: "muted", text: "  " + absolute(run.updated_at) }))],
    run.parent ? ["Parent run", link(`/runs/${run.parent}`, run.parent)] : null,
    ...chain,
    run.key ? ["Key", h("code", { class: "inline", text: run.key })] : null,
    run.schedule ? ["Schedule", h("span", {}, link("/schedules", run.schedule), run.scheduled_at ? h("span", { class: "muted", text: `  slot ${absolute(run.scheduled_at)}` }) : null)] : null,
    run.on_complete ? ["on_complete", h("span", {}, h("code", { class: "inline", text: run.on_complete.function }), run.on_complete.error ? h("span", { class: "err", text: ` raised ${run.on_complete.error}` }) : (run.on_complete.ran ? " ran" : " pending"))] : null,
    ["Flow", h("span", { class: "mono small", text: run.flow || "?" }, run.flow_changed ? h("span", { class: "warn", text: " · changed since this run started" }) : null)],
    ["Version", String(run.version ?? 0)],
  ]));
}

function values(run) {
  const parts = [h("h2", { text: "Arguments" }), h("pre", { class: "code", text: json(run.args) })];
  if (run.state === "completed") parts.push(h("h2", { text: "Result" }), h("pre", { class: "code ok", text: json(run.result) }));
  if (run.error) parts.push(h("h2", { text: "Error" }), h("pre", { class: "code bad", text: run.error }));
  if (run.traceback) parts.push(h("details", { class: "tb" }, h("summary", { text: "Traceback" }), h("pre", { class: "code", text: run.traceback })));
  if (run.damage) parts.push(h("h2", { text: "Journal damage" }), h("pre", { class: "code bad", text: run.damage }));
  return h("section", { class: "card" }, ...parts);
}

// The steps as a timeline: one lane per step on a shared time axis, from the run's start to
// now (or its last update once finished). Hatched: waiting (timer, backoff); solid: attempts.
// Segments are placed in milliseconds since the start against the card's --span, so a lane
// whose step did not change keeps its nodes while the axis grows (a run of hundreds of
// steps redraws only what moved).
function stepsCard(run, open, memo) {
  const steps = run.timeline;
  const start = ts(run.created_at);
  const finished = run.state !== "in_progress";
  let end = finished ? ts(run.updated_at) : Date.now();
  for (const s of steps) for (const t of [s.run_at, s.finished_at]) if (t && ts(t) > end) end = ts(t);
  const total = Math.max(end - start, 1);
  let card = memo.get("steps-card");
  if (!card) {
    card = {
      head: h("span", { class: "muted" }),
      note: h("p", { class: "muted" }),
      lanes: h("div", { class: "timeline" }),
      axis: h("div", { class: "axis" }, h("span", { text: "0" }), h("span"), h("span")),
      empty: h("p", { class: "muted" }),
      lane: new Map(),
    };
    const legend = h("div", { class: "legend" },
      [["att done", "attempt"], ["att failed", "failed attempt"], ["att running", "running"], ["wait", "waiting"], ["wait backoff", "retry backoff"], ["wait event", "awaiting an event"]]
        .map(([cls, label]) => h("span", {}, h("i", { class: `seg ${cls}` }), label)));
    card.node = h("section", { class: "card" },
      h("div", { class: "card-head" }, h("h2", {}, "Steps ", card.head), legend), card.note, card.empty, card.lanes);
    memo.set("steps-card", card);
  }
  card.head.textContent = `${run.done}/${run.total}`;
  card.note.hidden = !(run.total > steps.length);
  card.note.textContent = `The first ${run.total - steps.length} steps are not shown: wfl status ${run.id}`;
  card.empty.hidden = steps.length > 0;
  card.empty.textContent = run.state === "in_progress" ? "No steps yet: a worker has not run this workflow's code so far." : "No steps.";
  card.lanes.style.setProperty("--span", String(total));
  card.axis.children[1].textContent = span(total / 2);
  card.axis.children[2].textContent = span(total) + (finished ? "" : " · now");
  const lanes = steps.map((s) => {
    const key = JSON.stringify(s) + finished;
    const kept = card.lane.get(s.step);
    if (kept && kept.key === key) return kept.node;
    const node = lane(s, start, finished, open);
    card.lane.set(s.step, { key, node });
    return node;
  });
  patch(card.lanes, steps.length ? [...lanes, card.axis] : []);
  return card.node;
}

// One step's lane. Offsets are ms since the run's start; an open end runs to the axis's end.
function lane(s, start, finished, open) {
  const segs = [];
  const seg = (cls, t0, t1, title) => {
    const style = t1 === null
      ? `--t0:${t0 - start}` : `--t0:${t0 - start};--t1:${t1 - start}`;
    segs.push(h("span", { class: `seg ${cls} ${t1 === null ? "open-end" : ""}`, style, title }));
  };
  const called = s.called_at ? ts(s.called_at) : start;
  const first = s.attempt_log.length && s.attempt_log[0].started_at ? ts(s.attempt_log[0].started_at) : null;
  const due = ts(s.run_at);
  const waiting = first === null && !s.finished_at && !finished;
  const waitEnd = first ?? (s.finished_at ? ts(s.finished_at) : (waiting && s.kind !== "event" ? Math.max(due, called) : null));
  if (waitEnd === null || waitEnd > called || s.kind === "sleep" || s.kind === "event") {
    seg(`wait ${s.kind}`, called, waitEnd, s.kind === "event" ? `waits for event ${s.event || ""}` : "waiting");
  }
  for (const a of s.attempt_log) {
    if (!a.started_at) continue;
    const a0 = ts(a.started_at);
    const a1 = a.ended_at ? ts(a.ended_at) : null;
    seg(`att ${a.outcome}`, a0, a1, `attempt ${a.attempt}: ${a.outcome}${a1 ? " in " + span(a1 - a0) : ""}${a.error ? " — " + a.error : ""}`);
    if (a.retry_at && a1) seg("wait backoff", a1, ts(a.retry_at), `backoff until ${absolute(a.retry_at)}`);
  }
  const dur = s.started_at && s.finished_at ? span(ts(s.finished_at) - ts(s.started_at))
    : (s.state === "running" && s.started_at ? h("time", { datetime: s.started_at, dataset: { rel: "for" } }, relative(s.started_at, "for")) : "");
  const node = h("div", { class: `lane s-${s.state} ${open.has(s.step) ? "open" : ""}`, dataset: { step: s.step, state: s.state } });
  const toggle = () => {
    if (open.has(s.step)) open.delete(s.step); else open.add(s.step);
    node.classList.toggle("open", open.has(s.step));
    if (open.has(s.step) && !node.querySelector(".lane-detail")) node.append(stepDetail(s));
  };
  node.append(h("button", { class: "lane-head", "aria-expanded": open.has(s.step) ? "true" : "false", onclick: toggle },
    h("span", { class: "n", text: s.step }),
    h("span", { class: "name", title: s.name }, s.name, s.attempts > 1 ? h("span", { class: "tag warn", text: `${s.attempts} attempts` }) : null),
    h("span", { class: `kind k-${s.kind}`, text: s.kind }),
    badge(s.state),
    h("span", { class: "track" }, segs),
    h("span", { class: "dur" }, dur)));
  if (open.has(s.step)) node.append(stepDetail(s)); // details are built when first opened
  return node;
}

function stepDetail(s) {
  const rows = [
    ["Called", s.called_at ? absolute(s.called_at) : "–"],
    ["Due", absolute(s.run_at)],
    s.event ? ["Event", h("code", { class: "inline", text: s.event })] : null,
    s.args !== undefined && s.args !== null ? ["Args", h("code", { class: "inline", text: short(s.args, 400) })] : null,
    s.result !== undefined && s.result !== null ? ["Result", h("code", { class: "inline", text: short(s.result, 400) })] : null,
    s.child ? ["Child run", h("span", {}, link(`/runs/${s.child}`, s.child), s.child_state ? badge(s.child_state) : null)] : null,
    s.error ? ["Error", h("span", { class: "err", text: s.error })] : null,
    s.traceback ? ["Traceback", h("pre", { class: "code small", text: s.traceback })] : null,
  ];
  const attempts = s.attempt_log.filter((a) => a.started_at || a.error).map((a) =>
    h("tr", {},
      h("td", { text: `#${a.attempt}` }),
      h("td", {}, badge(a.outcome === "done" ? "done" : a.outcome)),
      h("td", { class: "mono small", text: a.started_at ? absolute(a.started_at) : "–" }),
      h("td", { text: a.started_at && a.ended_at ? span(ts(a.ended_at) - ts(a.started_at)) : "" }),
      h("td", { class: "err", text: a.error || "" }),
      h("td", { class: "small", text: a.retry_at ? `retry ${absolute(a.retry_at)}` : "" })));
  return h("div", { class: "lane-detail" }, kv(rows),
    attempts.length ? h("table", { class: "attempts" }, h("thead", {}, h("tr", {}, ["Attempt", "Outcome", "Started", "Took", "Error", "Then"].map((c) => h("th", { text: c })))), h("tbody", {}, attempts)) : null);
}

function childrenCard(run) {
  return h("section", { class: "card" }, h("h2", { text: "Child runs" }),
    h("ul", { class: "links" }, run.children.map((c) => h("li", {}, link(`/runs/${c.id}`, c.id), " ", h("span", { class: "muted", text: `step ${c.step} ${c.name}` }), " ", badge(c.state)))));
}

function eventsCard(run) {
  const rows = run.events.map((e) => h("tr", {},
    h("td", { class: "mono", text: e.name }), h("td", {}, h("code", { class: "inline", text: short(e.value, 200) })),
    h("td", { class: "time" }, when(e.at)), h("td", {}, e.consumed ? h("span", { class: "muted", text: "consumed" }) : h("span", { class: "tag", text: "buffered" }))));
  return h("section", { class: "card" }, h("h2", {}, "Events ", h("span", { class: "muted", text: String(run.events.length) })),
    rows.length ? h("table", { class: "plain" }, h("thead", {}, h("tr", {}, ["Name", "Value", "Delivered", ""].map((c) => h("th", { text: c })))), h("tbody", {}, rows))
      : h("p", { class: "muted", text: "No events delivered." }));
}

function journalCard(run, isOpen, setOpen, memo) {
  let card = memo.get("journal-card");
  if (!card) {
    card = { head: h("span", { class: "muted" }), note: h("p", { class: "muted" }), body: h("tbody"), rows: new Map() };
    card.node = h("details", { class: "card journal", open: isOpen(), ontoggle: (e) => setOpen(e.target.open) },
      h("summary", {}, h("h2", {}, "Journal ", card.head)), card.note,
      h("div", { class: "scroll" }, h("table", { class: "plain records" }, card.body)));
    memo.set("journal-card", card);
  }
  card.head.textContent = `${run.journal_total} records · as wfl show`;
  card.note.hidden = !(run.journal_total > run.journal.length);
  card.note.textContent = `The first ${run.journal_total - run.journal.length} records are not shown: wfl show ${run.id}`;
  const rows = run.journal.map((r) => {
    const key = JSON.stringify(r); // a restart or a torn tail can change what a number holds
    const kept = card.rows.get(r.i);
    if (kept && kept.key === key) return kept.node;
    const node = h("tr", { class: `st-${(r.style || "").replace(/\W/g, "")}` },
      h("td", { class: "num", text: r.i }), h("td", { class: "mono small", text: r.at ? r.at.replace("T", " ").replace("+00:00", "") : "–" }),
      h("td", {}, h("span", { class: `rec r-${r.t}`, text: r.t })), h("td", { class: "what", text: r.text }));
    card.rows.set(r.i, { key, node });
    return node;
  });
  for (const i of card.rows.keys()) if (i < (run.journal.length ? run.journal[0].i : 0) || i >= run.journal_total) card.rows.delete(i);
  patch(card.body, rows);
  return card.node;
}

// -- actions ---------------------------------------------------------------------------------

async function post(url, body) {
  const response = await fetch(url, {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-Wfl-Csrf": CONFIG.csrf },
    body: JSON.stringify(body || {}),
  });
  let data = {};
  try { data = await response.json(); } catch (_) { data = { error: `${response.status} ${response.statusText}` }; }
  if (!response.ok || data.ok === false) throw new Error(data.error || `${response.status}`);
  return data;
}

function toast(text, bad = false) {
  const el = h("div", { class: `toast ${bad ? "bad" : ""}`, text });
  document.getElementById("toasts").append(el);
  setTimeout(() => el.remove(), 5000);
}

// A confirmation dialog; `act` runs on OK and may throw to keep the dialog open with the error.
function confirmDialog({ title, body, ok, danger, act }) {
  const dialog = document.getElementById("dialog");
  document.getElementById("dialog-title").textContent = title;
  document.getElementById("dialog-body").replaceChildren(...body);
  const err = document.getElementById("dialog-error");
  err.hidden = true;
  const yes = document.getElementById("dialog-yes");
  yes.textContent = ok;
  yes.className = `btn ${danger ? "danger solid" : "primary"}`;
  const onSubmit = async (event) => {
    if (event.submitter && event.submitter.value !== "ok") return;
    event.preventDefault();
    yes.disabled = true;
    try {
      const result = await act();
      dialog.close();
      toast(result.message || "done");
    } catch (e) {
      err.textContent = e.message;
      err.hidden = false;
    } finally {
      yes.disabled = false;
    }
  };
  const form = document.getElementById("dialog-form");
  form.onsubmit = onSubmit;
  dialog.showModal();
}

function cancelDialog(run) {
  confirmDialog({
    title: `Cancel run ${run.id}?`,
    body: [h("p", { text: "Steps already executing finish, but their results are dropped; on_complete sees \"canceled\". This cannot be undone (restart re-runs it)." })],
    ok: "Cancel run", danger: true,
    act: () => post(`/api/runs/${run.id}/cancel`),
  });
}

function restartDialog(run) {
  const select = h("select", { id: "restart-from" },
    h("option", { value: "", text: "the beginning (step 0)" }),
    run.timeline.map((s) => h("option", { value: String(s.step), text: `step ${s.step} · ${s.name} (${s.state})` })));
  const firstBad = run.timeline.find((s) => s.state !== "done");
  if (firstBad) select.value = String(firstBad.step);
  confirmDialog({
    title: `Restart run ${run.id}?`,
    body: [h("p", { text: "Steps from this one on run anew; the journal records the restart and nothing already written is rewritten." }), h("label", { class: "field" }, "Restart from", select)],
    ok: "Restart",
    act: () => post(`/api/runs/${run.id}/restart`, { from: select.value }),
  });
}

function sendEventDialog(run) {
  const waiting = run.timeline.find((s) => s.kind === "event" && s.state !== "done");
  const name = h("input", { id: "event-name", value: waiting ? waiting.event || "" : "", placeholder: "approved", required: true, spellcheck: "false" });
  const value = h("textarea", { id: "event-value", rows: 4, placeholder: "true", spellcheck: "false" });
  confirmDialog({
    title: `Send an event to ${run.id}`,
    body: [
      h("p", { text: waiting ? `Step ${waiting.step} waits for event "${waiting.event}".` : "The run buffers the event until it awaits it." }),
      h("label", { class: "field" }, "Name", name),
      h("label", { class: "field" }, "Value (JSON, empty for null)", value),
    ],
    ok: "Send event",
    act: () => {
      let parsed = null;
      if (value.value.trim()) {
        try { parsed = JSON.parse(value.value); } catch (e) { throw new Error(`the value is not valid JSON: ${e.message}`); }
      }
      if (!name.value.trim()) throw new Error("an event needs a name");
      return post(`/api/runs/${run.id}/event`, { name: name.value.trim(), value: parsed });
    },
  });
}

// -- schedules -------------------------------------------------------------------------------

function schedulesPage() {
  document.title = "Schedules · wfl";
  main.replaceChildren(h("p", { class: "muted", text: "loading…" }));
  listen({ view: "schedules" }, (data) => {
    if (!data.available) {
      main.replaceChildren(h("div", { class: "card empty" }, h("strong", { text: "This store has no schedules." })));
      return;
    }
    const rows = data.schedules.map((s) => h("tr", { dataset: { name: s.name } },
      h("td", { class: "mono", text: s.name }),
      h("td", { text: s.workflow }),
      h("td", {}, h("code", { class: "inline", text: s.cron }), s.tz ? h("span", { class: "muted", text: " " + s.tz }) : null),
      h("td", { class: "time" }, s.paused ? h("span", { class: "tag warn", text: "paused" }) : when(s.next_fire_at || s.next_fire, "until")),
      h("td", {}, s.last_run ? link(`/runs/${s.last_run}`, s.last_run) : h("span", { class: "muted", text: "–" }), " ", s.last_run_state ? badge(s.last_run_state) : null),
      h("td", {}, h("div", { class: "actions" },
        s.paused
          ? h("button", { class: "btn", onclick: () => scheduleDialog(s, "resume") }, "Resume…")
          : h("button", { class: "btn", onclick: () => scheduleDialog(s, "pause") }, "Pause…"),
        h("button", { class: "btn", onclick: () => scheduleDialog(s, "trigger") }, "Trigger now…")))));
    main.replaceChildren(h("section", { class: "card table-card" },
      h("table", { class: "runs" }, h("thead", {}, h("tr", {}, ["Name", "Workflow", "Cron", "Next fire", "Last run", ""].map((c) => h("th", { text: c })))),
        h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: 6 }, h("div", { class: "empty", text: "No schedules: wfl schedule add NAME FLOW.py --cron \"…\"" })))))));
  });
}

function scheduleDialog(s, action) {
  const words = { pause: "Pause", resume: "Resume", trigger: "Trigger" };
  confirmDialog({
    title: `${words[action]} schedule ${s.name}?`,
    body: [h("p", { text: action === "trigger" ? "Starts one run of it now." : action === "pause" ? "No slot fires while it is paused." : "Slots fire again from the next one." })],
    ok: words[action],
    act: () => post(`/api/schedules/${encodeURIComponent(s.name)}/${action}`), // the push shows it
  });
}

// -- start -----------------------------------------------------------------------------------

document.getElementById("store").textContent = CONFIG.store || "";
if (CONFIG.schedules) document.querySelector('[data-tab="schedules"]').hidden = false;
route();
