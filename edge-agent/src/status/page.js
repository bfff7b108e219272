// The box page: polls /api/status and draws what is alive and what is dead. Loads nothing from
// anywhere but this box. Every value from the API goes through textContent, never HTML.
"use strict";

const POLL_MS = 2000;

const TEXT = {
  en: {
    title: "Gridsense edge box", cameras: "Cameras", sensors: "Sensors", sensor: "Sensor",
    state: "State", last_value: "Last value", battery: "Battery", last_seen: "Last seen",
    bad_input: "Bad input", uplink: "Uplink to the hub", store: "Storage",
    recent_events: "Recent events", admin_password: "Admin password", sign_in: "Sign in",
    sign_out: "Sign out", cancel: "Cancel", signed_in: "Signed in (admin)",
    wrong_password: "Wrong password", version: "version", up: "up", updated: "updated",
    all_ok: "All OK: nothing on this box needs attention.",
    problems: "Needs attention", unreachable: "The agent does not answer; data below is old.",
    streaming: "streaming", connecting: "connecting", stalled: "stalled", offline: "OFFLINE",
    no_frame: "no frame yet", camera_offline_overlay: "OFFLINE",
    pictures_need_sign_in: "Sign in to see pictures",
    fps: "Frames/s", detect_fps: "Detections/s", inference: "Inference", frames: "Frames",
    drops: "Dropped", reconnects: "Reconnects", zones: "Zones", tracks: "Tracked objects",
    reconnect: "Reconnect", ok: "OK", stale: "STALE", never: "never",
    broker: "Broker", connected: "connected", down: "DOWN", queue: "queue",
    mode: "Mode", rtt: "Round trip", backlog: "Backlog", oldest_unsynced: "Oldest unsynced",
    acked: "Acknowledged up to", sessions: "Sessions", last_error: "Last error",
    disabled: "not configured", catching_up: "catching up", revoked: "REVOKED",
    quota: "Quota used", disk: "Disk", free_of: "free of", events_held: "Events held",
    unsynced: "unsynced", lost: "Events lost to the quota", evidence_files: "Evidence files",
    data_dir: "Data folder", no_events: "No events yet.", synced: "synced",
    not_synced: "not yet synced", ago: "ago", none: "none", no_sensors: "No sensors configured.",
    no_cameras: "No cameras configured.", no_snapshot: "no snapshot",
    motion_gated: "motion gate", superseded: "superseded", bad_frame: "bad frame",
    detect_error: "detector error", fired: "fired", not_fired: "waiting",
    k_camera_offline: "Camera offline", k_camera_stalled: "Camera delivers no frames",
    k_sensor_stale: "Sensor silent", k_mqtt_down: "MQTT broker unreachable",
    k_uplink_offline: "Hub unreachable (events are buffered)", k_uplink_revoked: "Box revoked by the hub",
    k_store_nearly_full: "Event store nearly full", k_disk_nearly_full: "Disk nearly full",
    k_events_lost: "Unsynced events were lost to the quota",
  },
  zh: {
    title: "Gridsense 边缘盒子", cameras: "摄像头", sensors: "传感器", sensor: "传感器",
    state: "状态", last_value: "最新读数", battery: "电量", last_seen: "最后上报",
    bad_input: "异常报文", uplink: "上行同步（中心）", store: "存储",
    recent_events: "最近事件", admin_password: "管理员密码", sign_in: "登录",
    sign_out: "退出", cancel: "取消", signed_in: "已登录（管理员）",
    wrong_password: "密码错误", version: "版本", up: "运行", updated: "更新于",
    all_ok: "一切正常：本盒子没有需要处理的问题。",
    problems: "需要处理", unreachable: "盒子程序无响应，以下数据已过时。",
    streaming: "推流中", connecting: "连接中", stalled: "无画面", offline: "离线",
    no_frame: "尚无画面", camera_offline_overlay: "离线",
    pictures_need_sign_in: "登录后可查看画面",
    fps: "帧率", detect_fps: "检测帧率", inference: "推理耗时", frames: "帧数",
    drops: "丢弃", reconnects: "重连次数", zones: "区域", tracks: "跟踪目标",
    reconnect: "重连", ok: "正常", stale: "失联", never: "从未",
    broker: "MQTT 服务", connected: "已连接", down: "断开", queue: "队列",
    mode: "模式", rtt: "往返时延", backlog: "待同步", oldest_unsynced: "最早未同步",
    acked: "已确认至", sessions: "会话数", last_error: "最近错误",
    disabled: "未配置", catching_up: "同步中", revoked: "已吊销",
    quota: "配额使用", disk: "磁盘", free_of: "可用，共", events_held: "事件数",
    unsynced: "未同步", lost: "因配额丢失的事件", evidence_files: "证据文件",
    data_dir: "数据目录", no_events: "暂无事件。", synced: "已同步",
    not_synced: "未同步", ago: "前", none: "无", no_sensors: "未配置传感器。",
    no_cameras: "未配置摄像头。", no_snapshot: "无快照",
    motion_gated: "运动门控", superseded: "被新帧替换", bad_frame: "坏帧",
    detect_error: "检测错误", fired: "已触发", not_fired: "未触发",
    k_camera_offline: "摄像头离线", k_camera_stalled: "摄像头无画面",
    k_sensor_stale: "传感器失联", k_mqtt_down: "MQTT 服务不可达",
    k_uplink_offline: "中心不可达（事件已缓存）", k_uplink_revoked: "盒子已被中心吊销",
    k_store_nearly_full: "事件存储将满", k_disk_nearly_full: "磁盘将满",
    k_events_lost: "未同步事件因配额被丢弃",
  },
};

