// Vireo's web console: a client of the public REST API (/v1/...) and its event stream, nothing
// else. Pages are rendered from API answers with DOM calls (never HTML built from data), refreshed
// when an event says something changed and every few seconds for measured values.
"use strict";
(() => {
  const TOKEN_KEY = "vireo-token";
  const REFRESH_MS = 5000;

  // ---------------------------------------------------------------- DOM helpers

  /** h("td", {class: "num"}, "3") makes an element; null children are skipped. */
  function h(tag, attributes, ...children) {
    const element = document.createElement(tag);
    for (const [key, value] of Object.entries(attributes || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key.startsWith("on")) element.addEventListener(key.slice(2), value);
      else if (key === "class") element.className = value;
      else if (key === "dataset") Object.assign(element.dataset, value);
      else element.setAttribute(key, value === true ? "" : value);
    }
    append(element, children);
    return element;
  }

  function append(element, children) {
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      element.append(child instanceof Node ? child : String(child));
    }
  }

  /** A section titled by its heading, which names it for assistive technology. */
  function panel(id, title, ...children) {
    return h("section", { class: "panel", "aria-labelledby": id }, h("h2", { id }, title), children);
  }

  function badge(state) {
    return h("span", { class: "badge " + String(state || "unknown").replace(/[^a-z-]/gi, "") }, state || "unknown");
  }

  function table(headers, rows, empty) {
    if (rows.length === 0) return h("p", { class: "muted" }, empty);
    return h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        {},
        h("thead", {}, h("tr", {}, headers.map((c) => h("th", { scope: "col", class: c.class }, c.label)))),
        h("tbody", {}, rows)
      )
    );
  }

  function facts(pairs) {
    return h(
      "dl",
      { class: "facts" },
      pairs.filter((p) => p[1] !== null && p[1] !== undefined && p[1] !== "").map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])
    );
  }

  /** A meter; a use (CPU, memory) turns amber from 80% and red from 95%, what is left (`left`) when low. */
  function bar(fraction, label, left = false) {
    const f = Math.max(0, Math.min(1, fraction || 0));
    const use = left ? 1 - f : f;
    return h(
      "div",
      {
        class: "bar" + (left ? " left" : "") + (use >= 0.95 ? " full" : use >= 0.8 ? " high" : ""),
        role: "meter",
        "aria-label": label,
        "aria-valuemin": "0",
        "aria-valuemax": "100",
        "aria-valuenow": String(Math.round(f * 100)),
      },
      h("span", { style: `width:${(f * 100).toFixed(1)}%` })
    );
  }

  const link = (href, text) => h("a", { href }, text);
  const vmLink = (name) => link("#/vms/" + encodeURIComponent(name), name);
  const appLink = (name) => link("#/apps/" + encodeURIComponent(name), name);

  // ---------------------------------------------------------------- formatting

  function time(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    return h("time", { datetime: iso, title: d.toLocaleString() }, d.toLocaleTimeString());
  }
  function ago(iso) {
    if (!iso) return "";
    const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
    if (s < 90) return `${Math.round(s)} s ago`;
    if (s < 5400) return `${Math.round(s / 60)} min ago`;
    if (s < 172800) return `${Math.round(s / 3600)} h ago`;
    return `${Math.round(s / 86400)} d ago`;
  }
  const mib = (m) => (m >= 1024 ? `${(m / 1024).toFixed(m % 1024 === 0 ? 0 : 1)} GiB` : `${m} MiB`);
  function bytes(b) {
    if (b === null || b === undefined) return "";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (b >= 1024 && i < units.length - 1) { b /= 1024; i++; }
    return `${b.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
  }
  const percent = (f, digits = 0) => (f === null || f === undefined ? "" : `${(f * 100).toFixed(digits)}%`);
  function duration(seconds) {
    if (seconds < 120) return `${+seconds.toFixed(1)} s`;
    if (seconds < 7200) return `${+(seconds / 60).toFixed(1)} min`;
    if (seconds < 172800) return `${+(seconds / 3600).toFixed(1)} h`;
    return `${+(seconds / 86400).toFixed(1)} d`;
  }

  /** What an objective's indicator means, by kind: its unit and whether the target is a most or a least. */
  const KINDS = {
    "response-time": { most: true, unit: "s", show: (v) => (v < 1 ? `${+(v * 1000).toPrecision(3)} ms` : `${+v.toPrecision(3)} s`) },
    throughput: { most: false, unit: "/s", show: (v) => `${+v.toPrecision(4)}/s` },
    capacity: { most: true, unit: "", show: (v) => `${+v.toPrecision(4)}` },
    ratio: { most: false, unit: "", show: (v) => `${+(v * 100).toPrecision(4)}%` },
  };
  const kindOf = (k) => KINDS[k] || KINDS.capacity;
  const sliText = (o, v) => (v === null || v === undefined ? "no data" : kindOf(o.kind).show(v));

  /** A structured reason from the API ({"insufficientCPU": {"requested": 4, "free": 2}}) as words. */
  function reasonText(reason) {
    if (!reason || typeof reason !== "object") return String(reason ?? "");
    const [kind, detail] = Object.entries(reason)[0] || ["", {}];
    const words = kind.replace(/([A-Z])/g, " $1").toLowerCase();
    const parts = Object.entries(detail || {}).map(([k, v]) => `${k} ${typeof v === "number" ? +v.toPrecision(3) : JSON.stringify(v)}`);
    return parts.length ? `${words}: ${parts.join(", ")}` : words;
  }

  // ---------------------------------------------------------------- the API

  class APIError extends Error {
    constructor(status, code, message, requestId) {
      super(message);
      this.status = status;
      this.code = code;
      this.requestId = requestId;
    }
  }

  let token = sessionStorage.getItem(TOKEN_KEY) || "";

  function authHeaders() {
    return token ? { Authorization: "Bearer " + token } : {};
  }

  /** Calls the API; an error answer becomes an APIError carrying the envelope's code, message and request ID. */
  async function api(method, path, body) {
    const headers = { Accept: "application/json", ...authHeaders() };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (error) {
      throw new APIError(0, "unreachable", `The controller did not answer ${method} ${path}: ${error.message}`);
    }
    const text = await response.text();
    if (!response.ok) {
      let envelope = null;
      try { envelope = JSON.parse(text).error; } catch (_) { /* not an envelope */ }
      const error = new APIError(
        response.status,
        envelope?.code || `http-${response.status}`,
        envelope?.message || `HTTP ${response.status} from ${method} ${path}`,
        envelope?.requestId
      );
      if (response.status === 401) needLogin(error);
      throw error;
    }
    return (response.headers.get("content-type") || "").includes("json") ? JSON.parse(text) : text;
  }
  const get = (path) => api("GET", path);

  /** Every VM, following the pages of GET /v1/vms. */
  async function allVMs() {
    const items = [];
    let after = null;
    do {
      const page = await get("/v1/vms?limit=1000" + (after ? "&after=" + encodeURIComponent(after) : ""));
      items.push(...page.items);
      after = page.next;
    } while (after);
    return items;
  }

  // ---------------------------------------------------------------- errors and login

  const alerts = document.getElementById("alerts");

  /** Shows an error from the API's envelope (or any error) until dismissed; never a blank page. */
  function showError(error, context) {
    const message = (context ? context + ": " : "") + (error && error.message ? error.message : String(error));
    for (const existing of alerts.querySelectorAll(".alert p")) if (existing.dataset.message === message) return;
    const note = h(
      "div",
      { class: "alert" },
      h(
        "p",
        { dataset: { message, code: error?.code || "" } },
        message,
        error?.requestId ? [" ", h("code", {}, `request ${error.requestId}`)] : null
      ),
      h("button", { type: "button", "aria-label": "Dismiss", onclick: () => note.remove() }, "×")
    );
    alerts.append(note);
  }

  function clearErrors() {
    alerts.replaceChildren();
  }

  let loginShown = false;
  function needLogin(error) {
    if (loginShown) return;
    loginShown = true;
    stopPage();
    const input = h("input", { type: "password", id: "token", name: "token", autocomplete: "current-password", required: true });
    const main = document.getElementById("main");
    main.replaceChildren(
      h(
        "section",
        { class: "panel login" },
        h("h1", {}, "Sign in"),
        h("p", {}, error.message),
        h("p", { class: "muted small" }, "Beyond loopback the API asks for a token (vireo token list, or the admin.token file in the controller's data directory)."),
        h(
          "form",
          {
            onsubmit: (event) => {
              event.preventDefault();
              token = input.value.trim();
              sessionStorage.setItem(TOKEN_KEY, token);
              loginShown = false;
              clearErrors();
              events.restart();
              route();
            },
          },
          h("label", { for: "token" }, "API token", input),
          h("button", { class: "primary", type: "submit" }, "Sign in")
        )
      )
    );
    input.focus();
  }

  // ---------------------------------------------------------------- live events

  /** GET /v1/events over fetch (an EventSource cannot send the token), parsed as server-sent events. */
  const events = {
    recent: [],
    lastSeq: 0,
    listeners: new Set(),
    controller: null,
    status: document.getElementById("live"),

    async start() {
      try {
        const old = await api("GET", "/v1/events?follow=false");
        for (const e of parseFrames(old).events) this.note(e, false);
        if (current && current.onEvent) current.onEvent(null);
      } catch (error) {
        if (error.status !== 401) this.setStatus(false, "events unavailable");
        if (error.status === 401) return;
      }
      this.follow();
    },

    async follow() {
      const controller = new AbortController();
      this.controller = controller;
      try {
        const response = await fetch(`/v1/events?after=${this.lastSeq}`, { headers: authHeaders(), signal: controller.signal });
        if (!response.ok) throw new Error(`HTTP ${response.status}`);
        this.setStatus(true, "live");
        const reader = response.body.getReader();
        const decoder = new TextDecoder();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += decoder.decode(value, { stream: true });
          const parsed = parseFrames(buffer);
          buffer = parsed.rest;
          for (const e of parsed.events) this.note(e, true);
        }
      } catch (error) {
        if (controller.signal.aborted) return;
      }
      if (this.controller !== controller) return;
      this.setStatus(false, "reconnecting");
      setTimeout(() => { if (this.controller === controller) this.follow(); }, 2000);
    },

    restart() {
      if (this.controller) this.controller.abort();
      this.controller = null;
      this.follow();
    },

    note(event, live) {
      if (event.seq <= this.lastSeq) return;
      this.lastSeq = event.seq;
      this.recent.unshift(event);
      if (this.recent.length > 200) this.recent.length = 200;
      if (live) for (const listener of this.listeners) listener(event);
    },

    setStatus(on, text) {
      this.status.className = "live " + (on ? "on" : "off");
      this.status.textContent = text;
    },
  };

  /** Splits server-sent event text into events (JSON data) and what is left of an unfinished frame. */
  function parseFrames(text) {
    const frames = text.split("\n\n");
    const rest = frames.pop();
    const parsed = [];
    for (const frame of frames) {
      const data = frame.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
      if (!data) continue;
      try { parsed.push(JSON.parse(data)); } catch (_) { /* a malformed frame is skipped */ }
    }
    return { events: parsed, rest };
  }

  function eventList(list) {
    if (list.length === 0) return h("p", { class: "muted" }, "No events yet.");
    return h(
      "ol",
      { class: "events", "aria-label": "Latest events" },
      list.map((e) =>
        h(
          "li",
          { dataset: { seq: e.seq, kind: e.kind } },
          time(e.time),
          h("span", { class: "kind muted" }, e.kind),
          h("span", {}, eventTarget(e), e.from || e.to ? ` ${e.from || "·"} → ${e.to || "·"}` : "", e.message ? h("span", { class: "muted" }, " — " + e.message) : null)
        )
      )
    );
  }

  function eventTarget(e) {
    if (e.kind.startsWith("vm.") || e.kind === "migration") return e.kind === "vm.deleted" ? e.name : vmLink(e.name);
    if (e.kind === "app") return appLink(e.name);
    if (e.kind === "slo") return appLink(e.name.split("/")[0]);
    if (e.kind === "plan") return link("#/plans/" + encodeURIComponent(e.name), e.name);
    return e.name;
  }

  // ---------------------------------------------------------------- pages

  /**
   * A page is { title, node, update(), dispose() }: `node` is built once (so forms keep what is
   * typed), `update` fetches and redraws the parts that show data.
   */
  let current = null;
  let refreshTimer = null;
  let pendingRefresh = null;

  function stopPage() {
    if (refreshTimer) clearInterval(refreshTimer);
    refreshTimer = null;
    if (current && current.dispose) current.dispose();
    current = null;
  }

  async function refresh() {
    const page = current;
    if (!page) return;
    try {
      await page.update();
    } catch (error) {
      if (page === current && error.status !== 401) showError(error);
    }
  }

  function refreshSoon() {
    if (pendingRefresh) return;
    pendingRefresh = setTimeout(() => { pendingRefresh = null; refresh(); }, 250);
  }

  events.listeners.add((event) => {
    if (current && current.onEvent) current.onEvent(event);
    if (current && (!current.relevant || current.relevant(event))) refreshSoon();
  });

  /** A region that is redrawn only when what it shows changed, so focus and scrolling survive refreshes. */
  function region(attributes) {
    const node = h("div", attributes || {});
    let last = null;
    node.show = (key, build) => {
      const text = JSON.stringify(key);
      if (text === last) return;
      last = text;
      node.replaceChildren();
      append(node, [build()]);
    };
    return node;
  }

  /** A button that runs `work` (after `confirmText` is confirmed, when given); errors name `label` and `target`. */
  function actionButton(label, cls, work, target, confirmText) {
    const b = h("button", { type: "button", class: cls, dataset: { action: label.toLowerCase() } }, label);
    b.addEventListener("click", () => {
      if (confirmText && !window.confirm(confirmText)) return;
      act(b, work, `${label} ${target}`);
    });
    return b;
  }

  async function act(button, work, context) {
    button.disabled = true;
    try {
      await work();
      clearErrors();
      refreshSoon();
    } catch (error) {
      if (error.status !== 401) showError(error, context);
    } finally {
      button.disabled = false;
    }
  }

  // ---- Overview

  function overviewPage() {
    const hostsRegion = region();
    const vmsRegion = region();
    const appsRegion = region();
    const contextsRegion = region();
    const eventsRegion = region();
    const node = h(
      "div",
      {},
      h("h1", {}, "Overview"),
      panel("o-hosts", "Hosts", hostsRegion),
      h(
        "div",
        { class: "grid" },
        panel("o-vms", "VMs by state", vmsRegion),
        panel("o-apps", "Applications by SLO state", appsRegion),
        panel("o-contexts", "Contexts", contextsRegion)
      ),
      panel("o-events", "Latest events", eventsRegion)
    );
    const showEvents = () => eventsRegion.show(events.recent.slice(0, 30).map((e) => e.seq), () => eventList(events.recent.slice(0, 30)));
    return {
      title: "Overview",
      node,
      onEvent: showEvents,
      async update() {
        const [hosts, vms, apps, contexts] = await Promise.all([
          get("/v1/hosts"),
          allVMs(),
          get("/v1/apps"),
          get("/v1/contexts").catch(() => ({ items: [] })),
        ]);
        hostsRegion.show(hosts, () => (hosts.items.length === 0 ? h("p", { class: "muted" }, "No host has joined yet.") : h("div", { class: "grid" }, hosts.items.map(hostCard))));
        vmsRegion.show(countBy(vms, "state"), () => counts(countBy(vms, "state"), (s) => "#/vms?state=" + s, "No VMs."));
        appsRegion.show(countBy(apps.items, "state"), () => [
          counts(countBy(apps.items, "state"), (s) => "#/apps?state=" + s, "No applications."),
          apps.items.filter((a) => a.state === "breaching" || a.state === "warning").length
            ? h("p", { class: "small" }, "Needing attention: ", apps.items.filter((a) => a.state === "breaching" || a.state === "warning").map((a, i) => [i ? ", " : "", appLink(a.name)]))
            : null,
        ]);
        contextsRegion.show(countBy(contexts.items, "state"), () => counts(countBy(contexts.items, "state"), () => "#/contexts", "No contexts open."));
        showEvents();
      },
    };
  }

  function countBy(items, key) {
    const result = {};
    for (const item of items) result[item[key]] = (result[item[key]] || 0) + 1;
    return result;
  }

  function counts(table, href, empty) {
    const entries = Object.entries(table).sort();
    if (entries.length === 0) return h("p", { class: "muted" }, empty);
    return h("ul", { class: "counts" }, entries.map(([state, n]) => h("li", { dataset: { state } }, h("a", { href: href(state) }, h("strong", {}, n), badge(state)))));
  }

  function hostCard(host) {
    return h(
      "article",
      { class: "card", dataset: { host: host.name } },
      h("h3", {}, host.name, " ", badge(host.state)),
      h("p", { class: "small muted" }, `${host.attributes?.hypervisor || host.driver} · ${host.vms} VM${host.vms === 1 ? "" : "s"}${host.address ? " · " + host.address : ""}`),
      h("div", { class: "small" }, `CPU allocated ${host.allocatedCPUs} of ${host.cpus}`),
      bar(host.allocatedCPUs / host.cpus, `CPU allocated on ${host.name}`),
      host.cpuLoad !== undefined && host.cpuLoad !== null ? [h("div", { class: "small" }, `CPU load ${percent(host.cpuLoad)}`), bar(host.cpuLoad, `CPU load on ${host.name}`)] : null,
      h("div", { class: "small" }, `Memory allocated ${mib(host.allocatedMemoryMiB)} of ${mib(host.memoryMiB)}`),
      bar(host.allocatedMemoryMiB / host.memoryMiB, `Memory allocated on ${host.name}`)
    );
  }

  function filterInput(id, label, value, onInput) {
    const input = h("input", { type: "search", id, value: value || "", placeholder: "name, state, …", oninput: onInput });
    return { input, node: h("label", { for: id }, label, input) };
  }

  const matches = (query, ...fields) => !query || fields.some((f) => String(f ?? "").toLowerCase().includes(query.toLowerCase()));

  // ---- Hosts

  function hostsPage(_, query) {
    const list = region();
    let hosts = [];
    const filter = filterInput("host-filter", "Filter", query.get("q"), () => draw());
    const draw = () =>
      list.show([hosts, filter.input.value], () =>
        table(
          [
            { label: "Host" }, { label: "State" }, { label: "Hypervisor" }, { label: "CPUs (allocated)", class: "num" },
            { label: "Memory (allocated)", class: "num" }, { label: "CPU load", class: "num optional" }, { label: "VMs", class: "num" },
            { label: "Last heartbeat", class: "optional" },
          ],
          hosts
            .filter((x) => matches(filter.input.value, x.name, x.state, x.driver, x.attributes?.hypervisor))
            .map((x) =>
              h(
                "tr",
                { dataset: { host: x.name } },
                h("td", {}, link("#/vms?q=" + encodeURIComponent(x.name), x.name)),
                h("td", {}, badge(x.state)),
                h("td", {}, x.attributes?.hypervisor || x.driver),
                h("td", { class: "num" }, `${x.allocatedCPUs} / ${x.cpus}`),
                h("td", { class: "num" }, `${mib(x.allocatedMemoryMiB)} / ${mib(x.memoryMiB)}`),
                h("td", { class: "num optional" }, percent(x.cpuLoad)),
                h("td", { class: "num" }, x.vms),
                h("td", { class: "optional" }, ago(x.lastHeartbeatAt))
              )
            ),
          "No hosts match."
        )
      );
    return {
      title: "Hosts",
      node: h("div", {}, h("h1", {}, "Hosts"), h("div", { class: "toolbar" }, filter.node), list),
      relevant: (e) => e.kind.startsWith("host.") || e.kind.startsWith("vm."),
      async update() {
        hosts = (await get("/v1/hosts")).items;
        draw();
      },
    };
  }

  // ---- VMs

  const VM_STATES = ["pending", "scheduled", "starting", "running", "stopping", "stopped", "failed", "deleting"];

  function vmsPage(_, query) {
    const list = region();
    let vms = [];
    const filter = filterInput("vm-filter", "Filter", query.get("q"), () => draw());
    const state = h("select", { id: "vm-state", onchange: () => draw() }, h("option", { value: "" }, "any"), VM_STATES.map((s) => h("option", { value: s, selected: s === query.get("state") }, s)));
    const summary = h("p", { class: "muted small", "aria-live": "polite" });
    const draw = () => {
      const shown = vms.filter((v) => (!state.value || v.state === state.value) && matches(filter.input.value, v.name, v.state, v.host, v.app, v.image, v.address));
      summary.textContent = `${shown.length} of ${vms.length} VMs`;
      list.show([vms, filter.input.value, state.value], () =>
        table(
          [
            { label: "VM" }, { label: "State" }, { label: "Host" }, { label: "Application", class: "optional" },
            { label: "Image", class: "optional" }, { label: "CPUs", class: "num" }, { label: "Memory", class: "num" },
            { label: "Address", class: "optional" },
          ],
          shown.map((v) =>
            h(
              "tr",
              { dataset: { vm: v.name, state: v.state } },
              h("td", {}, vmLink(v.name)),
              h("td", {}, badge(v.state)),
              h("td", {}, v.host || ""),
              h("td", { class: "optional" }, v.app ? appLink(v.app) : ""),
              h("td", { class: "optional" }, v.image),
              h("td", { class: "num" }, v.cpus),
              h("td", { class: "num" }, mib(v.memoryMiB)),
              h("td", { class: "optional" }, v.address || "")
            )
          ),
          vms.length ? "No VMs match." : "No VMs yet: vireo vm create NAME, or apply a manifest."
        )
      );
    };
    return {
      title: "VMs",
      node: h("div", {}, h("h1", {}, "Virtual machines"), h("div", { class: "toolbar" }, filter.node, h("label", { for: "vm-state" }, "State", state)), summary, list),
      relevant: (e) => e.kind.startsWith("vm.") || e.kind === "migration",
      async update() {
        vms = await allVMs();
        draw();
      },
    };
  }

  function vmPage([name]) {
    const head = region({ class: "panel" });
    const placement = region();
    const migrations = region();
    const progress = region();
    const hostSelect = h("select", { id: "migrate-to" });
    const log = h("pre", { class: "log", tabindex: "0", "aria-label": "Serial console log" });
    let logPosition = null;
    let logTimer = null;
    let vm = null;
    const path = "/v1/vms/" + encodeURIComponent(name);

    const button = (label, cls, work, confirmText) => actionButton(label, cls, work, name, confirmText);
    const moveButton = button("Migrate", "", async () => {
      if (!hostSelect.value) throw new Error("Choose a host to move to.");
      await api("POST", path + "/migrate", { to: hostSelect.value });
    });
    const actions = h(
      "div",
      { class: "actions" },
      button("Start", "", () => api("POST", path + "/start")),
      button("Stop", "", () => api("POST", path + "/stop")),
      button("Delete", "danger", async () => {
        await api("DELETE", path);
        location.hash = "#/vms";
      }, `Delete ${name}? Its disk is removed.`),
      h("label", { for: "migrate-to" }, "Move to host", hostSelect),
      moveButton
    );

    async function followLog() {
      try {
        const response = await fetch(path + "/logs" + (logPosition === null ? "?tail=200" : "?after=" + logPosition), { headers: authHeaders() });
        if (response.ok) {
          const text = await response.text();
          const position = response.headers.get("Vireo-Log-Position");
          const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
          if (logPosition === null) log.textContent = text || "(nothing written yet)";
          else if (text) log.textContent = (log.textContent === "(nothing written yet)" ? "" : log.textContent) + text;
          if (log.textContent.length > 200000) log.textContent = log.textContent.slice(-150000);
          if (position !== null) logPosition = position;
          if (atEnd) log.scrollTop = log.scrollHeight;
        } else if (logPosition === null) {
          log.textContent = `(no console log: HTTP ${response.status})`;
        }
      } catch (_) { /* the next round tries again */ }
      logTimer = setTimeout(followLog, 1000);
    }
    followLog();

    return {
      title: name,
      node: h(
        "div",
        {},
        h("h1", {}, h("span", {}, name), h("span", { id: "vm-state-badge" })),
        head,
        panel("vm-actions", "Actions", actions, progress),
        panel("vm-placement", "Why it runs where it runs", placement),
        panel("vm-migrations", "Migrations", migrations),
        panel("vm-log", "Serial console (following)", log)
      ),
      relevant: (e) => e.name === name || e.kind.startsWith("host."),
      dispose() { clearTimeout(logTimer); },
      async update() {
        const [view, hosts, moves] = await Promise.all([get(path), get("/v1/hosts"), get("/v1/migrations?vm=" + encodeURIComponent(name) + "&limit=50")]);
        vm = view;
        const stateBadge = document.getElementById("vm-state-badge");
        if (stateBadge) stateBadge.replaceChildren(badge(vm.state));
        head.show(vm, () =>
          facts([
            ["State", [badge(vm.state), vm.intent && vm.intent !== vm.state ? h("span", { class: "muted" }, ` (asked: ${vm.intent})`) : null]],
            ["Host", vm.host || "none yet"],
            ["Address", vm.address],
            ["Application", vm.app ? appLink(vm.app) : null],
            ["Image", vm.image],
            ["Size", `${vm.cpus} CPU${vm.cpus === 1 ? "" : "s"}, ${mib(vm.memoryMiB)}${vm.diskMiB ? ", disk " + mib(vm.diskMiB) : ""}`],
            ["Message", vm.message],
            ["Last boot", vm.lastBootMs ? `${vm.lastBootMs} ms` : null],
            ["Created", time(vm.createdAt)],
            ["State since", [time(vm.stateChangedAt), " (", ago(vm.stateChangedAt), ")"]],
          ])
        );
        const others = hosts.items.filter((x) => x.name !== vm.host && x.state === "ready").map((x) => x.name);
        if (JSON.stringify(others) !== hostSelect.dataset.hosts) {
          const chosen = hostSelect.value;
          hostSelect.dataset.hosts = JSON.stringify(others);
          hostSelect.replaceChildren();
          append(hostSelect, [h("option", { value: "" }, others.length ? "choose…" : "no other host"), others.map((n) => h("option", { value: n, selected: n === chosen }, n))]);
        }
        moveButton.disabled = others.length === 0 || vm.state !== "running";
        const active = moves.items.find((m) => m.state !== "completed" && m.state !== "failed");
        progress.show(active || null, () => (active ? migrationProgress(active) : []));
        placement.show(vm.placement || null, () => placementView(vm.placement));
        migrations.show(moves.items, () => migrationTable(moves.items, false));
        // While a move runs its progress is asked for every second, not every five.
        if (active) setTimeout(refreshSoon, 1000);
      },
    };
  }

  function migrationProgress(m) {
    const p = m.progress;
    const total = p ? p.totalBytes + (p.storageTotalBytes || 0) : 0;
    const done = p ? p.transferredBytes + (p.storageCopiedBytes || 0) : 0;
    const fraction = total ? Math.min(1, done / total) : 0;
    return h(
      "div",
      { class: "small", dataset: { migration: m.id } },
      h("p", {}, `Moving to ${m.destination} (${m.kind}, ${m.state}): ${bytes(done)} of ${total ? bytes(total) : "?"} sent`),
      h("progress", { max: "100", value: String(Math.round(fraction * 100)), "aria-label": `Migration of ${m.vm}` })
    );
  }

  function placementView(p) {
    if (!p) return h("p", { class: "muted" }, "No placement recorded.");
    const omitted = Object.entries(p.omitted || {});
    return [
      h("p", {}, `Placed on ${p.chosenHost || "no host"} `, time(p.decidedAt), "."),
      table(
        [{ label: "Host" }, { label: "Verdict" }, { label: "Score", class: "num" }],
        p.verdicts.map((v) =>
          h(
            "tr",
            { dataset: { host: v.hostName } },
            h("td", {}, v.hostName, v.hostName === p.chosenHost ? h("strong", {}, " (chosen)") : ""),
            h("td", {}, v.filtered ? "refused: " + reasonText(v.filtered) : v.summary || "passed every filter"),
            h("td", { class: "num" }, v.score ? v.score.total.toFixed(3) : "")
          )
        ),
        "No verdicts."
      ),
      omitted.length ? h("p", { class: "small muted" }, "Not listed: " + omitted.map(([k, n]) => `${n} ${k}`).join(", ")) : null,
    ];
  }

  function migrationTable(items, withVM) {
    return table(
      [
        withVM ? { label: "VM" } : null, { label: "From → to" }, { label: "Kind" }, { label: "State" }, { label: "Requested" },
        { label: "Downtime", class: "num" }, { label: "Total", class: "num" }, { label: "Why", class: "optional" },
      ].filter(Boolean),
      items.map((m) =>
        h(
          "tr",
          { dataset: { migration: m.id } },
          withVM ? h("td", {}, vmLink(m.vm)) : null,
          h("td", {}, `${m.source} → ${m.destination}`),
          h("td", {}, `${m.kind}${m.storage === "copy" ? ", disk copied" : ""}`),
          h("td", {}, badge(m.state), m.message ? h("div", { class: "small muted" }, m.message) : null),
          h("td", {}, time(m.requestedAt)),
          h("td", { class: "num" }, m.stats ? `${m.stats.downtimeMs} ms` : ""),
          h("td", { class: "num" }, m.stats ? `${(m.stats.totalTimeMs / 1000).toFixed(1)} s` : ""),
          h("td", { class: "optional small" }, m.reason)
        )
      ),
      "No migrations."
    );
  }

  // ---- Applications

  function appsPage(_, query) {
    const list = region();
    let apps = [];
    const filter = filterInput("app-filter", "Filter", query.get("q") || query.get("state"), () => draw());
    const draw = () =>
      list.show([apps, filter.input.value], () =>
        table(
          [{ label: "Application" }, { label: "SLO state" }, { label: "Objectives", class: "num" }, { label: "VMs", class: "num" }, { label: "Worst objective", class: "optional" }, { label: "Last error", class: "optional" }],
          apps
            .filter((a) => matches(filter.input.value, a.name, a.state))
            .map((a) => {
              const worst = [...a.objectives].sort((x, y) => x.errorBudgetRemaining - y.errorBudgetRemaining)[0];
              return h(
                "tr",
                { dataset: { app: a.name, state: a.state } },
                h("td", {}, appLink(a.name)),
                h("td", {}, badge(a.state)),
                h("td", { class: "num" }, a.objectives.length),
                h("td", { class: "num" }, a.vms.length),
                h("td", { class: "optional" }, worst ? `${worst.name}: ${percent(worst.errorBudgetRemaining)} of budget left` : ""),
                h("td", { class: "optional small" }, a.lastError || "")
              );
            }),
          apps.length ? "No applications match." : "No applications yet: vireo apply -f MANIFEST."
        )
      );
    return {
      title: "Applications",
      node: h("div", {}, h("h1", {}, "Applications"), h("div", { class: "toolbar" }, filter.node), list),
      relevant: (e) => e.kind === "app" || e.kind === "slo",
      async update() {
        apps = (await get("/v1/apps")).items;
        draw();
      },
    };
  }

  const RANGES = [["15m", 900], ["1h", 3600], ["6h", 21600], ["24h", 86400], ["7d", 604800]];

  function appPage([name]) {
    const head = region({ class: "panel" });
    const objectivesNode = h("div", { class: "wide-grid" });
    const touched = region();
    const range = h("select", { id: "range", onchange: () => { charts.clear(); refreshSoon(); } }, RANGES.map(([label]) => h("option", { value: label, selected: label === "15m" }, label)));
    const charts = new Map();
    const cards = new Map();
    const path = "/v1/apps/" + encodeURIComponent(name);

    function objectiveCard(o) {
      let card = cards.get(o.name);
      if (!card) {
        const figures = region({ class: "figures" });
        const chartBox = h("div", { class: "chart" }, h("canvas", { role: "img", "aria-label": `${o.name} against its target over time` }));
        const node = h("article", { class: "card objective", dataset: { objective: o.name } }, h("h3", {}, o.name, " ", h("span", { class: "state" })), figures, h("figure", { class: "chart-figure", dataset: { points: "0" } }, chartBox, h("figcaption", { class: "small muted" })));
        card = { node, figures, chartBox };
        cards.set(o.name, card);
        objectivesNode.append(node);
      }
      card.node.querySelector(".state").replaceChildren(badge(o.state));
      const meaning = kindOf(o.kind);
      card.figures.show(o, () => [
        h("span", {}, `${o.kind}: ${meaning.most ? "at most" : "at least"} ${sliText(o, o.target)}`),
        h("span", {}, "last window ", h("strong", {}, sliText(o, o.sli))),
        h("span", {}, `windows ${o.goodWindows} good, ${o.badWindows} bad, ${o.emptyWindows} without data`),
        h("span", {}, "burn rates ", o.burnRates.map((b, i) => [i ? ", " : "", `${duration(b.lookbackSeconds)}: ${b.rate.toFixed(2)}`])),
        h("div", { class: "budget" }, `error budget left ${percent(o.errorBudgetRemaining, 1)}`, bar(o.errorBudgetRemaining, `Error budget left for ${o.name}`, true)),
      ]);
      return card;
    }

    async function drawChart(o, card, from, to) {
      const answer = await get(`${path}/series?objective=${encodeURIComponent(o.name)}&from=${from}&to=${to}`);
      const points = (answer.series[0]?.points || []).map((p) => ({ x: Date.parse(p.t), y: p.v }));
      const figure = card.node.querySelector("figure");
      figure.dataset.points = String(points.length);
      figure.querySelector("figcaption").textContent = `${points.length} window${points.length === 1 ? "" : "s"} with data; dashed: the target`;
      if (typeof Chart === "undefined") {
        card.chartBox.replaceChildren(h("p", { class: "muted small" }, "Charts need Debian's libjs-chart.js on the controller. Last windows: " + points.slice(-5).map((p) => sliText(o, p.y)).join(", ")));
        return;
      }
      const target = [{ x: from * 1000, y: o.target }, { x: to * 1000, y: o.target }];
      let chart = charts.get(o.name);
      if (!chart) {
        chart = new Chart(card.chartBox.querySelector("canvas"), {
          type: "line",
          data: {
            datasets: [
              { label: o.name, data: points, borderColor: "#1f5fbf", backgroundColor: "#1f5fbf", pointRadius: 1.5, borderWidth: 1.5, spanGaps: false },
              { label: "target", data: target, borderColor: "#b3261e", borderDash: [6, 4], pointRadius: 0, borderWidth: 1.5 },
            ],
          },
          options: {
            animation: false,
            parsing: false,
            maintainAspectRatio: false,
            plugins: { legend: { display: false }, tooltip: { callbacks: { label: (c) => sliText(o, c.parsed.y) } } },
            scales: {
              x: { type: "linear", min: from * 1000, max: to * 1000, ticks: { maxTicksLimit: 6, callback: (v) => new Date(v).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) } },
              y: { beginAtZero: true, ticks: { callback: (v) => sliText(o, v) } },
            },
          },
        });
        charts.set(o.name, chart);
      } else {
        chart.data.datasets[0].data = points;
        chart.data.datasets[1].data = target;
        chart.options.scales.x.min = from * 1000;
        chart.options.scales.x.max = to * 1000;
        chart.update("none");
      }
    }

    return {
      title: name,
      node: h(
        "div",
        {},
        h("h1", {}, h("span", {}, name), h("span", { id: "app-state-badge" })),
        head,
        h("div", { class: "toolbar" }, h("label", { for: "range" }, "Charts over", range)),
        h("section", { class: "objectives", "aria-label": "Objectives" }, objectivesNode),
        panel("app-touched", "Plans and migrations that touched it", touched)
      ),
      dispose() { for (const chart of charts.values()) chart.destroy(); },
      async update() {
        const app = await get(path);
        const badgeNode = document.getElementById("app-state-badge");
        if (badgeNode) badgeNode.replaceChildren(badge(app.state));
        head.show([app.vms, app.lastError, app.lastSampleAt, app.state], () =>
          facts([
            ["SLO state", badge(app.state)],
            ["VMs", app.vms.length ? app.vms.map((v, i) => [i ? ", " : "", vmLink(v.name), " ", badge(v.state), v.host ? ` on ${v.host}` : ""]) : "none"],
            ["Last sample", app.lastSampleAt ? [time(app.lastSampleAt), ` (${ago(app.lastSampleAt)})`] : "none yet"],
            ["Last error", app.lastError],
          ])
        );
        const seconds = RANGES.find(([label]) => label === range.value)[1];
        const to = Math.floor(Date.now() / 1000);
        const from = to - seconds;
        for (const name of [...cards.keys()]) if (!app.objectives.some((o) => o.name === name)) { cards.get(name).node.remove(); cards.delete(name); }
        await Promise.all(app.objectives.map((o) => drawChart(o, objectiveCard(o), from, to)));
        if (app.objectives.length === 0) objectivesNode.replaceChildren(h("p", { class: "muted" }, "No objectives."));
        const vmNames = new Set(app.vms.map((v) => v.name));
        const [moves, plans] = await Promise.all([get("/v1/migrations?limit=1000"), get("/v1/plans?limit=100")]);
        const ownMoves = moves.items.filter((m) => vmNames.has(m.vm));
        const ownPlans = plans.items.filter((p) => p.actions.some((a) => a.application === name || vmNames.has(a.vm)));
        touched.show([ownMoves, ownPlans], () => [
          h("h3", {}, "Plans"),
          ownPlans.length === 0
            ? h("p", { class: "muted" }, "No executed plan moved its VMs.")
            : ownPlans.map((p) => h("div", { class: "explanation" }, link("#/plans/" + encodeURIComponent(p.id), p.id), " ", badge(p.state), " ", time(p.createdAt), h("ul", {}, p.actions.filter((a) => a.application === name || vmNames.has(a.vm)).map((a) => h("li", {}, `${a.vm}: ${a.from} → ${a.to} — ${a.explanation}`))))),
          h("h3", {}, "Migrations"),
          migrationTable(ownMoves, true),
        ]);
      },
    };
  }

  // ---- Plans

  const POLICIES = ["slo", "threshold", "thr-mmt-0.8", "iqr-mmt-1.5", "mad-mmt-2.5", "lr-mmt-1.2", "lrr-mmt-1.2", "npa", "dvfs"];

  function planView(plan) {
    return h(
      "div",
      { class: "plan", dataset: { plan: plan.id, state: plan.state } },
      h("p", {}, h("strong", {}, plan.policy), " ", badge(plan.state), ` · ${plan.trigger} · `, time(plan.createdAt), plan.message ? " — " + plan.message : ""),
      plan.notes?.length ? h("ul", { class: "small" }, plan.notes.map((n) => h("li", {}, n))) : null,
      plan.actions.length === 0
        ? h("p", { class: "muted" }, "No moves.")
        : table(
            [{ label: "VM" }, { label: "From → to" }, { label: "Why" }, { label: "Predicted CPU", class: "optional" }, { label: "Outcome" }],
            plan.actions.map((a) =>
              h(
                "tr",
                {},
                h("td", {}, vmLink(a.vm)),
                h("td", {}, `${a.from} → ${a.to}`),
                h("td", { class: "small" }, a.explanation),
                h("td", { class: "optional small" }, `${a.from}: ${percent(a.predicted.sourceLoadBefore)} → ${percent(a.predicted.sourceLoadAfter)}; ${a.to}: ${percent(a.predicted.destinationLoadBefore)} → ${percent(a.predicted.destinationLoadAfter)}; ~${a.predicted.downtimeMs} ms down`),
                h("td", {}, a.outcome, a.outcomeMessage ? h("div", { class: "small muted" }, a.outcomeMessage) : null)
              )
            ),
            ""
          ),
      plan.considered?.length
        ? h(
            "details",
            {},
            h("summary", {}, `Every VM looked at (${plan.considered.length})`),
            h("ul", { class: "small" }, plan.considered.map((c) => h("li", {}, `${c.vm} on ${c.host}: ${c.moved ? "moved" : c.reason ? reasonText(c.reason) : "stays"}`, c.destinations?.length ? h("ul", {}, c.destinations.map((d) => h("li", {}, `${d.host}: ${d.filtered ? reasonText(d.filtered) : "load after " + percent(d.loadAfter)}`))) : null)))
          )
        : null
    );
  }

  function plansPage() {
    const policy = h("select", { id: "policy" }, POLICIES.map((p) => h("option", { value: p }, p)));
    const result = h("div", { id: "dry-run", "aria-live": "polite" });
    const list = region();
    const dryRun = h("button", { type: "button", class: "primary" }, "Dry run");
    const execute = h("button", { type: "button", disabled: true }, "Execute this policy");
    dryRun.addEventListener("click", () =>
      act(dryRun, async () => {
        const plan = await api("POST", "/v1/plans", { policy: policy.value });
        result.replaceChildren(h("h2", {}, "Dry run"), planView(plan));
        execute.disabled = plan.actions.length === 0;
      }, "Dry run")
    );
    execute.addEventListener("click", () => {
      if (!window.confirm(`Execute ${policy.value} now? It plans again and starts the moves it finds.`)) return;
      act(execute, async () => {
        const plan = await api("POST", "/v1/plans", { policy: policy.value, execute: true });
        result.replaceChildren(h("h2", {}, "Executed"), planView(plan));
        execute.disabled = true;
      }, "Execute");
    });
    return {
      title: "Plans",
      node: h(
        "div",
        {},
        h("h1", {}, "Plans"),
        panel("plan-new", "Plan now", h("div", { class: "actions" }, h("label", { for: "policy" }, "Policy", policy), dryRun, execute), h("p", { class: "small muted" }, "A dry run moves nothing. Executing plans again with the same policy and starts its moves (2 per cluster, 1 per host at a time)."), result),
        panel("plan-list", "Executed plans", list)
      ),
      relevant: (e) => e.kind === "plan" || e.kind === "migration",
      async update() {
        const plans = (await get("/v1/plans?limit=50")).items;
        list.show(plans, () =>
          table(
            [{ label: "Plan" }, { label: "Policy" }, { label: "State" }, { label: "Trigger", class: "optional" }, { label: "Moves", class: "num" }, { label: "Created" }],
            plans.map((p) => h("tr", { dataset: { plan: p.id } }, h("td", {}, link("#/plans/" + encodeURIComponent(p.id), p.id.slice(0, 8))), h("td", {}, p.policy), h("td", {}, badge(p.state)), h("td", { class: "optional" }, p.trigger), h("td", { class: "num" }, p.actions.length), h("td", {}, time(p.createdAt)))),
            "No plan has been executed."
          )
        );
      },
    };
  }

  function planPage([id]) {
    const body = region();
    return {
      title: "Plan",
      node: h("div", {}, h("h1", {}, "Plan ", h("code", {}, id)), body),
      relevant: (e) => e.kind === "plan" || e.kind === "migration",
      async update() {
        const plan = await get("/v1/plans/" + encodeURIComponent(id));
        body.show(plan, () => h("section", { class: "panel" }, planView(plan)));
      },
    };
  }

  // ---- Contexts

  function contextsPage() {
    const list = region();
    const name = h("input", { id: "ctx-name", required: true, pattern: "[a-z0-9][a-z0-9-]*", placeholder: "browser" });
    const kind = h("select", { id: "ctx-kind" }, h("option", { value: "disposable" }, "disposable"), h("option", { value: "persistent" }, "persistent"));
    const open = h("button", { type: "submit", class: "primary" }, "Open");
    const form = h(
      "form",
      { class: "actions", onsubmit: (event) => { event.preventDefault(); act(open, () => api("POST", "/v1/contexts", { name: name.value.trim(), kind: kind.value }), `Open ${name.value}`); } },
      h("label", { for: "ctx-name" }, "Name", name),
      h("label", { for: "ctx-kind" }, "Kind", kind),
      open
    );
    const contextAction = (c, label, cls, work, confirmText) => actionButton(label, cls, work, c.name, confirmText);
    const path = (c, verb) => `/v1/contexts/${encodeURIComponent(c.name)}${verb ? "/" + verb : ""}?host=${encodeURIComponent(c.host)}`;

    // A context's display, through the controller's WebSocket bridge, drawn by noVNC (Debian's novnc).
    const displayPanel = h("section", { class: "panel", id: "display-panel", hidden: true, "aria-labelledby": "display-title" });
    let shown = null;
    function closeDisplay() {
      if (shown) shown.rfb?.disconnect();
      shown = null;
      displayPanel.hidden = true;
      displayPanel.replaceChildren();
      delete displayPanel.dataset.state;
    }
    async function showDisplay(c) {
      closeDisplay();
      const status = h("p", { class: "small muted", id: "display-status", "aria-live": "polite" }, "connecting…");
      const screen = h("div", { class: "screen", "aria-label": `Display of ${c.name}` });
      displayPanel.replaceChildren(
        h("h2", { id: "display-title" }, `Display of ${c.name}`),
        status,
        screen,
        h("p", {}, h("button", { type: "button", onclick: closeDisplay }, "Close display"))
      );
      displayPanel.hidden = false;
      displayPanel.dataset.context = c.name;
      shown = { name: c.name };
      let RFB;
      try {
        RFB = (await import("/console/novnc/core/rfb.js")).default;
      } catch (error) {
        status.textContent = "Showing a display needs Debian's novnc on the controller (" + error.message + ").";
        return;
      }
      const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${path(c, "display")}`;
      const rfb = new RFB(screen, url, { wsProtocols: ["binary"].concat(token ? ["vireo-token." + token] : []) });
      rfb.scaleViewport = true;
      shown.rfb = rfb;
      rfb.addEventListener("connect", () => {
        displayPanel.dataset.state = "connected";
        status.textContent = `Connected to ${c.display} on ${c.host}. Click the screen to type into it.`;
      });
      rfb.addEventListener("desktopname", (event) => { displayPanel.dataset.desktop = event.detail.name; });
      rfb.addEventListener("disconnect", async (event) => {
        displayPanel.dataset.state = "disconnected";
        if (event.detail.clean) { status.textContent = "Disconnected."; return; }
        // The same address over plain HTTP answers with the reason.
        try { await get(path(c, "display")); } catch (error) { status.textContent = error.message; return; }
        status.textContent = "The display could not be reached.";
      });
    }

    return {
      title: "Contexts",
      node: h(
        "div",
        {},
        h("h1", {}, "Contexts"),
        h("p", { class: "muted" }, "One VM per trust domain: a disposable context goes back to clean in a fraction of a second; a persistent one keeps what is done in it."),
        panel("ctx-open", "Open a context", form),
        list,
        displayPanel
      ),
      relevant: (e) => e.kind === "context",
      dispose: closeDisplay,
      async update() {
        const contexts = (await get("/v1/contexts")).items;
        list.show(contexts, () =>
          table(
            [{ label: "Context" }, { label: "Kind" }, { label: "State" }, { label: "Host" }, { label: "Resets", class: "num" }, { label: "Last reset", class: "num" }, { label: "Display", class: "optional" }, { label: "Actions" }],
            contexts.map((c) =>
              h(
                "tr",
                { dataset: { context: c.name } },
                h("td", {}, c.name, c.message ? h("div", { class: "small muted" }, c.message) : null),
                h("td", {}, c.kind, c.fromPool ? h("span", { class: "muted small" }, " (from pool)") : null),
                h("td", {}, badge(c.state)),
                h("td", {}, c.host),
                h("td", { class: "num" }, c.resets),
                h("td", { class: "num reset-ms" }, c.resetMs !== undefined && c.resetMs !== null ? `${c.resetMs} ms` : ""),
                h(
                  "td",
                  { class: "optional" },
                  c.display
                    ? [
                        h("span", { class: "small muted" }, `VNC ${c.display} `),
                        c.state === "running" ? contextAction(c, "Display", "", async () => showDisplay(c)) : null,
                      ]
                    : ""
                ),
                h(
                  "td",
                  { class: "actions" },
                  contextAction(c, "Reset", "", () => api("POST", path(c, "reset") + (c.kind === "persistent" ? "&force=true" : "")), c.kind === "persistent" ? `Reset ${c.name}? It is persistent: what was done since the last keep is lost.` : null),
                  contextAction(c, "Keep", "", () => api("POST", path(c, "keep"))),
                  contextAction(c, "Close", "danger", () => api("DELETE", path(c)), `Close ${c.name}? Its VM and disk are removed.`)
                )
              )
            ),
            "No contexts open."
          )
        );
      },
    };
  }

  // ---------------------------------------------------------------- routing

  const ROUTES = [
    [/^$/, overviewPage],
    [/^hosts$/, hostsPage],
    [/^vms$/, vmsPage],
    [/^vms\/(.+)$/, vmPage],
    [/^apps$/, appsPage],
    [/^apps\/(.+)$/, appPage],
    [/^plans$/, plansPage],
    [/^plans\/(.+)$/, planPage],
    [/^contexts$/, contextsPage],
  ];

  function route() {
    if (loginShown) return;
    stopPage();
    const [pathPart, queryPart] = location.hash.replace(/^#\/?/, "").split("?");
    const query = new URLSearchParams(queryPart || "");
    const main = document.getElementById("main");
    let page = null;
    for (const [pattern, make] of ROUTES) {
      const match = pathPart.match(pattern);
      if (match) { page = make(match.slice(1).map(decodeURIComponent), query); break; }
    }
    if (!page) {
      main.replaceChildren(h("h1", {}, "Not found"), h("p", {}, "No page here. ", link("#/", "Go to the overview.")));
      return;
    }
    current = page;
    document.title = `${page.title} · Vireo`;
    const section = "#/" + pathPart.split("/")[0];
    for (const a of document.querySelectorAll(".top nav a")) {
      if (a.getAttribute("href") === (pathPart === "" ? "#/" : section)) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
    main.replaceChildren(page.node);
    delete main.dataset.loaded;
    delete main.dataset.renderMs;
    delete main.dataset.readyMs;
    main.dataset.page = pathPart.split("/")[0] || "overview";
    // For tests and `vireo bench console`: when the page first showed its data (the frame after
    // the DOM had it), from this route's start (renderMs) and from the document's navigation (readyMs).
    const started = performance.now();
    refresh().then(() =>
      requestAnimationFrame(() =>
        requestAnimationFrame(() => {
          if (current !== page) return;
          main.dataset.renderMs = String(Math.round(performance.now() - started));
          main.dataset.readyMs = String(Math.round(performance.now()));
          main.dataset.loaded = "true";
        })
      )
    );
    refreshTimer = setInterval(refresh, REFRESH_MS);
  }

  window.addEventListener("hashchange", () => { clearErrors(); route(); });
  // A page left for another keeps no stream open: the browser allows six connections to a host,
  // and streams of pages kept for the back button would hold them until they are evicted.
  window.addEventListener("pagehide", () => {
    if (events.controller) events.controller.abort();
    events.controller = null;
  });
  window.addEventListener("pageshow", (event) => { if (event.persisted) events.restart(); });
  window.addEventListener("unhandledrejection", (event) => showError(event.reason));
  route();
  events.start();
})();
