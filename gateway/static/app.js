// guardstream live dashboard: fences and guards on an SVG map, alerts with actions,
// per-priority event rates. Plain JavaScript; everything comes from the gateway that served it.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const VIEW = { width: 1000, height: 700, pad: 40 };
const RATE_WINDOW_MS = 10000;
const MAX_ALERTS = 200;
const NO_RETRY = new Set([4401, 4403, 4408]); // refusals a reconnect would only repeat
const ALERT_SCHEMAS = new Set(["guardstream.DeviceAlert", "guardstream.GeofenceEvent"]);
// alerts that put a person at risk stand apart from routine fence events, with a cue
const LIFE_SAFETY = new Set(["PANIC", "SOS", "FALL", "SMOKE", "FIRE", "GEOFENCE_VIOLATION"]);
const SEVERITY_RANK = { CRITICAL: 0, HIGH: 1, NORMAL: 2, LOW: 3 };
const STALE_MS = 5 * 60 * 1000; // a guard not heard from for this long is drawn as stale
const STATUS_OF = { ACKNOWLEDGE: "ACKNOWLEDGED", RESOLVE: "RESOLVED", FALSE_ALARM: "FALSE_ALARM" };
// an alert's open notifications panel asks again this often: escalations and retries land without an event
const NOTIFY_REFRESH_MS = 5000;

const token = new URLSearchParams(location.search).get("token") || "";
// the alert a link names: notifications link to `<dashboard>/#alert=<event id>`
const linkedAlert = () => new URLSearchParams(location.hash.slice(1)).get("alert") || null;
const state = {
  fences: [],
  guards: new Map(),       // device id -> {lat, lon, violation, tenant}
  alerts: new Map(),       // alert event id -> list element
  lastSeen: {},            // "topic:partition" -> last offset received (for resume)
  parkedActions: new Map(), // alert event id -> an action the snapshot holds for an alert not written yet
  awaitingSnapshot: false, // a snapshot subscribe is out: its offsets come with snapshot_end
  rateStamps: { critical: [], high: [], normal: [], low: [] },
  principal: null,
  socket: null,
  retryMs: 1000,
  projection: null,
  linked: linkedAlert(),   // the alert the page's link names, until it is shown
};

const $ = (id) => document.getElementById(id);

function setConnection(name, detail) {
  const el = $("connection");
  el.dataset.state = name;
  el.className = "state state-" + name;
  el.textContent = detail ? name + " (" + detail + ")" : name;
}

function say(text) { $("message").textContent = text; }

// -- map ---------------------------------------------------------------------------------

function fencePoints(fence) {
  const g = fence.geometry;
  if (g.type === "Polygon") return g.coordinates[0];
  if (g.type === "MultiPolygon") return g.coordinates.flatMap((polygon) => polygon[0]);
  if (g.type === "Point") {
    const r = (fence.radius_m || 50) / 111320;
    const [lon, lat] = g.coordinates;
    const k = Math.cos(lat * Math.PI / 180) || 1;
    return [[lon - r / k, lat - r], [lon + r / k, lat + r]];
  }
  return [];
}

function fitProjection() {
  const points = state.fences.flatMap(fencePoints);
  for (const guard of state.guards.values()) points.push([guard.lon, guard.lat]);
  if (points.length === 0) return null;
  let [minLon, minLat, maxLon, maxLat] = [Infinity, Infinity, -Infinity, -Infinity];
  for (const [lon, lat] of points) {
    minLon = Math.min(minLon, lon); maxLon = Math.max(maxLon, lon);
    minLat = Math.min(minLat, lat); maxLat = Math.max(maxLat, lat);
  }
  const k = Math.cos(((minLat + maxLat) / 2) * Math.PI / 180);
  const spanX = Math.max((maxLon - minLon) * k, 1e-5);
  const spanY = Math.max(maxLat - minLat, 1e-5);
  const scale = Math.min((VIEW.width - 2 * VIEW.pad) / spanX, (VIEW.height - 2 * VIEW.pad) / spanY);
  return { minLon, minLat, maxLon, maxLat, k, scale };
}

function project(p, lon, lat) {
  return [VIEW.pad + (lon - p.minLon) * p.k * p.scale, VIEW.height - VIEW.pad - (lat - p.minLat) * p.scale];
}

function outside(p, lon, lat) {
  return !p || lon < p.minLon || lon > p.maxLon || lat < p.minLat || lat > p.maxLat;
}