let lang = (localStorage.getItem("gs-lang") || (navigator.languages || [])[0] || navigator.language || "en").startsWith("zh") ? "zh" : "en";
let last = null;
let signedIn = false;
let failedPolls = 0;

function t(key) { return (TEXT[lang] && TEXT[lang][key]) || TEXT.en[key] || key; }

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "on") for (const [ev, fn] of Object.entries(v)) e.addEventListener(ev, fn);
    else e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function ago(ms, now) {
  if (ms === null || ms === undefined) return t("never");
  const s = Math.max(0, Math.round((now - ms) / 1000));
  let v;
  if (s < 120) v = s + "s"; else if (s < 7200) v = Math.round(s / 60) + "min";
  else if (s < 172800) v = Math.round(s / 3600) + "h"; else v = Math.round(s / 86400) + "d";
  return lang === "zh" ? v + t("ago") : v + " " + t("ago");
}

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const mib = 1024 * 1024;
  return n >= 1024 * mib ? (n / 1024 / mib).toFixed(1) + " GiB" : (n / mib).toFixed(1) + " MiB";
}

function num(v, digits) { return v === null || v === undefined ? "–" : Number(v).toFixed(digits); }

function applyStatic() {
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  document.title = t("title");
  for (const e of document.querySelectorAll("[data-i18n]")) e.textContent = t(e.dataset.i18n);
  document.getElementById("lang").textContent = lang === "zh" ? "English" : "中文";
}

function renderBanner(r) {
  const b = document.getElementById("banner");
  b.replaceChildren();
  if (failedPolls > 0) {
    b.className = "banner bad";
    b.append(t("unreachable"));
    return;
  }
  if (r.problems.length === 0) {
    b.className = "banner ok";
    b.append("✔ " + t("all_ok"));
    return;
  }
  b.className = "banner bad";
  b.append("✖ " + t("problems") + " (" + r.problems.length + ")");
  const ul = el("ul");
  for (const p of r.problems) {
    ul.append(el("li", { "data-problem": p.kind }, t("k_" + p.kind) + ": " + p.subject + (p.detail ? " — " + p.detail : "")));
  }
  b.append(ul);
}

