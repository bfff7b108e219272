// Gridsense operator console: one page, no build step, no network beyond the hub's own API.
// Pages (by URL hash): #/signin, #/cases (map + queue), #/case/<id>, #/fleet, #/assessment.
// Live updates come from /api/v1/changes (server-sent events), read with fetch so that the
// bearer token travels in a header, never in a URL.
"use strict";

const TEXT = {
  zh: {
    brand_sub: "网格化社会治理", nav_cases: "案件", nav_fleet: "设备", nav_assessment: "考核评价",
    sign_in: "登录", sign_out: "退出", token: "访问令牌", signin_title: "登录运营控制台",
    signin_hint: "请输入管理员发放的 API 令牌。", bad_token: "令牌无效或已停用",
    live_on: "实时", live_off: "离线", filter_state: "状态", filter_category: "类别",
    filter_area: "区域", filter_overdue: "仅超期", all: "全部", cases_shown: "共 {n} 件",
    col_id: "编号", col_category: "类别", col_state: "状态", col_cell: "网格", col_observed: "发现时间",
    col_deadline: "处置时限", overdue: "超期", no_cases: "暂无案件",
    legend_none: "无案件", legend_open: "有在办案件", legend_overdue: "有超期案件",
    case_title: "案件 #{id}", back: "← 返回案件列表", facts: "案件信息", category: "类别", cell: "网格",
    worker: "网格员", department: "责任部门", deadline: "处置时限", source: "来源", observed: "发现时间",
    events_n: "关联事件", level: "层级", levels: ["社区", "街道", "区"],
    evidence: "证据照片", image_lost: "照片在设备上丢失，不会再到达", image_expired: "照片已超过保存期限，已删除", before: "处置前", after: "处置后（复核）", no_image: "暂无照片",
    image_pending: "照片尚未从设备上传", events: "关联事件", timeline: "流转记录", actions: "可执行操作",
    no_actions: "当前角色无可执行操作", note: "备注", dispatch_to: "派遣至",
    act_register: "立案", act_reject: "不予立案", act_dispatch: "派遣", act_accept: "受理",
    act_feedback: "处置反馈", act_verify: "核查通过", act_verify_failed: "核查不通过（返工）",
    act_close: "结案", act_return: "退回", act_recheck: "请求摄像头复核",
    act_report: "上报", act_warn: "临期预警", act_escalate: "升级", act_created: "新建",
    act_merged: "合并事件", rechecking: "复核中…", act_recheck_evidence: "摄像头复核结果",
    act_recheck_unavailable: "摄像头无法复核，请人工核查",
    st_reported: "待立案", st_registered: "待派遣", st_rejected: "不予立案", st_dispatched: "已派遣",
    st_handling: "处置中", st_handled: "待核查", st_verified: "待结案", st_closed: "已结案",
    fleet_title: "边缘设备", box: "设备", status: "登记状态", connected: "连接", last_seen: "最后在线",
    backlog: "待同步事件", oldest_unsynced: "最早未同步", components: "摄像头与传感器",
    online: "在线", offline: "离线", no_boxes: "尚未登记设备", no_report: "尚无健康报告",
    disk_free: "磁盘剩余", comp_ok: "正常", comp_degraded: "降级", comp_failed: "故障",
    comp_offline: "离线", comp_unknown: "未知",
    assess_title: "综合评价", period: "统计周期", from: "自", to: "至", refresh: "刷新",
    dimension: "维度", key: "对象", registered: "立案数", due: "应结案", closed: "已结案",
    closure_rate: "结案率", on_time_rate: "按期结案率", rework_rate: "返工率",
    avg_hours: "平均处置时长（小时）", dim_district: "区", dim_street: "街道", dim_community: "社区",
    dim_department: "部门", dim_worker: "网格员", no_rows: "本周期无数据", chart_title: "结案率与按期结案率",
    forbidden: "当前角色无权查看此页面", failed: "操作失败：", role: { admin: "管理员",
      dispatcher: "调度员", department: "部门", worker: "网格员" },
  },
  en: {
    brand_sub: "grid governance", nav_cases: "Cases", nav_fleet: "Fleet", nav_assessment: "Assessment",
    sign_in: "Sign in", sign_out: "Sign out", token: "API token", signin_title: "Operator console sign-in",
    signin_hint: "Enter the API token your administrator gave you.", bad_token: "Unknown or revoked token",
    live_on: "live", live_off: "offline", filter_state: "State", filter_category: "Category",
    filter_area: "Area", filter_overdue: "Overdue only", all: "All", cases_shown: "{n} cases",
    col_id: "No.", col_category: "Category", col_state: "State", col_cell: "Cell", col_observed: "Observed",
    col_deadline: "Deadline", overdue: "overdue", no_cases: "No cases",
    legend_none: "no cases", legend_open: "open cases", legend_overdue: "overdue cases",
    case_title: "Case #{id}", back: "← Back to the queue", facts: "Case", category: "Category", cell: "Cell",
    worker: "Grid worker", department: "Department", deadline: "Deadline", source: "Source",
    observed: "Observed", events_n: "Events", level: "Level", levels: ["community", "street", "district"],
    evidence: "Evidence", image_lost: "Lost on the box before upload: it will not arrive", image_expired: "Deleted after the retention period", before: "Before", after: "After (re-check)", no_image: "No image",
    image_pending: "Image not uploaded by the box yet", events: "Merged events", timeline: "Timeline",
    actions: "Actions", no_actions: "Nothing your role can do now", note: "Note", dispatch_to: "Dispatch to",
    act_register: "Register", act_reject: "Reject", act_dispatch: "Dispatch", act_accept: "Accept",
    act_feedback: "Feedback", act_verify: "Verify (passed)", act_verify_failed: "Verify failed (rework)",
    act_close: "Close", act_return: "Return", act_recheck: "Request camera re-check",
    act_report: "Reported", act_warn: "Deadline warning", act_escalate: "Escalated", act_created: "Created",
    act_merged: "Event merged", rechecking: "Re-checking…", act_recheck_evidence: "Camera re-check result",
    act_recheck_unavailable: "Camera could not re-check: verify in person",
    st_reported: "reported", st_registered: "registered", st_rejected: "rejected", st_dispatched: "dispatched",
    st_handling: "handling", st_handled: "handled", st_verified: "verified", st_closed: "closed",
    fleet_title: "Edge boxes", box: "Box", status: "Registry", connected: "Link", last_seen: "Last seen",
    backlog: "Backlog", oldest_unsynced: "Oldest unsynced", components: "Cameras and sensors",
    online: "online", offline: "offline", no_boxes: "No boxes registered", no_report: "No health report yet",
    disk_free: "Disk free", comp_ok: "ok", comp_degraded: "degraded", comp_failed: "failed",
    comp_offline: "offline", comp_unknown: "unknown",
    assess_title: "Assessment", period: "Period", from: "from", to: "to", refresh: "Refresh",
    dimension: "Dimension", key: "Who", registered: "Registered", due: "Due", closed: "Closed",
    closure_rate: "Closure rate", on_time_rate: "On-time rate", rework_rate: "Rework rate",
    avg_hours: "Avg. handling (h)", dim_district: "district", dim_street: "street", dim_community: "community",
    dim_department: "department", dim_worker: "worker", no_rows: "No data in this period",
    chart_title: "Closure and on-time rates", forbidden: "Your role may not see this page",
    failed: "Failed: ", role: { admin: "admin", dispatcher: "dispatcher", department: "department",
      worker: "grid worker" },
  },
};
const STATES = ["reported", "registered", "dispatched", "handling", "handled", "verified", "closed", "rejected"];
const FINAL = new Set(["closed", "rejected"]);