function svg(name, attrs) {
  const el = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attrs || {})) el.setAttribute(key, value);
  return el;
}

function drawFences() {
  const layer = $("fences");
  layer.replaceChildren();
  const p = state.projection;
  if (!p) return;
  for (const fence of state.fences) {
    const g = fence.geometry;
    const rings = g.type === "Polygon" ? [g.coordinates[0]] : g.type === "MultiPolygon" ? g.coordinates.map((x) => x[0]) : [];
    for (const ring of rings) {
      const points = ring.map(([lon, lat]) => project(p, lon, lat).join(",")).join(" ");
      const shape = svg("polygon", { points, class: "fence fence-" + fence.kind });
      const title = svg("title");
      title.textContent = fence.name + " (" + fence.tenant + ", " + fence.kind + ")";
      shape.append(title);
      layer.append(shape);
    }
    if (g.type === "Point") {
      const [x, y] = project(p, g.coordinates[0], g.coordinates[1]);
      layer.append(svg("circle", { cx: x, cy: y, r: (fence.radius_m || 50) / 111320 * p.scale,
                                   class: "fence fence-" + fence.kind }));
    }
    const [lon, lat] = fencePoints(fence)[0] || [null, null];
    if (lon !== null) {
      const [x, y] = project(p, lon, lat);
      const label = svg("text", { x: x + 4, y: y - 4, class: "fence-label" });
      label.textContent = fence.name;
      layer.append(label);
    }
  }
}

function drawGuard(id) {
  const guard = state.guards.get(id);
  const p = state.projection;
  if (!guard || !p) return;
  let node = guard.node;
  if (!node) {
    node = svg("g", { class: "guard" });
    node.dataset.guard = id;
    node.addEventListener("click", () => drawTrack(id));
    node.append(svg("circle", { r: 6 }));
    node.append(svg("title"));
    const label = svg("text", { x: 9, y: 4 });
    label.textContent = id;
    node.append(label);
    $("guards").append(node);
    guard.node = node;
  }
  const [x, y] = project(p, guard.lon, guard.lat);
  node.setAttribute("transform", "translate(" + x.toFixed(1) + "," + y.toFixed(1) + ")");
  node.classList.toggle("violation", Boolean(guard.violation));
  markStale(id, guard);
}

function markStale(id, guard) {
  if (!guard.node || !guard.ts) return;
  const stale = Date.now() - guard.ts > STALE_MS;
  guard.node.classList.toggle("stale", stale);
  guard.node.querySelector("title").textContent = id + " · " + guard.tenant + " · last seen " +
    new Date(guard.ts).toLocaleTimeString() + (stale ? " (stale)" : "");
}

// the last hour of one guard, from the history API, simplified to what a map can show
async function drawTrack(id) {
  const layer = $("track");
  const query = new URLSearchParams({ guard: id, from: "-1h", max_points: "500", token });
  try {
    const reply = await fetch("/api/positions?" + query.toString(), { cache: "no-store" });
    if (!reply.ok) throw new Error("HTTP " + reply.status);
    const track = await reply.json();
    const p = state.projection;
    layer.replaceChildren();
    layer.dataset.guard = id;
    if (!p || track.points.length === 0) return;
    const points = track.points.map((fix) => project(p, fix.lon, fix.lat).map((v) => v.toFixed(1)).join(","));
    layer.append(svg("polyline", { points: points.join(" "), class: "track-line" }));
    say("track of " + id + ": " + track.points.length + " of " + track.source_points + " fixes in the last hour");
  } catch (error) {
    say("track of " + id + " unavailable: " + error.message);
  }
}