function renderCameras(r) {
  const box = document.getElementById("cameras");
  box.replaceChildren();
  const det = document.getElementById("detector");
  det.textContent = r.cameras.length
    ? t("inference") + ": " + num(r.detector.inference_ms, 1) + " ms · " + t("queue") + ": " + r.detector.queue_len
    : t("no_cameras");
  for (const c of r.cameras) {
    const dead = c.state === "offline" || c.state === "stalled";
    const badgeClass = c.state === "streaming" ? "ok" : dead ? "bad" : "warn";
    const card = el("div", { class: "card" + (dead ? " dead" : c.state === "streaming" ? "" : " warn"), "data-camera": c.id, "data-state": c.state });
    card.append(el("div", { class: "head" },
      el("span", { class: "name" }, c.id),
      el("span", { class: "badge cam-state " + badgeClass }, t(c.state))));
    const thumb = el("div", { class: "thumb-box" + (dead ? " dead" : "") });
    // Pictures are for the signed-in technician only (the API refuses them otherwise).
    if (c.last_frame_ms !== null && signedIn) {
      // One <img> per camera, kept across polls, so the picture never blinks while reloading.
      let img = thumbs.get(c.id);
      if (!img) {
        img = el("img", { class: "cam-thumb", alt: c.id });
        thumbs.set(c.id, img);
      }
      const src = "/api/cameras/" + encodeURIComponent(c.id) + "/thumbnail.jpg?t=" + c.last_frame_ms;
      if (!dead && img.dataset.src !== src) {
        img.dataset.src = src;
        img.src = src;
      }
      thumb.append(img);
    }
    if (dead) thumb.append(el("div", { class: "overlay" }, t("camera_offline_overlay")));
    else if (c.last_frame_ms === null) thumb.append(el("div", { class: "overlay" }, t("no_frame")));
    else if (!signedIn) thumb.append(el("div", { class: "overlay sign-in-needed" }, t("pictures_need_sign_in")));
    card.append(thumb);
    const drops = Object.entries(c.drops).filter(([, v]) => v > 0).map(([k, v]) => t(k) + " " + v).join(", ") || "0";
    const stats = el("div", { class: "stats" });
    const kv = (k, v) => { stats.append(el("span", { class: "k" }, t(k)), el("span", { class: "v" }, v)); };
    kv("fps", num(c.fps, 1) + " / " + num(c.configured_fps, 0));
    kv("detect_fps", num(c.detect_fps, 1));
    kv("frames", c.frames);
    kv("reconnects", c.reconnects);
    kv("drops", drops);
    kv("zones", c.zones.join(", ") || t("none"));
    card.append(stats);
    if (c.last_error) card.append(el("div", { class: "error" }, c.last_error));
    if (c.tracks.length) {
      const d = el("details", { class: "tracks" }, el("summary", {}, t("tracks") + " (" + c.tracks.length + ")"));
      const ul = el("ul");
      for (const tr of c.tracks) {
        const li = el("li", { "data-track": tr.id }, "#" + tr.id + " " + tr.label + " " + Math.round(tr.score * 100) + "% · " + num(tr.age_secs, 0) + "s");
        for (const x of tr.explanations) {
          li.append(el("div", { class: "why" }, x.rule + ": " + (x.fired ? t("fired") : t("not_fired")) + " — " + x.reason));
        }
        ul.append(li);
      }
      d.append(ul);
      if (openTracks.has(c.id)) d.open = true;
      d.addEventListener("toggle", () => { if (d.open) openTracks.add(c.id); else openTracks.delete(c.id); });
      card.append(d);
    }
    if (signedIn) {
      card.append(el("div", { class: "actions" }, el("button", {
        type: "button", on: { click: () => reconnect(c.id) },
      }, t("reconnect"))));
    }
    box.append(card);
  }
}
const openTracks = new Set();
const thumbs = new Map();