const app = {
  lang: localStorage.getItem("gs.lang") || "zh",
  token: sessionStorage.getItem("gs.token") || "",
  boot: null,          // /api/v1/console
  grid: null,          // /api/v1/grid
  cases: new Map(),    // id -> case
  filters: { state: "", category: "", area: "", overdue: false },
  map: null,
  live: null,          // AbortController of the change stream
  page: "",
};

// ---- helpers --------------------------------------------------------------------------------
function t(key, vars) {
  let s = TEXT[app.lang][key];
  if (s === undefined) s = TEXT.en[key] ?? key;
  if (vars) for (const [k, v] of Object.entries(vars)) s = s.replace("{" + k + "}", v);
  return s;
}
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}
function fmtTime(ms) {
  if (ms === null || ms === undefined) return "—";
  const d = new Date(ms);
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}`;
}
function fmtAge(ms) {
  if (ms === null || ms === undefined) return "—";
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 90) return s + " s";
  if (s < 5400) return Math.round(s / 60) + " min";
  if (s < 172800) return Math.round(s / 3600) + " h";
  return Math.round(s / 86400) + " d";
}
function fmtBytes(b) {
  if (!b) return "—";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (b >= 1024 && i < u.length - 1) { b /= 1024; i++; }
  return b.toFixed(i ? 1 : 0) + " " + u[i];
}
function pct(x) { return x === null || x === undefined ? "—" : (x * 100).toFixed(1) + "%"; }
function categoryName(code) {
  const c = app.boot && app.boot.categories.find((c) => c.code === code);
  return c ? c[app.lang] : code;
}
function cellName(code) {
  const f = app.grid && app.grid.features.find((f) => f.properties.code === code);
  return f ? f.properties.name : (code || "—");
}
function stateBadge(state, id) {
  return el("span", { class: "badge s-" + state, id }, t("st_" + state));
}
function isOverdue(c) {
  return !FINAL.has(c.state) && c.deadline !== null && c.deadline !== undefined && c.deadline < Date.now();
}
function actionLabel(name) {
  const s = TEXT[app.lang]["act_" + name];
  return s === undefined ? name : s;
}
function roleLabel(role) { return (TEXT[app.lang].role || {})[role] || role; }

async function api(path, opts = {}) {
  const headers = { Authorization: "Bearer " + app.token, ...(opts.headers || {}) };
  if (opts.body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, {
    method: opts.method || "GET", headers,
    body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
  });
  if (r.status === 401) {
    if (app.boot) signOut();
    throw new Error(t("bad_token"));
  }
  const type = r.headers.get("content-type") || "";
  const body = type.includes("json") ? await r.json() : await r.text();
  if (!r.ok) throw new Error((body && body.error) || r.status + " " + r.statusText);
  return body;
}

// ---- sign-in and chrome ---------------------------------------------------------------------
function applyChrome() {
  document.documentElement.lang = app.lang === "zh" ? "zh-CN" : "en";
  document.querySelectorAll("[data-t]").forEach((n) => { n.textContent = t(n.dataset.t); });
  document.getElementById("lang-toggle").textContent = app.lang === "zh" ? "EN" : "中文";
  document.body.classList.toggle("signed-out", !app.boot);
  const who = document.getElementById("who");
  who.textContent = app.boot ? `${roleLabel(app.boot.me.role)} · ${app.boot.me.subject}` : "";
  document.querySelectorAll("#nav a").forEach((a) => {
    a.classList.toggle("active", a.dataset.page === app.page);
    const role = app.boot && app.boot.me.role;
    const staff = role === "admin" || role === "dispatcher";
    if (a.dataset.page !== "cases") a.style.display = staff ? "" : "none";
  });
  const live = document.getElementById("live");
  const on = live.classList.contains("on");
  live.textContent = t(on ? "live_on" : "live_off");
}
function setLive(on) {
  const live = document.getElementById("live");
  live.classList.toggle("on", on);
  live.classList.toggle("off", !on);
  live.textContent = t(on ? "live_on" : "live_off");
}

async function signIn(token) {
  app.token = token.trim();
  const boot = await api("/api/v1/console");
  app.boot = boot;
  sessionStorage.setItem("gs.token", app.token);
  app.grid = await api("/api/v1/grid");
  await loadCases();
  startChanges();
}
function signOut() {
  if (app.live) app.live.abort();
  app.live = null;
  app.token = ""; app.boot = null; app.cases.clear();
  sessionStorage.removeItem("gs.token");
  if (location.hash !== "#/signin") location.hash = "#/signin";
  else route();
}
// The case list comes in pages of up to 1000; follow `next` to the end.
async function loadCases() {
  const all = new Map();
  let after = null;
  do {
    const page = await api("/api/v1/cases?limit=1000" + (after === null ? "" : "&after=" + after));
    for (const c of page.cases) all.set(c.id, c);
    after = page.next;
  } while (after !== null && after !== undefined);
  app.cases = all;
}

function renderSignin(main) {
  const input = el("input", { id: "token", type: "password", autocomplete: "off", autofocus: true });
  const error = el("div", { class: "error", id: "signin-error" });
  const form = el("form", { class: "panel signin", id: "signin" },
    el("h1", {}, t("signin_title")),
    el("p", { class: "muted" }, t("signin_hint")),
    el("label", { for: "token" }, t("token")), input, error,
    el("button", { id: "signin-btn", type: "submit" }, t("sign_in")));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.textContent = "";
    try {
      await signIn(input.value);
      location.hash = "#/cases";
    } catch (e) {
      app.boot = null;
      error.textContent = t("bad_token");
    }
  });
  main.append(el("div", { class: "page" }, form));
  input.focus();
}

// ---- live updates ---------------------------------------------------------------------------
function startChanges() {
  if (app.live) app.live.abort();
  const ctl = new AbortController();
  app.live = ctl;
  let delay = 500;
  const run = async () => {
    while (!ctl.signal.aborted) {
      try {
        const r = await fetch("/api/v1/changes", {
          headers: { Authorization: "Bearer " + app.token, Accept: "text/event-stream" },
          signal: ctl.signal,
        });
        if (r.status === 401) { signOut(); return; }
        if (!r.ok || !r.body) throw new Error("changes " + r.status);
        setLive(true);
        delay = 500;
        // The stream opened after the list was read: read it again so nothing is missed.
        await loadCases();
        redraw();
        const reader = r.body.getReader();
        const dec = new TextDecoder();
        let buf = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += dec.decode(value, { stream: true });
          let i;
          while ((i = buf.indexOf("\n\n")) >= 0) {
            onSse(buf.slice(0, i));
            buf = buf.slice(i + 2);
          }
        }
      } catch (e) {
        if (ctl.signal.aborted) return;
      }
      setLive(false);
      await new Promise((res) => setTimeout(res, delay));
      delay = Math.min(delay * 2, 10000);
    }
  };
  run();
}
function onSse(block) {
  let event = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) event = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
  }
  if (event === "lagged") { loadCases().then(redraw); return; }
  if (event !== "case" || !data.length) return;
  let change;
  try { change = JSON.parse(data.join("\n")); } catch (e) { return; }
  const c = change.case;
  const isNew = !app.cases.has(c.id);
  app.cases.set(c.id, c);
  if (app.page === "cases") {
    drawQueue(isNew ? c.id : null);
    drawCaseMarkers();
  } else if (app.page === "case" && app.caseId === c.id) {
    renderCase(document.getElementById("main"), c.id);
  }
}
function redraw() {
  if (app.page === "cases") { drawQueue(); drawCaseMarkers(); }
}

// ---- cases: map and queue -------------------------------------------------------------------
function renderCases(main) {
  const areas = new Map();
  for (const f of app.grid.features) {
    for (const level of ["street", "community"]) {
      const a = f.properties[level];
      if (a) areas.set(a.code, { level, name: a.name });
    }
  }
  const sel = (id, options, value) => {
    const s = el("select", { id },
      el("option", { value: "" }, t("all")),
      options.map(([v, label]) => el("option", { value: v, selected: v === value }, label)));
    s.addEventListener("change", () => { app.filters[id.replace("f-", "")] = s.value; drawQueue(); drawCaseMarkers(); });
    return s;
  };
  const overdue = el("input", { type: "checkbox", id: "f-overdue", checked: app.filters.overdue });
  overdue.addEventListener("change", () => { app.filters.overdue = overdue.checked; drawQueue(); drawCaseMarkers(); });
  const filters = el("div", { class: "filters" },
    el("label", {}, t("filter_state"),
      sel("f-state", STATES.map((s) => [s, t("st_" + s)]), app.filters.state)),
    el("label", {}, t("filter_category"),
      sel("f-category", app.boot.majors.map((m) => [m.code, m[app.lang]]), app.filters.category)),
    el("label", {}, t("filter_area"),
      sel("f-area", [...areas].sort().map(([code, a]) => [code, (a.level === "community" ? "· " : "") + a.name]),
        app.filters.area)),
    el("label", {}, overdue, t("filter_overdue")),
    el("span", { class: "count", id: "queue-count" }));
  const table = el("table", { id: "queue" },
    el("thead", {}, el("tr", {},
      ["col_id", "col_category", "col_state", "col_cell", "col_observed", "col_deadline"].map((k) => el("th", {}, t(k))))),
    el("tbody"));
  main.append(el("div", { class: "cases" },
    el("div", { id: "map" }),
    el("div", { class: "panel queue" }, filters, el("div", { class: "table-wrap" }, table))));
  drawMap();
  drawQueue();
}
function visibleCases() {
  const f = app.filters;
  return [...app.cases.values()]
    .filter((c) => !f.state || c.state === f.state)
    .filter((c) => !f.category || String(c.category).startsWith(f.category))
    .filter((c) => !f.area || (c.cell || "").startsWith(f.area))
    .filter((c) => !f.overdue || isOverdue(c))
    .sort((a, b) => (isOverdue(b) - isOverdue(a)) || (b.id - a.id));
}
function drawQueue(freshId) {
  const tbody = document.querySelector("#queue tbody");
  if (!tbody) return;
  const rows = visibleCases();
  tbody.replaceChildren(...rows.map((c) => {
    const tr = el("tr", { class: "row" + (c.id === freshId ? " fresh" : ""), "data-case-id": c.id,
        "data-state": c.state },
      el("td", {}, "#" + c.id),
      el("td", {}, categoryName(c.category)),
      el("td", {}, stateBadge(c.state)),
      el("td", {}, cellName(c.cell)),
      el("td", {}, fmtTime(c.observed_at)),
      el("td", {}, fmtTime(c.deadline), " ", isOverdue(c) ? el("span", { class: "badge overdue" }, t("overdue")) : null));
    tr.addEventListener("click", () => { location.hash = "#/case/" + c.id; });
    return tr;
  }));
  if (!rows.length) tbody.append(el("tr", {}, el("td", { colspan: 6, class: "muted" }, t("no_cases"))));
  const count = document.getElementById("queue-count");
  if (count) count.textContent = t("cases_shown", { n: rows.length });
  colourCells();
}
function drawMap() {
  if (app.map) { app.map.remove(); app.map = null; }
  const map = L.map("map", { zoomSnap: 0.25, attributionControl: !!app.boot.tile_url });
  app.map = map;
  if (app.boot.tile_url) {
    L.tileLayer(app.boot.tile_url, { attribution: app.boot.tile_attribution || "", maxZoom: 19 }).addTo(map);
  }
  app.cellLayer = L.geoJSON(app.grid, {
    style: () => ({ weight: 1, color: "#829ab1", fillOpacity: 0.55, fillColor: "#e3f8ec", className: "cell" }),
    onEachFeature: (f, layer) => {
      layer.bindTooltip(`${f.properties.name}<br><small>${f.properties.code}</small>`, { sticky: true });
      layer.on("click", () => {
        const sel = document.getElementById("f-area");
        const community = f.properties.community;
        if (sel && community) { sel.value = community.code; app.filters.area = community.code; drawQueue(); drawCaseMarkers(); }
      });
    },
  }).addTo(map);
  // Community names over their cells, so the map reads without hovering.
  const communities = new Map();
  app.cellLayer.eachLayer((layer) => {
    const c = layer.feature.properties.community;
    if (!c) return;
    const b = communities.get(c.code);
    communities.set(c.code, { name: c.name, bounds: b ? b.bounds.extend(layer.getBounds()) : L.latLngBounds(layer.getBounds().getSouthWest(), layer.getBounds().getNorthEast()) });
  });
  for (const { name, bounds } of communities.values()) {
    L.tooltip({ permanent: true, direction: "center", className: "area-label", interactive: false })
      .setLatLng(bounds.getCenter()).setContent(name).addTo(map);
  }
  const b = app.cellLayer.getBounds();
  if (b.isValid()) map.fitBounds(b, { padding: [12, 12] });
  app.markerLayer = L.layerGroup().addTo(map);
  const legend = L.control({ position: "bottomleft" });
  legend.onAdd = () => el("div", { class: "legend" },
    el("div", {}, el("i", { style: "background:#e3f8ec" }), t("legend_none")),
    el("div", {}, el("i", { style: "background:#f6ad55" }), t("legend_open")),
    el("div", {}, el("i", { style: "background:#fc8181" }), t("legend_overdue")));
  legend.addTo(map);
  drawCaseMarkers();
  colourCells();
}
function colourCells() {
  if (!app.cellLayer) return;
  const open = new Map(), late = new Map();
  for (const c of app.cases.values()) {
    if (FINAL.has(c.state) || !c.cell) continue;
    open.set(c.cell, (open.get(c.cell) || 0) + 1);
    if (isOverdue(c)) late.set(c.cell, (late.get(c.cell) || 0) + 1);
  }
  app.cellLayer.eachLayer((layer) => {
    const code = layer.feature.properties.code;
    const fill = late.get(code) ? "#fc8181" : open.get(code) ? "#f6ad55" : "#e3f8ec";
    layer.setStyle({ fillColor: fill });
    const path = layer.getElement && layer.getElement();
    if (path) {
      path.setAttribute("data-cell", code);
      path.setAttribute("data-open", open.get(code) || 0);
    }
  });
}
function drawCaseMarkers() {
  if (!app.markerLayer) return;
  app.markerLayer.clearLayers();
  for (const c of visibleCases()) {
    if (FINAL.has(c.state)) continue;
    const colour = isOverdue(c) ? "#c53030" : "#1769aa";
    const m = L.circleMarker([c.lat, c.lon], {
      radius: 7, color: "#fff", weight: 2, fillColor: colour, fillOpacity: 1, className: "case-marker",
    });
    m.bindTooltip(`#${c.id} ${categoryName(c.category)} · ${t("st_" + c.state)}`);
    m.on("click", () => { location.hash = "#/case/" + c.id; });
    m.addTo(app.markerLayer);
    const path = m.getElement && m.getElement();
    if (path) path.setAttribute("data-case-id", c.id);
  }
  colourCells();
}