// labels never overlap: a label colliding with one already placed is hidden (guards in
// violation first, then other guards, then fences); its name stays in the marker's tooltip
function declutter() {
  const labels = [...document.querySelectorAll("#guards .guard.violation text"),
                  ...document.querySelectorAll("#guards .guard:not(.violation) text"),
                  ...document.querySelectorAll("#fences text")];
  const CELL = 64;
  const placed = new Map(); // grid cell -> boxes placed in it
  for (const label of labels) {
    label.style.visibility = "";
    const local = label.getBBox();
    const m = label.getCTM && label.getCTM();
    // into the map's coordinates: a guard's label sits in its marker's translated group
    const box = m ? { x: m.a * local.x + m.e, y: m.d * local.y + m.f, w: m.a * local.width, h: m.d * local.height } :
      { x: local.x, y: local.y, w: local.width, h: local.height };
    const cells = [];
    for (let cx = Math.floor(box.x / CELL); cx <= Math.floor((box.x + box.w) / CELL); cx++) {
      for (let cy = Math.floor(box.y / CELL); cy <= Math.floor((box.y + box.h) / CELL); cy++) cells.push(cx + ":" + cy);
    }
    const hit = cells.some((cell) => (placed.get(cell) || []).some((o) =>
      box.x < o.x + o.w && o.x < box.x + box.w && box.y < o.y + o.h && o.y < box.y + box.h));
    if (hit) {
      label.style.visibility = "hidden";
      continue;
    }
    for (const cell of cells) {
      if (!placed.has(cell)) placed.set(cell, []);
      placed.get(cell).push(box);
    }
  }
}

function redrawMap() {
  state.projection = fitProjection();
  drawFences();
  for (const id of state.guards.keys()) drawGuard(id);
  if ($("track").dataset.guard) drawTrack($("track").dataset.guard);
  declutter();
}

async function loadFences() {
  try {
    const reply = await fetch("/api/fences?token=" + encodeURIComponent(token), { cache: "no-store" });
    if (!reply.ok) throw new Error("HTTP " + reply.status);
    state.fences = (await reply.json()).fences;
    $("map-note").textContent = state.fences.length + " fence(s)";
    redrawMap();
  } catch (error) {
    $("map-note").textContent = "fences unavailable: " + error.message;
  }
}

function onPosition(data) {
  const known = state.guards.get(data.device_id) || {};
  if (known.ts && data.ts_ms < known.ts) return; // a late fix does not move the guard back
  Object.assign(known, { lat: data.lat, lon: data.lon, violation: data.violation, tenant: data.tenant,
                         ts: data.ts_ms });
  state.guards.set(data.device_id, known);
  if (outside(state.projection, data.lon, data.lat)) redrawMap();
  else drawGuard(data.device_id);
}

// -- alerts ------------------------------------------------------------------------------

function mayAct(tenant) {
  const who = state.principal;
  if (!who) return false;
  const noc = who.roles.includes("noc");
  return (noc || who.roles.includes("operator")) && (noc || who.tenants.includes(tenant));
}

function element(tag, className, text) {
  const el = document.createElement(tag);
  if (className) el.className = className;
  if (text !== undefined) el.textContent = text;
  return el;
}

function onAlert(schema, data) {
  if (state.alerts.has(data.event_id)) return;
  const geofence = schema === "guardstream.GeofenceEvent";
  const lifeSafety = !geofence && LIFE_SAFETY.has(data.kind);
  const item = element("li", "alert " + (geofence ? "routine" : "severity-" + data.severity) +
                       (lifeSafety ? " life-safety" : ""));
  // life-safety first, then by severity (routine fence events last), newest first within each
  item.dataset.rank = String(lifeSafety ? 0 : geofence ? 9 : 1 + (SEVERITY_RANK[data.severity] ?? 4));
  item.dataset.ts = String(data.ts_ms);
  item.dataset.alertId = data.event_id;
  item.dataset.tenant = data.tenant;
  const title = geofence ? "FENCE " + data.transition + " " + data.fence_id : data.kind + " · " + data.severity;
  const status = element("span", "status status-NEW", geofence ? data.fence_kind : "NEW");
  const head = element("div", "title", title + " ");
  head.append(status);
  item.append(head);
  item.append(element("div", "meta", new Date(data.ts_ms).toLocaleTimeString() + " · " + data.tenant + " · " + data.device_id));
  if (data.message) item.append(element("div", "text", data.message));
  if (!geofence) item.append(notificationsPanel(data.event_id));
  if (!geofence && mayAct(data.tenant)) {
    for (const [action, label, css] of [["ACKNOWLEDGE", "Acknowledge", "ack"], ["RESOLVE", "Resolve", "resolve"],
                                       ["FALSE_ALARM", "False alarm", "false-alarm"]]) {
      const button = element("button", css, label);
      button.type = "button";
      button.addEventListener("click", () => act(data.event_id, action, item));
      item.append(button);
    }
  }
  const list = $("alerts");
  const after = [...list.children].find((other) => Number(other.dataset.rank) > Number(item.dataset.rank) ||
    (other.dataset.rank === item.dataset.rank && Number(other.dataset.ts) < data.ts_ms));
  list.insertBefore(item, after || null);
  state.alerts.set(data.event_id, item);
  if (lifeSafety) cue(item);
  while (list.children.length > MAX_ALERTS) {
    const last = list.lastElementChild;
    state.alerts.delete(last.dataset.alertId);
    last.remove();
  }
  $("alert-count").textContent = String(state.alerts.size);
  if (data.event_id === state.linked) showLinkedAlert();
  const parked = state.parkedActions.get(data.event_id);
  if (parked) {
    state.parkedActions.delete(data.event_id);
    onAlertStatus({ alert_event_id: parked.alert_event_id, status: STATUS_OF[parked.action] || parked.action,
                    actor: parked.actor, note: parked.note, ts_ms: parked.ts_ms });
  }
}

