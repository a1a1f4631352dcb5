/* The operator console: live numbers per concert with sparklines, the queue controls, the audit log. */
"use strict";

(() => {
  const { api, Problem, $, showProblem, clearProblem, el } = App;
  const STEPS = ["step-token", "step-console"];
  const STATS = [
    ["waiting", "Waiting"], ["active", "Active"], ["admittedPerMinute", "Admitted / min"], ["held", "Held"],
    ["sold", "Sold"], ["available", "Available"], ["outboxLag", "Outbox lag (s)"], ["deadLettered", "DLT"],
  ];
  const KEEP = 90; // samples (one per refresh, 2 s): the last three minutes
  const history = new Map(); // concertId -> {stat: [values]}
  const panels = new Map();
  let timer = null;

  const token = () => sessionStorage.getItem("adminToken");
  const admin = (method, path, body) => api(method, path, { body, bearer: token() });

  async function signIn(event) {
    event.preventDefault();
    clearProblem();
    sessionStorage.setItem("adminToken", $("admin-token").value);
    $("admin-token").value = "";
    try {
      await admin("GET", "/admin/audit");
    } catch (err) {
      sessionStorage.removeItem("adminToken");
      return showProblem(err);
    }
    await open();
  }

  function signOut() {
    clearTimeout(timer);
    sessionStorage.removeItem("adminToken");
    $("panels").replaceChildren();
    panels.clear();
    App.showStep("step-token", STEPS);
  }

  async function open() {
    App.showStep("step-console", STEPS);
    await refresh();
  }

  /** The two pipeline numbers the admin API does not carry, from the Prometheus text of /metrics. */
  async function pipeline() {
    const res = await fetch("/api/v1/metrics", { cache: "no-store" });
    const text = res.ok ? await res.text() : "";
    const value = (name) => {
      const m = text.match(new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.eE+-]+)$`, "m"));
      return m ? Number(m[1]) : null;
    };
    return { outboxLag: value("outbox_oldest_pending_age_seconds"), deadLettered: value("dead_lettered_total") };
  }

  async function refresh() {
    clearTimeout(timer);
    try {
      const [{ data }, pipe] = await Promise.all([api("GET", "/concerts", { bearer: null }), pipeline()]);
      for (const c of data.concerts) {
        const { data: q } = await admin("GET", `/admin/concerts/${c.concertId}/queue`);
        draw(c, { ...q, ...pipe });
      }
      await audit();
      $("updated").textContent = `Updated ${new Date().toLocaleTimeString()}; every 2 s.`;
      clearProblem();
    } catch (err) {
      showProblem(err);
      if (err instanceof Problem && err.status === 401) return signOut();
    }
    timer = setTimeout(refresh, 2000);
  }

  function panelFor(c) {
    if (panels.has(c.concertId)) return panels.get(c.concertId);
    const node = $("panel-template").content.firstElementChild.cloneNode(true);
    node.dataset.concert = c.concertId;
    node.setAttribute("aria-label", `Concert ${c.title}`);
    node.querySelector(".concert-title").textContent = `${c.title} · ${c.venue} (#${c.concertId})`;
    const stats = node.querySelector(".stats");
    for (const [key, name] of STATS) {
      stats.append(el("div", { className: "stat", "data-stat": key },
        el("div", { className: "name", text: name }), el("div", { className: "value", text: "–" }), sparkline()));
    }
    const form = node.querySelector(".controls");
    for (const input of form.querySelectorAll("input")) input.id = `c${c.concertId}-${input.name}`;
    form.addEventListener("submit", (e) => apply(e, c.concertId, form));
    node.querySelector(".toggle").addEventListener("click", () => toggle(c.concertId));
    $("panels").append(node);
    panels.set(c.concertId, node);
    history.set(c.concertId, {});
    return node;
  }

  function sparkline() {
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("viewBox", `0 0 ${KEEP} 26`);
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("aria-hidden", "true");
    svg.append(document.createElementNS("http://www.w3.org/2000/svg", "polyline"));
    return svg;
  }

  function draw(c, q) {
    const node = panelFor(c);
    const first = !node.dataset.drawn;
    node.dataset.drawn = "1";
    node.dataset.paused = q.paused;
    const state = node.querySelector(".state");
    state.textContent = q.paused ? "❚❚ paused" : "▶ admitting";
    state.className = `state ${q.paused ? "paused" : "running"}`;
    node.querySelector(".sold-flag").textContent = q.soldOut ? "· sold out" : "";
    node.querySelector(".toggle").textContent = q.paused ? "Resume admission" : "Pause admission";
    const h = history.get(c.concertId);
    for (const [key] of STATS) {
      const value = q[key];
      const box = node.querySelector(`[data-stat="${key}"]`);
      box.querySelector(".value").textContent = value === null || value === undefined ? "–" : String(Math.round(value * 10) / 10);
      (h[key] = h[key] || []).push(Number(value) || 0);
      if (h[key].length > KEEP) h[key].shift();
      plot(box.querySelector("polyline"), h[key]);
    }
    if (first) fill(node.querySelector(".controls"), q);
  }

  function plot(line, values) {
    const max = Math.max(1, ...values);
    const offset = KEEP - values.length;
    line.setAttribute("points", values.map((v, i) => `${offset + i},${(25 - (24 * v) / max).toFixed(1)}`).join(" "));
  }

  function fill(form, q) {
    form.elements.activeLimit.value = q.activeLimit;
    form.elements.admitPerSecond.value = q.admitPerSecond ?? "";
    form.elements.notice.value = q.notice ?? "";
  }

  async function patch(concertId, body) {
    clearProblem();
    try {
      const { data } = await admin("PATCH", `/admin/concerts/${concertId}/queue`, body);
      const node = panels.get(concertId);
      fill(node.querySelector(".controls"), data);
      await refresh();
    } catch (err) {
      showProblem(err);
    }
  }

  function toggle(concertId) {
    return patch(concertId, { paused: panels.get(concertId).dataset.paused !== "true" });
  }

  function apply(event, concertId, form) {
    event.preventDefault();
    const number = (v) => (v.trim() === "" ? null : Number(v));
    const limit = number(form.elements.activeLimit.value);
    return patch(concertId, {
      ...(limit === null ? {} : { activeLimit: limit }),
      admitPerSecond: number(form.elements.admitPerSecond.value),
      notice: form.elements.notice.value,
    });
  }

  async function audit() {
    const { data } = await admin("GET", "/admin/audit");
    const show = (v) => (v === null ? "default" : JSON.stringify(v));
    $("audit").replaceChildren(...data.entries.slice(0, 50).map((e) => el("tr", {},
      el("td", { text: new Date(e.at).toLocaleTimeString() }), el("td", { text: e.who }),
      el("td", { text: `#${e.concertId}` }), el("td", { text: e.field }),
      el("td", { text: show(e.before) }), el("td", { text: show(e.after) }))));
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("token-form").addEventListener("submit", signIn);
    $("sign-out").addEventListener("click", signOut);
    if (token()) open();
    else App.showStep("step-token", STEPS, { focus: false });
  });
})();