function renderSensors(r) {
  const body = document.querySelector("#sensors tbody");
  body.replaceChildren();
  const mqtt = document.getElementById("mqtt");
  mqtt.textContent = r.mqtt
    ? t("broker") + ": " + (r.mqtt.connected ? t("connected") : t("down"))
    : t("no_sensors");
  mqtt.className = "sub" + (r.mqtt && !r.mqtt.connected ? " error" : "");
  document.getElementById("sensors").hidden = r.sensors.length === 0;
  for (const s of r.sensors) {
    const values = Object.entries(s.values).filter(([k]) => k !== "battery")
      .map(([k, v]) => k + " " + Number(Number(v).toFixed(2))).join(", ");
    const bad = Object.values(s.bad_input).reduce((a, b) => a + b, 0);
    body.append(el("tr", { class: s.stale ? "dead" : "", "data-sensor": s.id },
      el("td", {}, el("strong", {}, s.id), el("div", { class: "empty" }, s.device)),
      el("td", {}, el("span", { class: "badge " + (s.stale ? "bad" : "ok") }, s.stale ? t("stale") : t("ok"))),
      el("td", { class: "num sensor-value" }, values || "–"),
      el("td", { class: "num" }, s.battery_percent === null ? "–" : Math.round(s.battery_percent) + "%"),
      el("td", { class: "num" }, ago(s.last_seen_ms, r.generated_at_ms)),
      el("td", { class: "num" }, bad)));
  }
}

function dl(id, rows) {
  const d = document.getElementById(id);
  d.replaceChildren();
  for (const [k, v] of rows) d.append(el("dt", {}, t(k)), el("dd", {}, v));
}

function renderUplink(r) {
  const u = r.uplink;
  const dead = u.mode === "offline" || u.mode === "revoked";
  document.getElementById("uplink-section").className = "panel" + (dead ? " dead" : "");
  const mode = el("span", { class: "badge " + (dead ? "bad" : u.mode === "connected" ? "ok" : "warn"), id: "uplink-mode" }, t(u.mode));
  const rows = [
    ["mode", mode],
    ["rtt", u.rtt_ms === null ? "–" : num(u.rtt_ms, 1) + " ms"],
    ["backlog", String(u.backlog_events)],
    ["oldest_unsynced", u.oldest_unsynced_ms === null ? "–" : ago(u.oldest_unsynced_ms, r.generated_at_ms)],
    ["acked", "#" + u.acked_seq],
  ];
  if (u.last_error) rows.push(["last_error", el("span", { class: "error" }, u.last_error)]);
  dl("uplink", rows);
}

function renderStore(r) {
  const s = r.store;
  const used = s.quota_bytes ? s.usage_bytes / s.quota_bytes : 0;
  const hasProblem = (kind) => r.problems.some((p) => p.kind === kind);
  const storeFull = hasProblem("store_nearly_full") || hasProblem("events_lost");
  const diskFull = hasProblem("disk_nearly_full");
  const meter = (frac, bad) => {
    const m = el("div", { class: "meter" + (bad ? " warn" : "") });
    const bar = el("span");
    bar.style.width = Math.min(100, Math.max(0, frac * 100)).toFixed(1) + "%";
    m.append(bar);
    return m;
  };
  const quota = el("div", {}, bytes(s.usage_bytes) + " / " + bytes(s.quota_bytes) + " (" + (used * 100).toFixed(1) + "%)", meter(used, storeFull));
  const diskUsed = s.disk_total_bytes ? 1 - s.disk_free_bytes / s.disk_total_bytes : 0;
  const disk = el("div", {}, bytes(s.disk_free_bytes) + " " + t("free_of") + " " + bytes(s.disk_total_bytes), meter(diskUsed, diskFull));
  const rows = [
    ["quota", quota],
    ["disk", disk],
    ["events_held", s.events + " (" + s.unsynced_events + " " + t("unsynced") + ")"],
    ["evidence_files", String(s.evidence_files)],
  ];
  if (s.lost_events_total > 0) rows.push(["lost", el("span", { class: "error" }, String(s.lost_events_total))]);
  rows.push(["data_dir", s.data_dir]);
  dl("store", rows);
  document.getElementById("store-section").className = "panel" + (storeFull || diskFull ? " dead" : "");
}

