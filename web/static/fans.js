/* The fan page: sign in → concerts → queue → seats → hold → pay → confirmation. */
"use strict";

(() => {
  const { api, Problem, $, showProblem, clearProblem, el, sleep } = App;
  const STEPS = ["step-login", "step-concerts", "step-wait", "step-seats", "step-hold", "step-done"];
  const s = {
    userId: null, concertId: null, token: null, firstRank: null, pollTimer: null,
    scheduleId: null, etag: null, seatsTimer: null, reservation: null, countdownTimer: null,
  };
  const show = (id) => App.showStep(id, STEPS);
  const authLost = (err) => err instanceof Problem && /^AUTH_/.test(err.problem.code || ""); // see "auth-expired"
  const fanHeaders = () => ({ "X-Queue-Token": s.token });

  function stopTimers() {
    for (const t of ["pollTimer", "seatsTimer", "countdownTimer"]) {
      clearTimeout(s[t]);
      clearInterval(s[t]);
      s[t] = null;
    }
  }

  // --- sign in ---------------------------------------------------------------------------
  function takeUpstreamToken() {
    // Production: the upstream sign-in redirects here with #accessToken=<JWT>&userId=<id>.
    const params = new URLSearchParams(location.hash.slice(1));
    if (params.get("accessToken")) {
      sessionStorage.setItem("accessToken", params.get("accessToken"));
      if (params.get("userId")) sessionStorage.setItem("userId", params.get("userId"));
      history.replaceState(null, "", location.pathname);
    }
  }

  async function signIn(event) {
    event.preventDefault();
    clearProblem();
    const userId = $("user-id").value.trim();
    if (!/^[0-9]{1,19}$/.test(userId) || BigInt(userId) < 1n) {
      showProblem(new Problem({ title: "Invalid user id", detail: "Enter a positive whole number." }, 400));
      return;
    }
    try {
      const { data } = await api("POST", "/dev/login", { body: { userId: Number(userId) }, bearer: null });
      sessionStorage.setItem("accessToken", data.accessToken);
    } catch (err) {
      // 404: this server has no dev login (identity not enabled): the API takes the user id as given.
      if (!(err instanceof Problem && err.status === 404)) return showProblem(err);
      sessionStorage.removeItem("accessToken");
    }
    sessionStorage.setItem("userId", userId);
    await concerts();
  }

  // --- concerts --------------------------------------------------------------------------
  async function concerts() {
    stopTimers();
    s.userId = sessionStorage.getItem("userId");
    $("who").textContent = s.userId;
    try {
      const { data } = await api("GET", "/concerts");
      const list = $("concerts");
      list.replaceChildren();
      for (const c of data.concerts) {
        const button = el("button", { type: "button", text: "Join the queue", "aria-label": `Join the queue for ${c.title}` });
        button.addEventListener("click", () => join(c.concertId));
        list.append(el("li", {}, el("span", { className: "title", text: c.title }), el("span", { className: "venue", text: c.venue }), button));
      }
      show("step-concerts");
    } catch (err) {
      showProblem(err);
    }
  }

  // --- the queue -------------------------------------------------------------------------
  async function join(concertId) {
    clearProblem();
    s.concertId = concertId;
    s.firstRank = null;
    try {
      const { data } = await api("POST", "/queue/tokens", { body: { concertId, userId: Number(s.userId) } });
      s.token = data.token;
      sessionStorage.setItem(`queueToken:${concertId}`, data.token);
      onToken(data);
    } catch (err) {
      showProblem(err);
    }
  }

  function setNotice(id, notice) {
    $(id).hidden = !notice;
    $(id).textContent = notice ? `Notice from the organiser: ${notice}` : "";
  }

  function onToken(t) {
    setNotice("notice", t.notice);
    setNotice("notice-active", t.notice);
    $("sold-out").hidden = !t.soldOut;
    if (t.status === "ACTIVE") {
      clearTimeout(s.pollTimer);
      return seats();
    }
    if ($("step-wait").hidden) show("step-wait");
    const rank = t.rank;
    if (rank && (s.firstRank === null || rank > s.firstRank)) s.firstRank = rank;
    // PREQUEUED (fair start): no rank until the draw at the opening; the estimate is the time to it.
    $("rank").textContent = rank ? `${rank}` : "drawn at the opening";
    $("estimate").textContent = duration(t.estimatedWaitSeconds);
    const progress = s.firstRank ? Math.round((100 * (s.firstRank - rank + 1)) / (s.firstRank + 1)) : 0;
    $("progress").value = progress;
    $("progress").textContent = `${progress} %`;
    // The server says when to poll again (pollAfterMs); 1 s if it says nothing.
    const wait = Number.isFinite(t.pollAfterMs) ? t.pollAfterMs : 1000;
    $("step-wait").dataset.pollAfterMs = wait;
    $("poll-hint").textContent = `Updated ${new Date().toLocaleTimeString()}; next update in ${Math.round(wait / 100) / 10} s.`;
    clearTimeout(s.pollTimer);
    s.pollTimer = setTimeout(poll, wait);
  }

  async function poll() {
    try {
      const { data } = await api("GET", "/queue/token", { headers: fanHeaders() });
      if (s.pollFailed) clearProblem(); // a passing outage: its message goes when polling works again
      s.pollFailed = false;
      onToken(data);
    } catch (err) {
      showProblem(err);
      s.pollFailed = true;
      if (authLost(err)) return;
      if (err instanceof Problem && err.status === 401) return concerts();
      const retry = err instanceof Problem && err.retryAfterMs ? err.retryAfterMs : 3000;
      s.pollTimer = setTimeout(poll, retry);
    }
  }

  async function leave() {
    try {
      await api("DELETE", "/queue/token", { headers: fanHeaders() });
    } catch (err) {
      /* already gone */
    }
    await concerts();
  }

  function duration(seconds) {
    if (seconds < 60) return `about ${seconds} s`;
    const m = Math.round(seconds / 60);
    return m < 90 ? `about ${m} min` : `about ${Math.round(m / 60)} h`;
  }

  // --- seats -----------------------------------------------------------------------------
  async function seats() {
    try {
      const { data } = await api("GET", `/concerts/${s.concertId}/schedules`);
      const select = $("schedule");
      select.replaceChildren(...data.schedules.map((sc) =>
        el("option", { value: sc.scheduleId, text: `${new Date(sc.startsAt).toLocaleString()} (${sc.availableSeats} left)` })));
      s.scheduleId = Number(select.value);
      s.etag = null;
      show("step-seats");
      await refreshSeats();
    } catch (err) {
      showProblem(err);
    }
  }

  async function refreshSeats() {
    clearTimeout(s.seatsTimer);
    try {
      const headers = fanHeaders();
      if (s.etag) headers["If-None-Match"] = s.etag;
      const res = await api("GET", `/schedules/${s.scheduleId}/seats`, { headers });
      if (res.status === 200) {
        s.etag = res.headers.get("ETag");
        drawSeats(res.data.seats);
      }
    } catch (err) {
      showProblem(err);
      if (authLost(err)) return;
      if (err instanceof Problem && (err.status === 401 || err.status === 403)) return concerts();
    }
    if (!$("step-seats").hidden) s.seatsTimer = setTimeout(refreshSeats, 2000);
  }

  const LABEL = { AVAILABLE: "available", HELD: "held", RESERVED: "sold" };
  const MARK = { HELD: "H", RESERVED: "✕" };

  function drawSeats(list) {
    const grid = $("seat-grid");
    const focused = document.activeElement && document.activeElement.dataset.seat;
    grid.replaceChildren();
    for (const seat of list) {
      const free = seat.status === "AVAILABLE";
      const b = el("button", {
        type: "button",
        className: `seat ${LABEL[seat.status]}`,
        "data-seat": seat.seatId,
        "data-status": seat.status,
        "aria-label": `Seat ${seat.number}, ${LABEL[seat.status]}, ${seat.price} points`,
        title: `Seat ${seat.number}: ${LABEL[seat.status]}`,
        text: MARK[seat.status] || `${seat.number}`,
      });
      if (free) b.addEventListener("click", () => hold(seat));
      else b.setAttribute("aria-disabled", "true");
      grid.append(b);
      if (String(seat.seatId) === focused) b.focus();
    }
  }

  async function hold(seat) {
    clearProblem();
    try {
      const res = await api("POST", "/reservations", {
        body: { scheduleId: s.scheduleId, seatId: seat.seatId },
        headers: { ...fanHeaders(), Prefer: "wait=5" },
      });
      const reservation = res.status === 202 ? await outcome(res.data.jobId) : res.data;
      onHeld(reservation);
    } catch (err) {
      showProblem(err);
      s.etag = null;
      refreshSeats();
    }
  }

  /** Follow a job until it ends: its result, or its problem thrown. */
  async function outcome(jobId) {
    for (;;) {
      await sleep(300);
      const { data } = await api("GET", `/jobs/${jobId}`, { headers: fanHeaders() });
      if (data.status === "SUCCEEDED") return data.result;
      if (data.status === "FAILED") throw new Problem(data.error || { title: "The request failed" }, 409);
    }
  }

  // --- hold, charge, pay -----------------------------------------------------------------
  function onHeld(r) {
    clearTimeout(s.seatsTimer);
    s.reservation = r;
    $("hold-seat").textContent = r.seatNumber;
    $("hold-price").textContent = r.price;
    $("extend").hidden = !(Number.isInteger(r.extensionsLeft) && r.extensionsLeft > 0);
    $("extend").textContent = `Extend the hold (${r.extensionsLeft} left)`;
    show("step-hold");
    tick();
    clearInterval(s.countdownTimer);
    s.countdownTimer = setInterval(tick, 250);
    balance();
  }

  function tick() {
    const left = Math.max(0, Math.round((Date.parse(s.reservation.expiresAt) - Date.now()) / 1000));
    const text = `${Math.floor(left / 60)}:${String(left % 60).padStart(2, "0")}`;
    const time = $("countdown");
    if (time.textContent !== text) time.textContent = text;
    time.setAttribute("datetime", `PT${left}S`);
    if (left === 0) {
      clearInterval(s.countdownTimer);
      showProblem(new Problem({ title: "Hold expired", detail: "The seat was released; pick a seat again." }, 409));
      seats();
    }
  }

  async function balance() {
    try {
      const { data } = await api("GET", `/users/${s.userId}/points`);
      $("balance").textContent = data.balance;
    } catch (err) {
      showProblem(err);
    }
  }

  async function charge(event) {
    event.preventDefault();
    clearProblem();
    const amount = Number($("charge-amount").value);
    try {
      const { data } = await api("POST", `/users/${s.userId}/points/charge`, { body: { amount } });
      $("balance").textContent = data.balance;
      $("charge-amount").value = "";
    } catch (err) {
      showProblem(err);
    }
  }

  async function extend() {
    clearProblem();
    try {
      const res = await api("POST", `/reservations/${s.reservation.reservationId}/extend`, {
        headers: { ...fanHeaders(), Prefer: "wait=5" },
      });
      onHeld(res.status === 202 ? await outcome(res.data.jobId) : res.data);
    } catch (err) {
      showProblem(err);
    }
  }

  async function pay() {
    clearProblem();
    try {
      const res = await api("POST", "/payments", {
        body: { reservationId: s.reservation.reservationId },
        headers: { ...fanHeaders(), Prefer: "wait=5" },
      });
      const payment = res.status === 202 ? await outcome(res.data.jobId) : res.data;
      stopTimers();
      $("payment-id").textContent = payment.paymentId;
      $("done-seat").textContent = s.reservation.seatNumber;
      $("done-amount").textContent = `${payment.amount} points`;
      $("done-balance").textContent = `${payment.balance} points`;
      show("step-done");
    } catch (err) {
      showProblem(err);
    }
  }

  async function release() {
    clearProblem();
    try {
      await api("DELETE", `/reservations/${s.reservation.reservationId}`, { headers: fanHeaders() });
    } catch (err) {
      showProblem(err);
    }
    stopTimers();
    seats();
  }

  // --- wiring ----------------------------------------------------------------------------
  document.addEventListener("DOMContentLoaded", () => {
    $("login-form").addEventListener("submit", signIn);
    $("leave").addEventListener("click", leave);
    $("schedule").addEventListener("change", () => {
      s.scheduleId = Number($("schedule").value);
      s.etag = null;
      refreshSeats();
    });
    $("charge-form").addEventListener("submit", charge);
    $("extend").addEventListener("click", extend);
    $("pay").addEventListener("click", pay);
    $("release").addEventListener("click", release);
    $("again").addEventListener("click", concerts);
    document.addEventListener("auth-expired", (event) => {
      stopTimers();
      sessionStorage.removeItem("accessToken");
      sessionStorage.removeItem("userId");
      show("step-login");
      showProblem(event.detail);
    });
    takeUpstreamToken();
    if (sessionStorage.getItem("userId")) {
      $("user-id").value = sessionStorage.getItem("userId");
      concerts();
    } else {
      App.showStep("step-login", STEPS, { focus: false });
    }
  });
})();
