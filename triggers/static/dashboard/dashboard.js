// The dashboard's script: polls GET /api/dashboard/state, draws it (uPlot for the plots), and
// sends a person's commands to the API with that person's bearer token (docs/dashboard.md).
// Plain script, no build step. Text from the server is only ever set as text, never as HTML.
"use strict";

(function () {
  const POLL_MS = 1500;
  const TOKEN_KEY = "retrain-dashboard.token";
  const EXPIRY_MARGIN_MS = 30000; // a token this close to its expiry is not sent
  const SIGN_IN_WAIT_MS = 10 * 60 * 1000; // how long the page watches a sign-in window
  const params = new URLSearchParams(location.search);
  const functionKey = params.get("code");
  // The key stays in this script only (sent as x-functions-key): out of the address bar, the
  // history and whatever is copied from them.
  if (functionKey) {
    params.delete("code");
    const rest = params.toString();
    history.replaceState(history.state, "", location.pathname + (rest ? `?${rest}` : "") + location.hash);
  }
  const apiBase = location.pathname.replace(/\/dashboard\/?$/, "");
  let lastRendered = "";
  let lastState = null;
  let signInMode = null;
  let pending = null; // the action the dialog confirms
  let readAppServiceSession = false; // /.auth/me read once the page knows it is in Azure
  let signInWatch = null; // the timer watching a sign-in window

  // ---------------------------------------------------------------- small helpers

  function el(tag, attributes, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "className") node.className = value;
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function when(iso) {
    if (!iso) return "–";
    const date = new Date(iso);
    return date.toLocaleString(undefined, { hour12: false });
  }

  function seconds(iso) {
    return new Date(iso).getTime() / 1000;
  }

  function serving(model) {
    if (!model) return "none";
    return `v${model.version} (${model.deployment})`;
  }

  // The candidate's share of live traffic; in the shadow stage, also what is mirrored to it
  // (copies whose answers reach nobody: no live share).
  function share(active) {
    const live = `${active.traffic_weight || 0}%`;
    return active.status === "shadow" ? `${live} live, ${active.shadow_percent || 0}% mirrored` : live;
  }

  function verdictClass(outcome) {
    return { pass: "pass", fail: "fail", inconclusive: "inconclusive" }[outcome] || "";
  }

  function headers(extra) {
    const all = Object.assign({ Accept: "application/json" }, extra || {});
    if (functionKey) all["x-functions-key"] = functionKey;
    return all;
  }

  let sayTimer = null;

  function say(text, isError) {
    const box = document.getElementById("action-result");
    box.textContent = text;
    box.classList.toggle("error", Boolean(isError));
    clearTimeout(sayTimer);
    sayTimer = setTimeout(() => (box.textContent = ""), 15000);
  }

  // ---------------------------------------------------------------- who is signed in

  // Milliseconds since the epoch of an expiry time: the local issuer's ISO time, or App
  // Service's `expires_on` (seven decimals, more than Date reliably parses); NaN if neither.
  function expiryMs(iso) {
    if (typeof iso !== "string") return NaN;
    return new Date(iso.replace(/(\.\d{3})\d+/, "$1")).getTime();
  }

  function storedToken() {
    try {
      const saved = JSON.parse(sessionStorage.getItem(TOKEN_KEY) || "null");
      if (saved && expiryMs(saved.expires_at) > Date.now() + EXPIRY_MARGIN_MS) return saved;
    } catch (error) {
      /* nothing usable stored */
    }
    return null;
  }

  function showIdentity() {
    const saved = storedToken();
    document.getElementById("signed-in-as").textContent = saved
      ? `signed in as ${saved.name}`
      : "not signed in";
    document.getElementById("local-sign-in").hidden = !(signInMode === "local" && !saved);
    document.getElementById("app-service-sign-in").hidden = !(signInMode === "app-service" && !saved);
    document.getElementById("sign-out").hidden = !saved;
  }

  function signOut() {
    sessionStorage.removeItem(TOKEN_KEY);
    say("signed out");
    showIdentity();
  }

  async function localSignIn(event) {
    event.preventDefault();
    const name = document.getElementById("sign-in-name").value.trim();
    const response = await fetch(`${apiBase}/dashboard/sign-in`, {
      method: "POST",
      headers: headers({ "Content-Type": "application/json" }),
      body: JSON.stringify({ name }),
    });
    const body = await response.json();
    if (!response.ok) {
      say(`sign-in refused: ${body.detail || response.status}`, true);
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, JSON.stringify(body));
    say(`signed in as ${body.name} (local issuer)`);
    showIdentity();
  }

  // In Azure: App Service authentication keeps the person's access token for the API
  // (its login asks for the API's scope); /.auth/me hands it to the page.
  async function appServiceSession() {
    const response = await fetch("/.auth/me", { credentials: "same-origin" });
    if (!response.ok) return null;
    const sessions = await response.json().catch(() => null);
    const session = Array.isArray(sessions) ? sessions[0] : null;
    return session && session.access_token ? session : null;
  }

  // An access token whose expiry is known and (nearly) past. An unknown one is sent: the app
  // answers 401 if it has expired, and the page renews it then.
  function expired(session) {
    const at = expiryMs(session.expires_on);
    return !Number.isNaN(at) && at <= Date.now() + EXPIRY_MARGIN_MS;
  }

  // App Service renews the token store's tokens with the refresh token its login kept
  // (`offline_access`); false when it cannot (the person must sign in again).
  async function refreshAppServiceSession() {
    const response = await fetch("/.auth/refresh", { credentials: "same-origin" });
    return response.ok;
  }

  // The person's token from /.auth/me. Renewed once (/.auth/refresh, then /.auth/me again)
  // when /.auth/me's token has expired, or first thing when the app has just refused
  // `refused` (401): null if there is still none to send, or only the refused one.
  async function appServiceToken(refused) {
    let session = refused ? null : await appServiceSession();
    if (refused || (session && expired(session))) {
      session = (await refreshAppServiceSession()) ? await appServiceSession() : null;
    }
    if (!session || expired(session) || (refused && session.access_token === refused)) {
      sessionStorage.removeItem(TOKEN_KEY);
      return null;
    }
    const claims = session.user_claims || [];
    const name = (claims.find((c) => c.typ === "preferred_username") || {}).val || session.user_id;
    const saved = { token: session.access_token, name, expires_at: session.expires_on };
    sessionStorage.setItem(TOKEN_KEY, JSON.stringify(saved));
    return saved;
  }

  async function bearer() {
    const saved = storedToken();
    if (saved || signInMode !== "app-service") return saved;
    return appServiceToken(null);
  }

  // In Azure the sign-in runs in a window of its own: this page keeps the function key (held
  // by this script alone, never sent to a sign-in) and shows the person once /.auth/me holds
  // their token. Where no window opens, the link signs in in this tab and comes back to the
  // page's address without the key (post_login_redirect_uri, triggers/dashboard.py): open the
  // page with its key again, it then finds the person signed in.
  function appServiceSignIn(event) {
    if (event.button !== 0 || event.ctrlKey || event.metaKey || event.shiftKey) return;
    const popup = window.open(event.currentTarget.href, "retrain-dashboard-sign-in", "popup,width=520,height=680");
    if (!popup) return; // blocked: the link's own navigation
    event.preventDefault();
    say("sign in in the window that opened");
    clearTimeout(signInWatch);
    const until = Date.now() + SIGN_IN_WAIT_MS;
    const watch = async () => {
      const saved = await appServiceToken(null).catch(() => null);
      if (saved) {
        try {
          popup.close();
        } catch (error) {
          /* the sign-in's window is no longer this page's to close */
        }
        say(`signed in as ${saved.name}`);
        showIdentity();
      } else if (Date.now() < until) {
        signInWatch = setTimeout(watch, POLL_MS);
      }
    };
    signInWatch = setTimeout(watch, POLL_MS);
  }

  // ---------------------------------------------------------------- acting as a person

  const ACTIONS = {
    approve: { title: "Approve", path: "approval", reasonField: "comment", needsReason: false },
    reject: { title: "Reject", path: "approval", reasonField: "comment", needsReason: true },
    pause: { title: "Pause", path: "pause", reasonField: "reason", needsReason: false },
    resume: { title: "Resume", path: "resume", reasonField: "reason", needsReason: false },
    "promote-now": { title: "Promote now", path: "promote-now", reasonField: "reason", needsReason: true },
    rollback: { title: "Roll back", path: "rollback", reasonField: "reason", needsReason: true },
  };

  function available(active, model) {
    if (!active) return new Set();
    const status = active.status;
    const allowed = new Set(["rollback"]);
    if (status === "awaiting_approval") allowed.add("approve").add("reject");
    if (active.paused) allowed.add("resume");
    else allowed.add("pause");
    const firstBake = status === "production_bake" && model.status.waiting_for_traffic;
    if ((status === "canary" || firstBake) && !active.paused) allowed.add("promote-now");
    return allowed;
  }

  function ask(action, model, active) {
    const spec = ACTIONS[action];
    pending = { action, model: model.model, active };
    document.getElementById("action-title").textContent = `${spec.title}: ${model.model}`;
    document.getElementById("action-summary").textContent =
      `Promotion ${active.id}, candidate v${active.candidate_version}, ` +
      `${active.status} at step ${active.step} (${active.traffic_weight || 0}% on the candidate).`;
    const reason = document.getElementById("action-reason");
    reason.value = "";
    reason.required = spec.needsReason;
    document.getElementById("action-hint").textContent =
      (spec.needsReason ? "A reason is required. " : "A reason is optional. ") +
      "The app verifies your token and the audit records you.";
    document.getElementById("action-dialog").showModal();
    reason.focus();
  }

  async function send() {
    const { action, active } = pending;
    const spec = ACTIONS[action];
    const reason = document.getElementById("action-reason").value.trim();
    const saved = await bearer();
    if (!saved) {
      say("sign in first: every command is sent with your token", true);
      return;
    }
    const body = {};
    if (spec.path === "approval") {
      Object.assign(body, {
        decision: action,
        step: active.step,
        candidate_version: active.candidate_version,
      });
    }
    if (reason || spec.needsReason) body[spec.reasonField] = reason;
    const command = (token) =>
      fetch(`${apiBase}/promotions/${encodeURIComponent(active.id)}/${spec.path}`, {
        method: "POST",
        headers: headers({
          "Content-Type": "application/json",
          Authorization: `Bearer ${token}`,
        }),
        body: JSON.stringify(body),
      });
    let response = await command(saved.token);
    if (response.status === 401 && signInMode === "app-service") {
      // Refused before anything was done (no verified person): the token expired or was
      // revoked since it was read. Renewed once, the command is sent once more.
      const renewed = await appServiceToken(saved.token);
      if (renewed) response = await command(renewed.token);
    }
    const answer = await response.json().catch(() => ({}));
    if (response.status === 202) {
      say(`${spec.title}: ${answer.status} (promotion ${active.id})`);
    } else {
      if (response.status === 401) sessionStorage.removeItem(TOKEN_KEY);
      say(`${spec.title} refused (${response.status}): ${answer.detail || answer.title || ""}`, true);
    }
    showIdentity();
    poll();
  }

  // ---------------------------------------------------------------- drawing

  function attention(status) {
    const badges = [];
    if (status.active_promotion && status.active_promotion.paused) badges.push("paused");
    if (status.traffic_alert) badges.push("traffic not restored");
    if (status.endpoint_drift) badges.push("endpoint drift");
    if (status.effects_given_up) badges.push(`${status.effects_given_up} effect(s) given up`);
    if (status.pending_effects) badges.push(`${status.pending_effects} effect(s) pending`);
    return badges.map((text) => el("span", { className: "badge alert" }, text));
  }

  function modelRow(view) {
    const status = view.status;
    const active = status.active_promotion;
    return el(
      "tr",
      { "data-model": view.model },
      el("td", {}, view.model),
      el("td", { "data-testid": "production" }, serving(status.production)),
      el("td", { "data-testid": "last-known-good" }, serving(status.last_known_good)),
      el(
        "td",
        {},
        active
          ? `v${active.candidate_version} ${active.status} ${active.step} (${share(active)})`
          : "none",
      ),
      el("td", {}, attention(status)),
    );
  }

  function lineChart(title, width, series, data, yRange) {
    const holder = el("div", { className: "chart" }, el("h4", {}, title));
    const options = {
      width,
      height: 180,
      series: [{}].concat(series),
      scales: {
        // Padded by half a minute: one check alone still gets a readable axis.
        x: { time: true, range: [Math.min(...data[0]) - 30, Math.max(...data[0]) + 30] },
        y: yRange ? { range: yRange } : {},
      },
      axes: [{}, { size: 50 }],
      legend: { show: true },
    };
    // eslint-disable-next-line no-undef
    new uPlot(options, data, holder);
    return holder;
  }

  // The candidate's live share on the model's endpoint (with rings: the first ring); a
  // shadow stage adds the share mirrored to it, dashed: copies, not live traffic.
  function trafficChart(points, rings) {
    if (!points.length) return null;
    const xs = points.map((p) => seconds(p.time));
    const stepped = uPlot.paths.stepped({ align: 1 });
    const series = [{ label: "candidate % (live)", stroke: "#2457c5", width: 2, paths: stepped }];
    const data = [xs, points.map((p) => p.weight)];
    if (points.some((p) => p.mirror)) {
      series.push({ label: "mirrored %", stroke: "#8a6d00", width: 2, dash: [6, 4], paths: stepped });
      data.push(points.map((p) => p.mirror || 0));
    }
    const where = rings && rings.length ? ` on ${rings[0].endpoint}` : "";
    return lineChart(`traffic on the candidate${where} (%)`, 460, series, data, [0, 100]);
  }

  const ARM_COLOURS = ["#2457c5", "#b3261e", "#1b7f3b", "#8a6d00", "#6b3fa0"];

  // One chart per gate over the promotion's checks: each arm's estimate, and the bounds of
  // the gate's interval when it has one. A gate judged once on no live samples (a staging
  // gate) is only in the table: a single point says no more than its row.
  function evidenceCharts(checks) {
    const byGate = new Map();
    for (const check of checks) {
      if (!byGate.has(check.gate)) byGate.set(check.gate, []);
      byGate.get(check.gate).push(check);
    }
    const charts = [];
    for (const [gate, items] of byGate) {
      const arms = [...new Set(items.flatMap((c) => Object.keys(c.values || {})))];
      const hasInterval = items.some((c) => Array.isArray(c.interval));
      if (!arms.length && !hasInterval) continue;
      const live = items.some((c) => Object.keys(c.samples || {}).length);
      if (items.length < 2 && !live) continue;
      const xs = items.map((c) => seconds(c.time));
      const data = [xs];
      const series = [];
      arms.forEach((arm, index) => {
        data.push(items.map((c) => (c.values && c.values[arm] != null ? c.values[arm] : null)));
        series.push({ label: arm, stroke: ARM_COLOURS[index % ARM_COLOURS.length], width: 2, points: { show: true } });
      });
      if (hasInterval) {
        for (const [bound, index] of [["lower bound", 0], ["upper bound", 1]]) {
          data.push(items.map((c) => (Array.isArray(c.interval) ? c.interval[index] : null)));
          series.push({ label: bound, stroke: "#5b6478", dash: [4, 4], width: 1 });
        }
      }
      charts.push(lineChart(gate, 360, series, data, null));
    }
    return charts;
  }

  function evidenceTable(checks) {
    const latest = new Map();
    for (const check of checks) latest.set(check.gate, check);
    const rows = [...latest.values()].map((c) =>
      el(
        "tr",
        { "data-gate": c.gate },
        el("td", {}, c.gate),
        el("td", {}, c.step || ""),
        el("td", { className: verdictClass(c.outcome) }, c.outcome),
        el("td", {}, Object.entries(c.samples || {}).map(([arm, n]) => `${arm}: ${n}`).join(", ")),
        el(
          "td",
          {},
          Object.entries(c.values || {})
            .map(([arm, v]) => `${arm}: ${v == null ? "–" : Number(v).toFixed(4)}`)
            .join(", "),
        ),
        el(
          "td",
          {},
          [
            Array.isArray(c.interval) ? `[${c.interval.map((v) => Number(v).toFixed(4)).join(", ")}]` : "",
            c.threshold != null ? `threshold ${c.threshold}` : "",
            c.margin != null ? `margin ${c.margin}` : "",
            c.p_value != null ? `p ${Number(c.p_value).toPrecision(3)}` : "",
          ].filter(Boolean).join("; "),
        ),
        el("td", { className: "detail" }, c.reason || ""),
      ),
    );
    return el(
      "table",
      { "data-testid": "evidence" },
      el("thead", {}, el("tr", {}, ["gate", "step", "verdict", "samples", "estimates", "bounds", "why"].map((h) => el("th", {}, h)))),
      el("tbody", {}, rows),
    );
  }

  function auditTable(records) {
    const rows = records
      .slice()
      .reverse()
      .map((r) => {
        const detail = Object.entries(r.detail || {})
          .filter(([key]) => key !== "evidence")
          .map(([key, value]) => `${key}=${typeof value === "object" ? JSON.stringify(value) : value}`)
          .join(" ");
        return el(
          "tr",
          { "data-testid": "audit-row", "data-action": r.action },
          el("td", {}, when(r.time)),
          el("td", {}, r.action),
          el("td", {}, r.to_state ? `${r.from_state || ""} → ${r.to_state}` : ""),
          el("td", { "data-testid": "audit-actor" }, r.actor || ""),
          el("td", { className: "detail" }, detail),
        );
      });
    return el(
      "div",
      { className: "audit" },
      el(
        "table",
        { "data-testid": "audit" },
        el("thead", {}, el("tr", {}, ["when", "action", "state", "actor", "detail"].map((h) => el("th", {}, h)))),
        el("tbody", {}, rows),
      ),
    );
  }

  // The shadow stage: what is mirrored to the candidate and when its gates judge it.
  function shadowFacts(shadow) {
    if (!shadow) return null;
    return el(
      "div",
      { className: "facts", "data-testid": "shadow" },
      el("div", {}, el("span", {}, "shadow deployment"), shadow.deployment),
      el("div", { "data-testid": "shadow-mirror" }, el("span", {}, "mirrored to it (answers reach nobody)"), `${shadow.mirror_percent}% of live requests`),
      el("div", { "data-testid": "shadow-judged-from" }, el("span", {}, "judged from"), when(shadow.judged_from)),
      el("div", {}, el("span", {}, "waits for samples until"), when(shadow.deadline)),
      el("div", {}, el("span", {}, "samples needed per arm"), shadow.min_samples),
    );
  }

  const RING_STATE_CLASS = { done: "pass", deploying: "wait", baking: "wait" };

  // Each ring (policy `rings`), in the order a promotion walks them: its endpoint, the version
  // it serves and where the promotion is on it.
  function ringsTable(rings) {
    if (!rings || !rings.length) return null;
    const rows = rings.map((ring, index) =>
      el(
        "tr",
        { "data-testid": "ring-row", "data-endpoint": ring.endpoint },
        el("td", {}, index + 1),
        el("td", {}, ring.endpoint),
        el("td", { "data-testid": "ring-version" }, ring.serving_version ? `v${ring.serving_version}` : "nothing"),
        el("td", { "data-testid": "ring-state", className: RING_STATE_CLASS[ring.state] || "" }, ring.state),
      ),
    );
    return el(
      "table",
      { "data-testid": "rings" },
      el("thead", {}, el("tr", {}, ["ring", "endpoint", "serving", "state"].map((h) => el("th", {}, h)))),
      el("tbody", {}, rows),
    );
  }

  function approvalFacts(active) {
    if (!active) return "–";
    if (active.approval) {
      const a = active.approval;
      return `${a.decision} by ${a.approver} at ${when(a.at)}${a.comment ? `: ${a.comment}` : ""}`;
    }
    if (active.status === "awaiting_approval") return `awaiting approval until ${when(active.approval_expires_at)}`;
    return "not asked yet";
  }

  function promotionCard(view) {
    const promotion = view.promotion;
    if (!promotion) {
      // Never promoted yet: the rings alone, what each serves.
      const rings = ringsTable(view.status.rings);
      if (!rings) return null;
      return el("section", { "data-testid": "model-rings", "data-model": view.model }, el("h2", {}, `${view.model}: rings`), rings);
    }
    const active = promotion.active;
    const outcome = promotion.outcome;
    const allowed = available(active, view);
    const buttons = Object.entries(ACTIONS).map(([action, spec]) =>
      el(
        "button",
        {
          type: "button",
          "data-action": action,
          className: ["reject", "rollback"].includes(action) ? "danger" : "",
          disabled: !allowed.has(action),
          onclick: () => ask(action, view, active),
        },
        spec.title,
      ),
    );
    const facts = el(
      "div",
      { className: "facts" },
      el("div", {}, el("span", {}, "promotion"), promotion.id),
      el("div", {}, el("span", {}, "candidate"), active ? `v${active.candidate_version}` : outcome ? `v${outcome.candidate_version}` : "–"),
      el("div", { "data-testid": "promotion-status" }, el("span", {}, "status"), active ? active.status : outcome ? outcome.outcome : "–"),
      el("div", { "data-testid": "promotion-step" }, el("span", {}, "step"), active ? active.step : "–"),
      el("div", { "data-testid": "traffic-weight" }, el("span", {}, "on the candidate"), active ? share(active) : "–"),
      el("div", { "data-testid": "approval" }, el("span", {}, "approval"), approvalFacts(active)),
      active && active.paused ? el("div", {}, el("span", {}, "paused by"), `${active.paused_by}: ${active.pause_reason}`) : null,
      outcome ? el("div", {}, el("span", {}, "ended"), `${outcome.outcome}: ${outcome.reason}`) : null,
    );
    const charts = el("div", { className: "charts" }, trafficChart(promotion.traffic, view.status.rings), evidenceCharts(promotion.evidence));
    const shadow = shadowFacts(view.status.shadow);
    const rings = ringsTable(view.status.rings);
    return el(
      "section",
      { className: "promotion", "data-testid": "promotion", "data-model": view.model, "data-promotion": promotion.id },
      el("h2", {}, `${view.model}: ${active ? "active promotion" : "last promotion"}`),
      facts,
      el("div", { className: "actions" }, buttons),
      shadow ? [el("h3", {}, "Shadow stage"), shadow] : null,
      rings ? [el("h3", {}, "Rings"), rings] : null,
      el("h3", {}, "Traffic and gate evidence"),
      charts,
      promotion.evidence.length ? evidenceTable(promotion.evidence) : el("p", { className: "hint" }, "no gate has decided yet"),
      el("h3", {}, "Audit trail (newest first)"),
      promotion.audit_complete
        ? null
        : el(
            "p",
            { className: "hint", "data-testid": "audit-truncated" },
            `truncated: the newest ${promotion.audit.length} records; the whole trail is at ` +
              `GET /api/models/${view.model}/audit?promotion=${promotion.id}`,
          ),
      auditTable(promotion.audit),
    );
  }

  function runRows(models) {
    const rows = [];
    for (const view of models) {
      const retrain = view.status.retrain || {};
      if (retrain.current_job) {
        const job = retrain.current_job;
        rows.push(el("tr", {}, el("td", {}, view.model), el("td", {}, job.run_id), el("td", {}, job.status || "running"), el("td", {}, ""), el("td", {}, ""), el("td", {}, "")));
      }
      for (const run of (retrain.runs || []).slice().reverse()) {
        rows.push(
          el(
            "tr",
            {},
            el("td", {}, view.model),
            el("td", {}, run.run_id),
            el("td", { className: run.status === "failed" ? "fail" : "" }, run.status),
            el("td", {}, run.registered_version ? `v${run.registered_version}` : ""),
            el("td", {}, when(run.ended_at)),
            el("td", { className: "detail" }, run.error || ""),
          ),
        );
      }
    }
    return rows;
  }

  function render(state) {
    signInMode = state.sign_in.mode;
    showIdentity();
    if (signInMode === "app-service" && !readAppServiceSession) {
      // Signed in already (an earlier visit, or a sign-in in this tab): show who.
      readAppServiceSession = true;
      bearer().then(showIdentity, () => {});
    }
    document.querySelector("#models tbody").replaceChildren(...state.models.map(modelRow));
    document
      .getElementById("promotions")
      .replaceChildren(...state.models.map(promotionCard).filter(Boolean));
    document.querySelector("#runs tbody").replaceChildren(...runRows(state.models));
    document.querySelector("#dead-letters tbody").replaceChildren(
      ...state.dead_letters.map((d) =>
        el("tr", {}, el("td", {}, when(d.dead_lettered_at)), el("td", {}, d.source), el("td", { className: "detail" }, d.reason), el("td", {}, d.replayed_at ? when(d.replayed_at) : "")),
      ),
    );
  }

  async function poll() {
    const freshness = document.getElementById("freshness");
    try {
      const response = await fetch(`${apiBase}/dashboard/state`, { headers: headers() });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const state = await response.json();
      lastState = state;
      // Redraw only what changed (the traffic series' last point is "now" while active).
      const fingerprint = JSON.stringify([state.models.map((m) => [m.status, m.promotion && [m.promotion.audit.length, m.promotion.audit[m.promotion.audit.length - 1]]]), state.dead_letters]);
      if (fingerprint !== lastRendered && !document.getElementById("action-dialog").open) {
        render(state);
        lastRendered = fingerprint;
      }
      freshness.textContent = `updated ${new Date().toLocaleTimeString(undefined, { hour12: false })}`;
      freshness.classList.remove("stale");
    } catch (error) {
      freshness.textContent = `cannot read the state: ${error.message}`;
      freshness.classList.add("stale");
    }
  }

  document.getElementById("local-sign-in").addEventListener("submit", localSignIn);
  document.getElementById("sign-out").addEventListener("click", signOut);
  document.getElementById("app-service-sign-in").addEventListener("click", appServiceSignIn);
  document.getElementById("action-form").addEventListener("submit", (event) => {
    const confirmed = event.submitter && event.submitter.value === "confirm";
    if (confirmed) send();
  });
  window.dashboardState = () => lastState; // for a test or a curious person in the console
  poll();
  setInterval(poll, POLL_MS);
})();