function renderEvents(r) {
  const box = document.getElementById("events");
  box.replaceChildren();
  if (r.recent_events.length === 0) {
    box.append(el("div", { class: "empty" }, t("no_events")));
    return;
  }
  for (const e of r.recent_events) {
    const name = (lang === "zh" ? e.name_zh : e.name_en) || e.category_key || e.category;
    const card = el("div", { class: "event", "data-seq": e.seq });
    if (e.evidence.length && signedIn) {
      const href = "/api/evidence/" + e.evidence[0];
      card.append(el("a", { href, target: "_blank" }, el("img", { src: href, alt: name, loading: "lazy" })));
    } else if (e.evidence.length) {
      card.append(el("div", { class: "no-snapshot" }, t("pictures_need_sign_in")));
    } else {
      card.append(el("div", { class: "no-snapshot" }, t("no_snapshot")));
    }
    card.append(el("div", { class: "body" },
      el("div", { class: "cat" }, name),
      el("div", {}, e.source_kind + " " + e.source_id + " · " + e.severity),
      el("div", { class: "when" }, "#" + e.seq + " · " + ago(e.observed_at_ms, r.generated_at_ms) + " · " + (e.synced ? t("synced") : t("not_synced")))));
    box.append(card);
  }
}

function renderMeta(r) {
  document.getElementById("meta").textContent =
    t("version") + " " + r.version + " · " + t("up") + " " + ago(Date.now() - r.uptime_secs * 1000, Date.now()).replace(/ ?(ago|前)$/, "");
  document.getElementById("footer").textContent = t("updated") + " " + new Date(r.generated_at_ms).toLocaleString(lang === "zh" ? "zh-CN" : "en-GB");
}

function renderAuth(r) {
  const a = document.getElementById("auth");
  a.replaceChildren();
  if (!r || !r.sign_in_available) return;
  if (signedIn) {
    a.append(el("span", {}, t("signed_in") + " "), el("button", { type: "button", id: "signout", on: { click: signOut } }, t("sign_out")));
  } else {
    a.append(el("button", { type: "button", id: "signin-open", on: { click: () => document.getElementById("signin").showModal() } }, t("sign_in")));
  }
}

function render() {
  applyStatic();
  if (!last) { renderBanner({ problems: [] }); return; }
  renderMeta(last);
  renderBanner(last);
  renderAuth(last);
  renderCameras(last);
  renderSensors(last);
  renderUplink(last);
  renderStore(last);
  renderEvents(last);
}

async function poll() {
  try {
    const res = await fetch("/api/status", { cache: "no-store" });
    if (!res.ok) throw new Error("HTTP " + res.status);
    last = await res.json();
    failedPolls = 0;
  } catch (err) {
    failedPolls += 1;
  }
  render();
  setTimeout(poll, POLL_MS);
}

async function refreshSession() {
  try {
    const res = await fetch("/api/session", { cache: "no-store" });
    if (res.ok) signedIn = (await res.json()).signed_in === true;
  } catch (err) { /* the poll shows the agent as unreachable */ }
}

async function signIn(ev) {
  ev.preventDefault();
  const pw = document.getElementById("password");
  const res = await fetch("/api/session", {
    method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify({ password: pw.value }),
  });
  pw.value = "";
  if (res.ok) {
    signedIn = true;
    document.getElementById("signin-error").textContent = "";
    document.getElementById("signin").close();
    render();
  } else {
    document.getElementById("signin-error").textContent = t("wrong_password");
  }
}

async function signOut() {
  await fetch("/api/session", { method: "DELETE" });
  signedIn = false;
  render();
}

async function reconnect(id) {
  const res = await fetch("/api/cameras/" + encodeURIComponent(id) + "/reconnect", { method: "POST" });
  if (res.status === 401) { signedIn = false; render(); }
}

document.getElementById("lang").addEventListener("click", () => {
  lang = lang === "zh" ? "en" : "zh";
  localStorage.setItem("gs-lang", lang);
  render();
});
document.getElementById("signin-form").addEventListener("submit", signIn);
document.getElementById("signin-cancel").addEventListener("click", () => document.getElementById("signin").close());
applyStatic();
refreshSession().then(poll);