// a visible and an audible cue for a life-safety alert; the tone is generated here, nothing is loaded
function cue(item) {
  item.classList.add("fresh");
  setTimeout(() => item.classList.remove("fresh"), 10000);
  const AudioContext = window.AudioContext || window.webkitAudioContext;
  if (!AudioContext) return;
  try {
    state.audio = state.audio || new AudioContext();
    const now = state.audio.currentTime;
    for (const [start, pitch] of [[0, 880], [0.25, 660], [0.5, 880]]) {
      const tone = state.audio.createOscillator();
      const gain = state.audio.createGain();
      tone.frequency.value = pitch;
      gain.gain.setValueAtTime(0.15, now + start);
      gain.gain.exponentialRampToValueAtTime(0.001, now + start + 0.2);
      tone.connect(gain).connect(state.audio.destination);
      tone.start(now + start);
      tone.stop(now + start + 0.2);
    }
  } catch (error) {
    // a browser that allows no sound before a click keeps the visible cue
  }
}

function act(alertId, action, item) {
  if (!state.socket || state.socket.readyState !== WebSocket.OPEN) {
    say("not connected: the action was not sent");
    return;
  }
  for (const button of item.querySelectorAll("button")) button.disabled = true;
  state.socket.send(JSON.stringify({ op: "ack", alert_event_id: alertId, action }));
}

function onAlertStatus(message) {
  const item = state.alerts.get(message.alert_event_id);
  if (!item) return;
  const status = item.querySelector(".status");
  status.textContent = message.status;
  status.className = "status status-" + message.status;
  item.dataset.status = message.status;
  item.title = message.status + " by " + message.actor + (message.note ? ": " + message.note : "");
  let who = item.querySelector(".who");
  if (!who) {
    who = element("div", "meta who");
    item.querySelector(".title").after(who);
  }
  who.textContent = message.status.toLowerCase().replace("_", " ") + " by " + message.actor +
    (message.ts_ms ? " at " + new Date(message.ts_ms).toLocaleTimeString() : "");
  const done = message.status !== "ACKNOWLEDGED";
  for (const button of item.querySelectorAll("button")) {
    button.disabled = done || button.classList.contains("ack");
  }
  const panel = item.querySelector("details.notifications");
  if (panel && panel.open) loadNotifications(panel); // an action stops an escalation: show what it cancelled
}

// the alert a link named: selected, scrolled to, its notifications open; after the snapshot, so the
// list is complete and in order; an alert not open yet is shown when it arrives
function showLinkedAlert() {
  const id = state.linked;
  if (!id || state.awaitingSnapshot) return;
  const item = state.alerts.get(id);
  if (!item) {
    say("alert " + id + " from the link is not among the open alerts; it is shown if it arrives");
    return;
  }
  state.linked = null;
  for (const other of document.querySelectorAll("#alerts li.selected")) {
    other.classList.remove("selected");
    other.removeAttribute("aria-current");
  }
  item.classList.add("selected");
  item.setAttribute("aria-current", "true");
  item.tabIndex = -1;
  const panel = item.querySelector("details.notifications");
  if (panel) panel.open = true; // its toggle asks the history API
  item.scrollIntoView({ block: "center" });
  item.focus({ preventScroll: true });
  say("alert " + id + " opened from its link");
}

// -- what the notifier sent about an alert, from the history API -------------------------

function notificationsPanel(alertId) {
  const panel = element("details", "notifications");
  panel.dataset.alertId = alertId;
  panel.dataset.asked = "0";
  panel.append(element("summary", null, "Notifications"));
  panel.append(element("div", "meta sent-note", "loading…"));
  panel.addEventListener("toggle", () => { if (panel.open) loadNotifications(panel); });
  return panel;
}