// ---- case page ------------------------------------------------------------------------------
async function renderCase(main, id) {
  let data;
  try {
    data = await api("/api/v1/cases/" + id);
  } catch (e) {
    main.replaceChildren(el("div", { class: "page" }, el("a", { href: "#/cases" }, t("back")),
      el("p", { class: "error", id: "case-error" }, e.message)));
    return;
  }
  if (app.page !== "case" || app.caseId !== id) return;
  const c = data.case;
  app.cases.set(c.id, c);
  const levels = t("levels");
  const facts = el("dl", { class: "facts" },
    [[t("category"), categoryName(c.category)],
     [t("cell"), `${cellName(c.cell)} (${c.cell || "—"})`],
     [t("worker"), c.worker || "—"],
     [t("department"), deptName(c.department)],
     [t("level"), levels[c.level] || c.level],
     [t("observed"), fmtTime(c.observed_at)],
     [t("deadline"), fmtTime(c.deadline)],
     [t("events_n"), c.event_count],
     [t("source"), c.source]].flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));

  // Evidence: "before" from the events, "after" from the hub's camera re-checks (the only
  // transitions whose pictures the hub serves).
  const before = data.events.flatMap((e) => (e.event.evidence || []).map((r) => r.sha256));
  const after = data.transitions.filter((tr) => tr.action === "recheck" || tr.actor.role === "system")
    .flatMap((tr) => tr.evidence || []);
  const expired = new Set(data.evidence_expired || []);
  const figure = (label, shas, cls) => el("figure", { class: cls },
    el("figcaption", {}, label),
    shas.length ? evidenceImg(c.id, shas[shas.length - 1], expired) : el("div", { class: "none" }, t("no_image")));
  const evidence = el("div", { class: "panel" }, el("h2", {}, t("evidence")),
    el("div", { class: "evidence" }, figure(t("before"), before.slice(0, 1), "before"),
      figure(t("after"), after, "after")));

  const events = el("div", { class: "panel" }, el("h2", {}, t("events")),
    el("table", { id: "events" }, el("thead", {}, el("tr", {},
      el("th", {}, t("observed")), el("th", {}, t("source")), el("th", {}, t("category")))),
    el("tbody", {}, data.events.map((e) => el("tr", {},
      el("td", {}, fmtTime(e.event.observed_at)),
      el("td", {}, `${e.box_id} / ${e.event.source.kind} ${e.event.source.id}`),
      el("td", {}, categoryName(e.event.category)))))));

  const timeline = el("div", { class: "panel" }, el("h2", {}, t("timeline")),
    el("ol", { class: "timeline", id: "timeline" }, data.transitions.map((tr) => el("li", { "data-action": tr.action },
      el("div", {}, el("b", {}, actionLabel(tr.action)), " ",
        tr.from !== tr.to ? [t("st_" + tr.from), " → ", t("st_" + tr.to)] : null),
      el("div", { class: "when" }, `${fmtTime(tr.at)} · ${roleLabel(tr.actor.role)} ${tr.actor.subject}`),
      tr.note ? el("div", {}, tr.note) : null))));

  const note = el("textarea", { id: "action-note", rows: 2, placeholder: t("note") });
  const error = el("div", { class: "error", id: "action-error" });
  const buttons = data.allowed_actions.map((name) => {
    const b = el("button", { type: "button", "data-action": name,
      class: name === "reject" || name === "verify_failed" || name === "return" ? "secondary" : "" }, actionLabel(name));
    b.addEventListener("click", () => act(c.id, name, note.value, error));
    return b;
  });
  let deptSelect = null;
  if (data.allowed_actions.includes("dispatch")) {
    deptSelect = el("select", { id: "dispatch-department" }, app.boot.departments.map((d) =>
      el("option", { value: d.id, selected: d.id === c.department }, d.name)));
  }
  const role = app.boot.me.role;
  if (app.boot.fleet && !FINAL.has(c.state) && ["admin", "dispatcher", "worker"].includes(role)
      && data.events.some((e) => e.event.source.kind === "camera")) {
    const b = el("button", { type: "button", class: "secondary", "data-action": "recheck" }, t("act_recheck"));
    b.addEventListener("click", async () => {
      b.disabled = true; b.textContent = t("rechecking"); error.textContent = "";
      try { await api(`/api/v1/cases/${c.id}/recheck`, { method: "POST" }); renderCase(main, c.id); }
      catch (e) { error.textContent = t("failed") + e.message; b.disabled = false; b.textContent = t("act_recheck"); }
    });
    buttons.push(b);
  }
  const actions = el("div", { class: "panel", id: "actions" }, el("h2", {}, t("actions")),
    buttons.length ? [deptSelect ? el("label", {}, t("dispatch_to"), " ", deptSelect) : null,
      el("div", { class: "actions" }, note, buttons)] : el("p", { class: "muted" }, t("no_actions")),
    error);

  main.replaceChildren(el("div", { class: "page" },
    el("a", { href: "#/cases" }, t("back")),
    el("div", { class: "case-head" },
      el("h1", {}, t("case_title", { id: c.id })), stateBadge(c.state, "case-state"),
      isOverdue(c) ? el("span", { class: "badge overdue" }, t("overdue")) : null),
    el("div", { class: "case-grid" },
      el("div", { class: "stack" }, evidence, events, timeline),
      el("div", { class: "stack" }, el("div", { class: "panel" }, el("h2", {}, t("facts")), facts), actions))));
}
function deptName(id) {
  if (!id) return "—";
  const d = app.boot.departments.find((d) => d.id === id);
  return d ? `${d.name} (${id})` : id;
}
function evidenceImg(caseId, sha, expired) {
  // The photo follows its event from the box: until it has arrived the hub answers 404, so ask
  // again for a while.
  const holder = el("div", { class: "none" }, "…");
  let tries = 0;
  const load = () => {
    fetch(`/api/v1/cases/${caseId}/evidence/${sha}`, { headers: { Authorization: "Bearer " + app.token } })
      .then(async (r) => {
        if (r.ok) {
          const url = URL.createObjectURL(await r.blob());
          holder.replaceWith(el("img", { src: url, alt: sha, "data-sha": sha }));
          return;
        }
        if (r.status === 410) {
          holder.textContent = t(expired.has(sha) ? "image_expired" : "image_lost");
          holder.classList.add("lost");
          return;
        }
        holder.textContent = t("image_pending");
        if (r.status === 404 && ++tries < 60 && holder.isConnected !== false) setTimeout(load, 1000);
      }, () => { holder.textContent = t("image_pending"); });
  };
  load();
  return holder;
}
async function act(id, name, note, error) {
  error.textContent = "";
  let body;
  if (name === "verify") body = { action: "verify", passed: true };
  else if (name === "verify_failed") body = { action: "verify", passed: false };
  else if (name === "dispatch") {
    const s = document.getElementById("dispatch-department");
    body = { action: "dispatch", department: s ? s.value : null };
  } else body = { action: name };
  body.note = note || "";
  document.querySelectorAll("#actions button").forEach((b) => { b.disabled = true; });
  try {
    await api(`/api/v1/cases/${id}/actions`, { method: "POST", body });
  } catch (e) {
    error.textContent = t("failed") + e.message;
  }
  await renderCase(document.getElementById("main"), id);
}

