/* Shared by the pages: a fetch wrapper that turns problem+json into a readable message. */
"use strict";

const App = (() => {
  const API = "/api/v1";

  class Problem extends Error {
    constructor(problem, status) {
      super(problem.detail || problem.title || `HTTP ${status}`);
      this.problem = problem;
      this.status = status;
    }
  }

  const $ = (id) => document.getElementById(id);

  /** Call the API. Resolves {status, headers, data}; rejects with a Problem for any 4xx/5xx. */
  async function api(method, path, { body, headers = {}, bearer } = {}) {
    const h = { Accept: "application/json, application/problem+json", ...headers };
    if (body !== undefined) h["Content-Type"] = "application/json";
    const token = bearer === undefined ? sessionStorage.getItem("accessToken") : bearer;
    if (token) h.Authorization = `Bearer ${token}`;
    let res;
    try {
      res = await fetch(API + path, {
        method,
        headers: h,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store",
        credentials: "same-origin",
      });
    } catch (err) {
      throw new Problem({ title: "The service cannot be reached", detail: "Check your connection; retrying." }, 0);
    }
    const type = res.headers.get("Content-Type") || "";
    const data = type.includes("json") ? await res.json() : null;
    if (res.status >= 400) {
      const problem = new Problem(data && data.title ? data : { title: res.statusText || "Request failed", detail: `HTTP ${res.status}` }, res.status);
      problem.retryAfterMs = 1000 * Number(res.headers.get("Retry-After") || 0);
      if (res.status === 401 && /^AUTH_/.test(problem.problem.code || "")) {
        // the sign-in is missing or expired: the page asks for it again
        document.dispatchEvent(new CustomEvent("auth-expired", { detail: problem }));
      }
      throw problem;
    }
    return { status: res.status, headers: res.headers, data };
  }

  /** Show a problem's title and detail in the page's alert region (never raw JSON). */
  function showProblem(err) {
    const box = $("problem");
    if (!box) return;
    const p = err instanceof Problem ? err.problem : { title: "Something went wrong", detail: String(err && err.message || err) };
    $("problem-title").textContent = p.title || "Request refused";
    $("problem-detail").textContent = p.detail && p.detail !== p.title ? p.detail : "";
    box.hidden = false;
  }

  function clearProblem() {
    const box = $("problem");
    if (box) box.hidden = true;
  }

  /** Show one section (a step) and move the focus to its heading for keyboard and screen-reader users. */
  function showStep(id, steps, { focus = true } = {}) {
    for (const s of steps) $(s).hidden = s !== id;
    const heading = $(id).querySelector("h1, h2");
    if (heading && focus) {
      heading.tabIndex = -1;
      heading.focus();
    }
  }

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "text") node.textContent = v;
      else if (k === "className") node.className = v;
      else node.setAttribute(k, v);
    }
    for (const c of children) node.append(c);
    return node;
  }

  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  return { api, Problem, $, showProblem, clearProblem, showStep, el, sleep };
})();