async function loadNotifications(panel) {
  const asked = String(Number(panel.dataset.asked) + 1);
  panel.dataset.asked = asked;
  const note = panel.querySelector(".sent-note");
  try {
    const reply = await fetch("/api/alerts/" + encodeURIComponent(panel.dataset.alertId) + "/notifications?token=" +
                              encodeURIComponent(token), { cache: "no-store" });
    if (!reply.ok) throw new Error("HTTP " + reply.status);
    const body = await reply.json();
    if (panel.dataset.asked === asked) showNotifications(panel, body.notifications); // a later answer wins
  } catch (error) {
    if (panel.dataset.asked === asked) note.textContent = "notifications unavailable: " + error.message;
  }
}

function clock(ms) { return ms ? new Date(ms).toLocaleTimeString() : ""; }

function showNotifications(panel, rows) {
  const sent = rows.filter((row) => row.status === "sent").length;
  panel.querySelector("summary").textContent = "Notifications" + (rows.length ? " · " + sent + " of " + rows.length +
                                                                  " sent" : "");
  panel.querySelector(".sent-note").textContent = rows.length ? "" : "nothing sent for this alert";
  let table = panel.querySelector("table");
  if (!table) {
    table = element("table", "sent");
    const head = element("tr");
    for (const name of ["when", "channel", "to", "tier", "status", "tries"]) head.append(element("th", null, name));
    table.append(element("thead"), element("tbody"));
    table.tHead.append(head);
    panel.append(table);
  }
  table.tBodies[0].replaceChildren(...rows.map((row) => {
    const line = element("tr", "sent-" + row.status);
    line.dataset.channel = row.channel;
    line.dataset.recipient = row.recipient;
    line.dataset.tier = String(row.tier);
    line.dataset.status = row.status;
    // sent: when it went; otherwise the last attempt, or when it was planned
    const when = row.sent_ms || row.attempted_ms || row.planned_ms;
    const held = row.held_reason ? " (held: " + row.held_reason.replace("_", " ") + " at " + clock(row.held_ms) + ")" : "";
    line.append(element("td", "when", clock(when)), element("td", "channel", row.channel),
                element("td", "to", row.recipient + " · " + row.address), element("td", "tier", String(row.tier)),
                element("td", "state", row.status + held), element("td", "tries", String(row.attempts)));
    if (row.provider_response) line.title = row.provider_response;
    return line;
  }));
  table.hidden = rows.length === 0;
}

// one record of the present state the gateway sends before live events
function onSnapshotItem(schema, item) {
  if (schema === "guardstream.GuardPosition") onPosition(item);
  else if (schema === "guardstream.AlertAction") state.parkedActions.set(item.alert_event_id, item);
  else if (ALERT_SCHEMAS.has(schema)) {
    onAlert(schema, item);
    if (item.status && item.status !== "NEW") {
      onAlertStatus({ alert_event_id: item.event_id, status: item.status, actor: item.status_by,
                      note: item.status_note, ts_ms: item.status_ts_ms });
    }
  }
}

// -- rates -------------------------------------------------------------------------------

function countEvent(topic) {
  const priority = topic.slice(topic.indexOf(".") + 1);
  if (state.rateStamps[priority]) state.rateStamps[priority].push(Date.now());
}

function showRates() {
  const since = Date.now() - RATE_WINDOW_MS;
  for (const [priority, stamps] of Object.entries(state.rateStamps)) {
    while (stamps.length && stamps[0] < since) stamps.shift();
    $("rate-" + priority).textContent = (stamps.length / (RATE_WINDOW_MS / 1000)).toFixed(1);
  }
}

// -- the connection ----------------------------------------------------------------------

function channelsFor(who) {
  const channels = [];
  if (who.roles.includes("noc")) channels.push("noc:alerts");
  for (const tenant of who.tenants) {
    if (!who.roles.includes("noc")) channels.push("tenant:" + tenant + ":alerts");
    channels.push("tenant:" + tenant + ":positions", "tenant:" + tenant + ":sensors", "tenant:" + tenant + ":telemetry");
  }
  return channels;
}

function noteOffset(key, offset) {
  if (!(key in state.lastSeen) || state.lastSeen[key] < offset) state.lastSeen[key] = offset;
}