// ---- fleet ----------------------------------------------------------------------------------
async function renderFleet(main) {
  const page = el("div", { class: "page" }, el("h1", {}, t("fleet_title")));
  main.append(page);
  let data;
  try { data = await api("/api/v1/fleet"); }
  catch (e) { page.append(el("p", { class: "error" }, e.message)); return; }
  if (!data.boxes.length) { page.append(el("p", { class: "muted" }, t("no_boxes"))); return; }
  const comp = (h) => !h ? el("span", { class: "muted" }, t("no_report")) :
    el("div", {}, h.components.map((c) => el("div", {},
      el("span", { class: "badge b-" + c.state }, t("comp_" + c.state)), " ",
      `${c.source.kind} ${c.source.id}`, " ",
      el("span", { class: "muted" }, fmtAge(c.last_seen), c.detail ? " · " + c.detail : ""))));
  page.append(el("div", { class: "panel" }, el("table", { id: "fleet" },
    el("thead", {}, el("tr", {}, ["box", "status", "connected", "last_seen", "backlog", "oldest_unsynced",
      "disk_free", "components"].map((k) => el("th", {}, t(k))))),
    el("tbody", {}, data.boxes.map((b) => el("tr", { "data-box": b.id },
      el("td", {}, el("b", {}, b.id), el("div", { class: "muted" }, b.name || "", b.grid ? " · " + cellName(b.grid) : "")),
      el("td", {}, el("span", { class: "badge b-" + b.status }, b.status)),
      el("td", {}, el("span", { class: "badge b-" + (b.connected ? "online" : "offline") }, t(b.connected ? "online" : "offline"))),
      el("td", {}, fmtAge(b.last_seen_at)),
      el("td", {}, b.health ? b.health.backlog_events : "—"),
      el("td", {}, b.health ? fmtAge(b.health.oldest_unsynced_at) : "—"),
      el("td", {}, b.health ? fmtBytes(b.health.disk_free_bytes) : "—"),
      el("td", {}, comp(b.health))))))));
}

// ---- assessment -----------------------------------------------------------------------------
async function renderAssessment(main) {
  const day = 86400000;
  const today = new Date(); today.setHours(0, 0, 0, 0);
  const iso = (ms) => new Date(ms - new Date(ms).getTimezoneOffset() * 60000).toISOString().slice(0, 10);
  const from = el("input", { type: "date", id: "from", value: iso(today.getTime() - 29 * day) });
  const to = el("input", { type: "date", id: "to", value: iso(today.getTime()) });
  const dim = el("select", { id: "dimension" }, ["street", "community", "district", "department", "worker"].map((d) =>
    el("option", { value: d }, t("dim_" + d))));
  const out = el("div", { class: "stack" });
  const load = async () => {
    out.replaceChildren();
    const f = new Date(from.value + "T00:00").getTime(), tt = new Date(to.value + "T00:00").getTime() + day;
    let data;
    try { data = await api(`/api/v1/assessment?from_ms=${f}&to_ms=${tt}`); }
    catch (e) { out.append(el("p", { class: "error" }, e.message)); return; }
    const rows = data.rows.filter((r) => r.dimension === dim.value);
    if (!rows.length) { out.append(el("p", { class: "muted" }, t("no_rows"))); return; }
    out.append(el("div", { class: "panel" }, el("h2", {}, t("chart_title")), chart(rows)));
    out.append(el("div", { class: "panel" }, el("table", { id: "assessment" },
      el("thead", {}, el("tr", {}, ["key", "registered", "due", "closed", "closure_rate", "on_time_rate",
        "rework_rate", "avg_hours"].map((k) => el("th", {}, t(k))))),
      el("tbody", {}, rows.map((r) => el("tr", {},
        el("td", {}, areaName(r)), el("td", {}, r.registered), el("td", {}, r.due), el("td", {}, r.closed),
        el("td", {}, pct(r.closure_rate)), el("td", {}, pct(r.on_time_rate)), el("td", {}, pct(r.rework_rate)),
        el("td", {}, r.avg_handling_hours === null ? "—" : r.avg_handling_hours.toFixed(1))))))));
  };
  const btn = el("button", { type: "button" }, t("refresh"));
  btn.addEventListener("click", load);
  dim.addEventListener("change", load);
  main.append(el("div", { class: "page" }, el("h1", {}, t("assess_title")),
    el("div", { class: "row-gap" }, t("period"), from, t("to"), to, t("dimension"), dim, btn), out));
  load();
}
function areaName(r) {
  if (r.dimension === "department") return deptName(r.key);
  if (r.dimension === "worker") return r.key;
  for (const f of (app.grid ? app.grid.features : [])) {
    for (const level of ["district", "street", "community"]) {
      const a = f.properties[level];
      if (a && a.code === r.key) return `${a.name} (${a.code})`;
    }
  }
  return r.key;
}
function chart(rows) {
  const ns = "http://www.w3.org/2000/svg";
  const rowH = 26, left = 220, width = 720, barW = width - left - 60;
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "chart");
  svg.setAttribute("width", width);
  svg.setAttribute("height", rows.length * rowH + 10);
  const add = (tag, attrs, text) => {
    const n = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
    if (text !== undefined) n.textContent = text;
    svg.append(n);
  };
  rows.forEach((r, i) => {
    const y = i * rowH + 4;
    const name = areaName(r);
    add("text", { x: left - 8, y: y + 15, "text-anchor": "end" }, name.length > 18 ? name.slice(0, 17) + "…" : name);
    add("rect", { x: left, y, width: Math.max(1, (r.closure_rate || 0) * barW), height: 10, class: "bar" });
    add("rect", { x: left, y: y + 11, width: Math.max(1, (r.on_time_rate || 0) * barW), height: 8, class: "bar2" });
    add("text", { x: left + (r.closure_rate || 0) * barW + 6, y: y + 15 }, pct(r.closure_rate));
  });
  return svg;
}