function onMessage(raw) {
  const message = JSON.parse(raw.data);
  switch (message.type) {
    case "hello": {
      state.principal = { sub: message.sub, tenants: message.tenants, roles: message.roles };
      $("who").textContent = message.sub + " · " + (message.roles.join(", ") || "no role");
      // a first connection (or a reload) starts from the present state; a reconnect resumes
      const resume = Object.keys(state.lastSeen).length ? { ...state.lastSeen } : undefined;
      setConnection("replaying");
      const subscribe = { op: "subscribe", channels: channelsFor(state.principal) };
      if (resume) subscribe.resume = resume;
      else subscribe.snapshot = true;
      state.awaitingSnapshot = !resume;
      state.socket.send(JSON.stringify(subscribe));
      break;
    }
    case "subscribed":
      // after a snapshot, the resume position is snapshot_end's offsets, below these
      if (!state.awaitingSnapshot) for (const [key, offset] of Object.entries(message.positions)) noteOffset(key, offset);
      if (state.connection !== "replaying") setConnection("live");
      break;
    case "snapshot": {
      // each row: the record's values in the order of message.fields (README, "Snapshot format")
      const fields = message.fields;
      for (const row of message.rows) {
        const item = {};
        for (let i = 0; i < fields.length; i++) item[fields[i]] = row[i];
        onSnapshotItem(message.schema, item);
      }
      break;
    }
    case "snapshot_end":
      state.awaitingSnapshot = false;
      for (const [key, offset] of Object.entries(message.offsets)) noteOffset(key, offset);
      showLinkedAlert();
      break;
    case "live":
      setConnection("live", message.replayed ? message.replayed + " replayed" : "");
      break;
    case "event":
      noteOffset(message.topic + ":" + message.partition, message.offset);
      countEvent(message.topic);
      if (message.schema === "guardstream.GuardPosition") onPosition(message.data);
      else if (ALERT_SCHEMAS.has(message.schema)) onAlert(message.schema, message.data);
      break;
    case "alert_status":
      noteOffset(message.topic + ":" + message.partition, message.offset);
      onAlertStatus(message);
      break;
    case "acked":
      say(message.action + " sent for " + message.alert_event_id);
      break;
    case "error":
      say("error " + message.code + " " + message.reason + ": " + message.detail);
      if (state.awaitingSnapshot && message.reason === "unavailable") {
        // no database behind this gateway: live events only, from now
        state.awaitingSnapshot = false;
        setConnection("connected");
        state.socket.send(JSON.stringify({ op: "subscribe", channels: channelsFor(state.principal) }));
      }
      for (const item of state.alerts.values()) {
        if (!item.dataset.status) for (const button of item.querySelectorAll("button")) button.disabled = false;
      }
      break;
    default:
      break;
  }
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  // browsers cannot set headers on a WebSocket: the token rides as a subprotocol
  const socket = new WebSocket(scheme + location.host + "/ws", ["guardstream.v1", "bearer." + token]);
  state.socket = socket;
  setConnection("connecting");
  socket.addEventListener("open", () => { state.retryMs = 1000; });
  socket.addEventListener("message", onMessage);
  socket.addEventListener("close", (event) => {
    setConnection("closed", event.code + (event.reason ? " " + event.reason : ""));
    if (NO_RETRY.has(event.code)) {
      say("refused: " + (event.reason || event.code) + " — open the page with a valid ?token=");
      return;
    }
    setTimeout(connect, state.retryMs);
    state.retryMs = Math.min(state.retryMs * 2, 30000);
  });
}

// the current state name, for the subscribed handler above
Object.defineProperty(state, "connection", { get: () => $("connection").dataset.state });

if (!token) {
  setConnection("closed", "no token");
  say("open this page with ?token=<JWT>; `guardstream up` prints a link with a demo token");
} else {
  loadFences();
  connect();
  // another alert's link opened in this tab changes only the fragment: no reload
  window.addEventListener("hashchange", () => { state.linked = linkedAlert(); showLinkedAlert(); });
  setInterval(showRates, 1000);
  setInterval(() => { for (const [id, guard] of state.guards) markStale(id, guard); }, 15000);
  setInterval(declutter, 2000); // guards move: place the labels again
  setInterval(() => { for (const panel of document.querySelectorAll("details.notifications[open]")) loadNotifications(panel); },
              NOTIFY_REFRESH_MS);
}