// ---- routing --------------------------------------------------------------------------------
async function route() {
  const main = document.getElementById("main");
  if (app.token && !app.boot) {
    try { await signIn(app.token); } catch (e) { app.token = ""; sessionStorage.removeItem("gs.token"); }
  }
  const hash = location.hash || "#/cases";
  if (!app.boot && hash !== "#/signin") { location.hash = "#/signin"; return; }
  if (app.map) { app.map.remove(); app.map = null; app.cellLayer = null; app.markerLayer = null; }
  main.replaceChildren();
  const m = hash.match(/^#\/case\/(\d+)$/);
  app.page = m ? "case" : hash.slice(2) || "cases";
  app.caseId = m ? Number(m[1]) : null;
  applyChrome();
  document.body.dataset.page = app.page;
  if (app.page === "signin") {
    if (app.boot) { location.hash = "#/cases"; return; }
    renderSignin(main);
  } else if (app.page === "case") await renderCase(main, app.caseId);
  else if (app.page === "fleet") await renderFleet(main);
  else if (app.page === "assessment") await renderAssessment(main);
  else { app.page = "cases"; applyChrome(); renderCases(main); }
  document.body.dataset.ready = app.page;
}

window.addEventListener("hashchange", route);
document.getElementById("lang-toggle").addEventListener("click", () => {
  app.lang = app.lang === "zh" ? "en" : "zh";
  localStorage.setItem("gs.lang", app.lang);
  route();
});
document.getElementById("signout").addEventListener("click", signOut);
route();
