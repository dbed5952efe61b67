// The browser console: views over the park store, fed by the hub (hub.js), redrawn at most
// once per animation frame whatever the message rate.
//
// Views (location.hash): #/overview, #/meters, #/meter/<id>, #/alarms, #/quotas (quota
// groups and their requests: quotas.js), #/reports (operators and admins: reports.js),
// #/insights (operators and admins: each tenant's energy insights, insights.js),
// #/notices (admins: tenant notices' figures and dead letters, notices.js), #/audit (admins).
// Operator controls are hidden for viewers (the server refuses them anyway); the audit tab
// exists for admins only. Everything visible is translated (i18n.js).

import { LineChart } from "./chart.js";
import { CommandError, HubClient } from "./hub.js";
import {
  apply as applyStrings, formatNumber, formatTime, language, onLanguage, preferredLanguage,
  setLanguage, t,
} from "./i18n.js";
import { InsightsView } from "./insights.js";
import { NoticesView } from "./notices.js";
import { QuotasView } from "./quotas.js";
import { ReportsView } from "./reports.js";
import { ParkStore } from "./store.js";
import { VirtualTable } from "./table.js";

const $ = (selector) => document.querySelector(selector);
const VIEWS = ["login", "overview", "meters", "meter", "alarms", "quotas", "reports", "insights",
  "notices", "audit"];
const ROW_HEIGHT = 30;
const RESORT_EVERY_MS = 500;
const MAX_ALARM_ROWS = 500;
const AUDIT_PAGE = 50;
const STATIC_SORTS = new Set(["meter", "tenant", "gateway"]);

const store = new ParkStore();
let hub = null;
let currentView = null;
let currentMeter = null;
let role = null;
let reports = null;
let quotas = null;
let insights = null;
let notices = null;

// -- small helpers ------------------------------------------------------------------------

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}

function may(needed) {
  const rank = { viewer: 0, operator: 1, admin: 2 };
  return role !== null && rank[role] >= rank[needed];
}

function errorText(error) {
  const code = error instanceof CommandError ? error.code : "other";
  const key = `error.${code}`;
  const text = t(key, { message: error.message || code });
  return text === key ? t("error.other", { message: error.message || code }) : text;
}

let toastTimer = null;
function toast(text, kind = "ok") {
  const box = $("#toast");
  box.textContent = text;
  box.dataset.kind = kind;
  box.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { box.hidden = true; }, 5000);
}

function kw(watts) {
  return formatNumber((watts ?? 0) / 1000, 1);
}

function alarmLabel(kind) {
  return !kind || kind === "none" ? "" : t(`alarm.${kind}`);
}

function relayLabel(meter) {
  const state = t(meter.relay === "closed" ? "relay.closed" : "relay.open");
  return meter.relay_reason ? `${state} (${t(`reason.${meter.relay_reason}`)})` : state;
}

// -- views and routing --------------------------------------------------------------------

function show(view) {
  currentView = view;
  if (view !== "quotas" && quotas) quotas.hide();
  if (view !== "notices" && notices) notices.hide();
  for (const name of VIEWS) $(`#view-${name}`).hidden = name !== view;
  for (const tab of document.querySelectorAll("#tabs a")) {
    tab.classList.toggle("active", tab.dataset.view === view
      || (view === "meter" && tab.dataset.view === "meters"));
  }
  document.body.dataset.view = view;
  renderAll();
}

function route() {
  if (!role) {
    show("login");
    return;
  }
  const [, view = "overview", ...rest] = location.hash.split("/");
  if (view === "meter" && rest.length) {
    currentMeter = decodeURIComponent(rest.join("/"));
    show("meter");
  } else if (view === "quotas") {
    show("quotas");
    quotas.show();
  } else if (view === "reports" && may("operator")) {
    show("reports");
    reports.show();
  } else if (view === "insights" && may("operator")) {
    show("insights");
    insights.show();
  } else if (view === "notices" && may("admin")) {
    show("notices");
    notices.show();
  } else if (view === "audit" && may("admin")) {
    show("audit");
    loadAudit(null, true);
  } else if (["overview", "meters", "alarms"].includes(view)) {
    show(view);
  } else {
    location.hash = "#/overview";
  }
}

// -- connection state ---------------------------------------------------------------------

let retryAt = 0;
let retryTimer = null;

function showConnection(state, retryMs) {
  const box = $("#conn");
  box.dataset.state = state;
  clearInterval(retryTimer);
  const draw = () => {
    const seconds = Math.max(0, Math.ceil((retryAt - Date.now()) / 1000));
    $("#conn-text").textContent = t(`conn.${state}`, { seconds });
  };
  if (state === "reconnecting" && retryMs) {
    retryAt = Date.now() + retryMs;
    retryTimer = setInterval(draw, 1000);
  }
  draw();
  if (state === "reconnecting" && currentView === "login") {
    loginMessage(t("login.unreachable"));
  }
}

function loginMessage(text) {
  const box = $("#login-error");
  box.textContent = text;
  box.hidden = !text;
}

function signedIn(user, newRole) {
  const before = role;
  role = newRole;
  document.body.classList.remove("signed-out");
  document.body.dataset.role = role;
  $("#tabs").hidden = false;
  $("#who").hidden = false;
  $("#who-name").textContent = user;
  $("#who-role").textContent = t(`role.${role}`);
  $("#who-role").dataset.role = role;
  $("#tab-audit").hidden = !may("admin");
  $("#tab-notices").hidden = !may("admin");
  $("#tab-reports").hidden = !may("operator");
  $("#tab-insights").hidden = !may("operator");
  for (const node of document.querySelectorAll(".operator-only")) node.hidden = !may("operator");
  $("#login-password").value = "";
  loginMessage("");
  if (before === null) route();
}

function signedOut(reason) {
  role = null;
  document.body.classList.add("signed-out");
  delete document.body.dataset.role;
  $("#tabs").hidden = true;
  $("#who").hidden = true;
  show("login");
  loginMessage(reason ? t(reason === "wrong" ? "login.wrong" : "login.expired") : "");
  $("#login-submit").disabled = false;
  $("#login-user").focus();
}

// -- rendering, batched per animation frame ------------------------------------------------

const pending = { meters: new Set(), newMeters: false, park: false, alarms: false,
  gateways: false, audit: false, all: false };
let frameRequested = false;

store.onChange((change) => {
  for (const id of change.meters) pending.meters.add(id);
  pending.newMeters ||= change.newMeters;
  pending.park ||= change.park;
  pending.alarms ||= change.alarms;
  pending.gateways ||= change.gateways;
  pending.audit ||= change.audit;
  requestFrame();
});

function requestFrame() {
  if (frameRequested) return;
  frameRequested = true;
  requestAnimationFrame(() => {
    frameRequested = false;
    const change = { ...pending, meters: pending.meters };
    pending.meters = new Set();
    pending.newMeters = pending.park = pending.alarms = pending.gateways = false;
    pending.audit = pending.all = false;
    render(change);
  });
}

function renderAll() {
  pending.all = true;
  requestFrame();
}

function render(change) {
  if (change.alarms || change.all) renderAlarmBadge();
  if (change.newMeters || change.gateways || change.all) fillGatewayFilter();
  switch (currentView) {
    case "overview":
      if (change.park || change.all) renderPark();
      if (change.gateways || change.all) renderGateways();
      break;
    case "meters":
      meterList.update(change);
      break;
    case "meter":
      if (change.all || change.meters.has(currentMeter)) renderMeter();
      if (change.all || change.alarms) renderMeterAlarms();
      break;
    case "alarms":
      if (change.alarms || change.all) renderAlarms();
      break;
    case "audit":
      if (change.audit) prependLiveAudit();
      else if (change.all) renderAudit();
      break;
    default:
      break;
  }
}

// -- overview ------------------------------------------------------------------------------

let loadChart = null;

function renderPark() {
  const park = store.park;
  if (!park) return;
  $("#stat-load").textContent = `${kw(park.load_w)} kW`;
  $("#stat-balance").textContent = park.balance_sum;
  $("#stat-on").textContent = formatNumber(park.meters_on);
  $("#stat-off").textContent = formatNumber(park.meters_off);
  $("#stat-offline").textContent = formatNumber(park.meters_offline);
  $("#stat-alarms").textContent = formatNumber(park.alarms_active);
  $("#stat-gateways").textContent = `${park.gateways_online} / ${park.gateways}`;
  loadChart ||= new LineChart($("#load-chart"), {
    color: "#2f7de1", format: (v) => formatNumber(v, v < 10 ? 1 : 0), windowMs: 600_000 });
  loadChart.setPoints(store.loadHistory.points());
}

function renderGateways() {
  const body = $("#gateway-table tbody");
  const rows = [...store.gateways.values()].sort((a, b) => (a.gateway < b.gateway ? -1 : 1));
  body.replaceChildren(...rows.map((g) => el("tr", { "data-gateway": g.gateway },
    el("td", { text: g.gateway }),
    el("td", { class: g.online ? "ok" : "bad",
      text: t(g.online ? "gateways.online" : "gateways.offline") }),
    el("td", { class: "num", text: formatNumber(g.meters) }),
    el("td", { class: "num", text: formatNumber(g.polls) }),
    el("td", { class: "num", text: formatNumber(g.failures) }))));
}

function renderAlarmBadge() {
  let open = 0;
  for (const alarm of store.alarms.values()) if (!alarm.acknowledged) open += 1;
  const badge = $("#alarm-badge");
  badge.textContent = open > 999 ? "999+" : String(open);
  badge.hidden = open === 0;
}

// -- meter table ---------------------------------------------------------------------------

class MeterList {
  constructor() {
    this.sortKey = "meter";
    this.sortDown = false;
    this.search = "";
    this.relay = "";
    this.alarm = "";
    this.gateway = "";
    this.lastSort = 0;
    this.stale = true;
    this.table = new VirtualTable($("#meter-rows"), {
      rowHeight: ROW_HEIGHT,
      row: (id) => store.meters.get(id),
      onOpen: (id) => { location.hash = `#/meter/${encodeURIComponent(id)}`; },
      columns: [
        { cls: "c-meter", text: (m) => m.meter, className: (m) => (m.online ? "" : "offline") },
        { cls: "c-tenant", text: (m) => m.tenant },
        { cls: "c-gateway", text: (m) => m.gateway },
        { cls: "c-balance num", text: (m) => m.balance,
          className: (m) => (m.balanceNumber <= 0 ? "bad" : "") },
        { cls: "c-power num", text: (m) => formatNumber(m.power_w ?? 0, 0) },
        { cls: "c-energy num", text: (m) => formatNumber(m.energy_kwh ?? 0, 1) },
        { cls: "c-relay", text: relayLabel,
          className: (m) => (m.relay === "closed" ? "on" : "off") },
        { cls: "c-alarm", text: (m) => alarmLabel(m.alarm),
          className: (m) => (m.alarm && m.alarm !== "none" ? `alarm alarm-${m.alarm}` : "") },
        { cls: "c-ts", text: (m) => formatTime(m.ts) },
      ],
    });
    const search = $("#meter-search");
    search.addEventListener("input", () => { this.search = search.value.trim().toLowerCase();
      this.invalidate(); });
    for (const [selector, field] of [["#filter-relay", "relay"], ["#filter-alarm", "alarm"],
      ["#filter-gateway", "gateway"]]) {
      const select = $(selector);
      select.addEventListener("change", () => { this[field] = select.value; this.invalidate(); });
    }
    for (const button of document.querySelectorAll("#meter-table [data-sort]")) {
      button.addEventListener("click", () => {
        const key = button.dataset.sort;
        this.sortDown = this.sortKey === key ? !this.sortDown : false;
        this.sortKey = key;
        this.invalidate();
      });
    }
  }

  invalidate() {
    this.stale = true;
    renderAll();
  }

  dynamic() {
    return !STATIC_SORTS.has(this.sortKey) || this.relay || this.alarm;
  }

  matches(m) {
    if (this.relay && m.relay !== this.relay) return false;
    if (this.gateway && m.gateway !== this.gateway) return false;
    if (this.alarm === "*" && (!m.alarm || m.alarm === "none")) return false;
    if (this.alarm && this.alarm !== "*" && m.alarm !== this.alarm) return false;
    if (this.search) {
      const s = this.search;
      if (!m.meter.toLowerCase().includes(s) && !m.tenant.toLowerCase().includes(s)
        && !m.gateway.toLowerCase().includes(s)) return false;
    }
    return true;
  }

  recompute() {
    const ids = [];
    for (const id of store.order) {
      const m = store.meters.get(id);
      if (m && this.matches(m)) ids.push(id);
    }
    const key = this.sortKey;
    const get = key === "balance" ? (m) => m.balanceNumber : (m) => m[key] ?? "";
    if (key !== "meter" || this.sortDown) {
      const values = new Map(ids.map((id) => [id, get(store.meters.get(id))]));
      const sign = this.sortDown ? -1 : 1;
      ids.sort((a, b) => {
        const va = values.get(a);
        const vb = values.get(b);
        if (va < vb) return -sign;
        if (va > vb) return sign;
        return a < b ? -1 : a > b ? 1 : 0;
      });
    }
    this.table.setKeys(ids);
    this.lastSort = performance.now();
    this.stale = false;
    $("#meter-count").textContent = t("meters.count", {
      shown: formatNumber(ids.length), total: formatNumber(store.meters.size) });
    for (const button of document.querySelectorAll("#meter-table [data-sort]")) {
      button.dataset.order = button.dataset.sort === key ? (this.sortDown ? "desc" : "asc") : "";
    }
  }

  update(change) {
    if (change.newMeters || change.all) this.stale = true;
    if (!this.stale && change.meters.size && this.dynamic()
      && performance.now() - this.lastSort >= RESORT_EVERY_MS) this.stale = true;
    if (!this.stale && change.meters.size && this.dynamic()) {
      setTimeout(() => renderAll(), RESORT_EVERY_MS); // pick up the re-sort once due
    }
    if (this.stale) this.recompute();
    this.table.refresh(change.all || change.newMeters ? null : change.meters);
  }
}

let meterList = null;

function fillGatewayFilter() {
  const select = $("#filter-gateway");
  const known = new Set([...store.gateways.keys()]);
  for (const m of store.meters.values()) known.add(m.gateway);
  const have = new Set([...select.options].map((o) => o.value));
  for (const name of [...known].sort()) {
    if (!have.has(name)) select.append(el("option", { value: name, text: name }));
  }
}

// -- meter page ----------------------------------------------------------------------------

let meterChart = null;

function renderMeter() {
  const m = store.meters.get(currentMeter);
  $("#meter-title").textContent = currentMeter;
  const known = Boolean(m);
  for (const node of document.querySelectorAll("#view-meter .cards, #view-meter .chart-card")) {
    node.hidden = !known && store.meters.size > 0;
  }
  if (!m) {
    $("#meter-relay").textContent = store.meters.size ? t("meter.unknown", { meter: currentMeter }) : "";
    $("#meter-alarm").textContent = "";
    return;
  }
  const relay = $("#meter-relay");
  relay.textContent = relayLabel(m) + (m.online ? "" : ` · ${t("meter.offline")}`)
    + (m.faulted ? ` · ${t("meter.faulted")}` : "");
  relay.dataset.relay = m.relay;
  const alarm = $("#meter-alarm");
  alarm.textContent = alarmLabel(m.alarm);
  alarm.hidden = !alarm.textContent;
  alarm.className = `pill alarm alarm-${m.alarm}`;
  $("#meter-power").textContent = `${formatNumber(m.power_w ?? 0, 0)} W`;
  $("#meter-balance").textContent = m.balance;
  $("#meter-energy").textContent = formatNumber(m.energy_kwh ?? 0, 3);
  $("#meter-tenant").textContent = m.tenant;
  $("#meter-gateway").textContent = m.gateway;
  $("#meter-updated").textContent = formatTime(m.ts);
  $("#act-auto").disabled = m.relay_reason !== "manual";
  $("#act-lockout").disabled = m.relay_reason !== "overload";
  meterChart ||= new LineChart($("#meter-chart"), {
    color: "#e08a1e", format: (v) => formatNumber(v, 0), windowMs: 120_000,
    minWindowMs: 30_000 });
  meterChart.setPoints(store.powerHistory(currentMeter));
}

function alarmRow(alarm, withMeter) {
  const cells = [el("td", { text: formatTime(alarm.ts) })];
  if (withMeter) {
    cells.push(el("td", {}, alarm.meter
      ? el("a", { href: `#/meter/${encodeURIComponent(alarm.meter)}`, text: alarm.meter })
      : el("span", { class: "muted", text: t("alarms.park") })));
  }
  cells.push(
    el("td", { class: `alarm alarm-${alarm.kind}`, text: alarmLabel(alarm.kind) || alarm.kind }),
    el("td", { class: "num", text: alarm.level ? String(alarm.level) : "" }),
    el("td", { class: "detail", text: alarm.detail || "" }),
    el("td", { text: t(alarm.acknowledged ? "alarm_state.acknowledged" : "alarm_state.active") }),
  );
  const action = el("td");
  if (may("operator") && !alarm.acknowledged && alarm.meter) {
    action.append(el("button", { type: "button", class: "small ack", "data-alarm": alarm.alarm,
      text: t("actions.ack"), onclick: (event) => acknowledge(alarm, event.currentTarget) }));
  }
  cells.push(action);
  return el("tr", { "data-alarm": alarm.alarm, class: alarm.acknowledged ? "acked" : "" },
    ...cells);
}

function renderMeterAlarms() {
  const alarms = store.alarmsOf(currentMeter);
  const body = $("#meter-alarms tbody");
  if (!alarms.length) {
    body.replaceChildren(el("tr", {}, el("td", { class: "empty", text: t("meter.no_alarms") })));
  } else {
    body.replaceChildren(...alarms.map((a) => alarmRow(a, false)));
  }
}

// -- alarms --------------------------------------------------------------------------------

function renderAlarms() {
  const onlyOpen = $("#alarms-unacked").checked;
  const alarms = store.activeAlarms().filter((a) => !onlyOpen || !a.acknowledged);
  $("#alarm-table tbody").replaceChildren(
    ...alarms.slice(0, MAX_ALARM_ROWS).map((a) => alarmRow(a, true)));
  $("#alarms-empty").hidden = alarms.length > 0;
  $("#alarm-count").textContent = t("alarms.count", { count: formatNumber(alarms.length) });
}

async function acknowledge(alarm, button) {
  button.disabled = true;
  try {
    await hub.command("ack_alarm", { alarm: alarm.alarm });
    toast(t("actions.ack_done", { alarm: alarm.alarm }));
  } catch (error) {
    button.disabled = false;
    toast(errorText(error), "bad");
  }
}

// -- audit ---------------------------------------------------------------------------------

const audit = { entries: [], cursors: [null], page: 0, next: null, loading: false };

async function loadAudit(before, reset = false) {
  if (audit.loading || !hub) return;
  if (reset) {
    audit.cursors = [null];
    audit.page = 0;
  }
  audit.loading = true;
  try {
    const fields = { limit: AUDIT_PAGE };
    if (before) fields.before = before;
    const page = await hub.command("audit", fields);
    audit.entries = page.entries || [];
    audit.next = page.next ?? null;
    renderAudit();
  } catch (error) {
    toast(errorText(error), "bad");
  } finally {
    audit.loading = false;
  }
}

function auditRow(e) {
  const meter = e.meter_id ?? e.meter ?? "";
  return el("tr", { class: `result-${e.result}` },
    el("td", { text: formatTime(e.ts) }),
    el("td", { text: e.user ? `${e.user} (${t(`role.${e.role}`)})` : "—" }),
    el("td", { text: `${e.channel}${e.address ? ` ${e.address}` : ""}` }),
    el("td", { text: e.command }),
    el("td", { text: meter || e.target || "" }),
    el("td", { class: "detail", text: e.detail || "" }),
    el("td", { class: `result ${e.result}`,
      text: t(`result.${e.result}`) + (e.code ? ` (${e.code})` : "") }));
}

function renderAudit() {
  $("#audit-table tbody").replaceChildren(...audit.entries.map(auditRow));
  $("#audit-page").textContent = t("audit.page", { page: audit.page + 1 });
  $("#audit-older").disabled = !audit.next;
  $("#audit-newest").disabled = audit.page === 0;
}

function prependLiveAudit() {
  if (audit.page !== 0 || !store.audit.length) return;
  const newest = audit.entries[0];
  const fresh = [];
  for (const entry of store.audit) {
    if (newest && entry.ts === newest.ts && entry.reference === newest.reference) break;
    fresh.push(entry);
  }
  if (!fresh.length) return;
  audit.entries = [...fresh, ...audit.entries].slice(0, AUDIT_PAGE);
  renderAudit();
}

// -- dialogs -------------------------------------------------------------------------------

function wireDialog(dialog) {
  for (const button of dialog.querySelectorAll("button.cancel")) {
    button.addEventListener("click", () => dialog.close());
  }
}

function openTopUp() {
  const dialog = $("#dlg-topup");
  $("#topup-meter").textContent = currentMeter;
  $("#topup-amount").value = "";
  $("#topup-error").hidden = true;
  $("#topup-result").hidden = true;
  $("#topup-submit").disabled = false;
  dialog.dataset.meter = currentMeter;
  dialog.showModal();
  $("#topup-amount").focus();
}

async function submitTopUp(event) {
  event.preventDefault();
  const meter = $("#dlg-topup").dataset.meter;
  const amount = $("#topup-amount").value.trim();
  const errorBox = $("#topup-error");
  const resultBox = $("#topup-result");
  resultBox.hidden = true;
  if (!/^[0-9]+(\.[0-9]{1,4})?$/.test(amount) || Number.parseFloat(amount) <= 0) {
    errorBox.textContent = t("topup.bad_amount");
    errorBox.hidden = false;
    return;
  }
  errorBox.hidden = true;
  const button = $("#topup-submit");
  button.disabled = true;
  try {
    const ack = await hub.command("topup", { meter, amount });
    const key = ack.status === "duplicate" ? "topup.duplicate"
      : ack.status === "pending" ? "topup.pending" : "topup.done";
    resultBox.textContent = t(key, { meter, balance: ack.balance });
    resultBox.hidden = false;
    $("#topup-amount").value = "";
  } catch (error) {
    errorBox.textContent = errorText(error);
    errorBox.hidden = false;
  } finally {
    button.disabled = false;
  }
}

function openRelay() {
  const dialog = $("#dlg-relay");
  $("#relay-meter").textContent = currentMeter;
  $("#relay-reason").value = "";
  $("#relay-error").hidden = true;
  $("#relay-submit").disabled = false;
  dialog.dataset.meter = currentMeter;
  dialog.showModal();
  $("#relay-reason").focus();
}

async function submitRelay(event) {
  event.preventDefault();
  const dialog = $("#dlg-relay");
  const meter = dialog.dataset.meter;
  const button = $("#relay-submit");
  button.disabled = true;
  try {
    await hub.command("relay", { meter, action: "open", reason: $("#relay-reason").value.trim() });
    dialog.close();
    toast(t("actions.open_done", { meter }));
  } catch (error) {
    $("#relay-error").textContent = errorText(error);
    $("#relay-error").hidden = false;
  } finally {
    button.disabled = false;
  }
}

async function relayAuto() {
  const meter = currentMeter;
  try {
    await hub.command("relay", { meter, action: "auto" });
    toast(t("actions.auto_done", { meter }));
  } catch (error) {
    toast(errorText(error), "bad");
  }
}

let confirmAction = null;

function openConfirm(title, text, action) {
  $("#confirm-title").textContent = title;
  $("#confirm-text").textContent = text;
  $("#confirm-error").hidden = true;
  $("#confirm-submit").disabled = false;
  confirmAction = action;
  $("#dlg-confirm").showModal();
}

async function submitConfirm(event) {
  event.preventDefault();
  const button = $("#confirm-submit");
  button.disabled = true;
  try {
    await confirmAction();
    $("#dlg-confirm").close();
  } catch (error) {
    $("#confirm-error").textContent = errorText(error);
    $("#confirm-error").hidden = false;
  } finally {
    button.disabled = false;
  }
}

function openLockoutReset() {
  const meter = currentMeter;
  openConfirm(t("actions.lockout_title"), t("actions.lockout_text", { meter }), async () => {
    await hub.command("reset_lockout", { meter });
    toast(t("actions.lockout_done", { meter }));
  });
}

// -- start ---------------------------------------------------------------------------------

function wire() {
  $("#login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const user = $("#login-user").value.trim();
    const password = $("#login-password").value;
    if (!user || !password) return;
    loginMessage("");
    $("#login-submit").disabled = true;
    hub.login(user, password);
  });
  $("#logout").addEventListener("click", () => {
    hub.logout();
    signedOut(null);
  });
  $("#lang").addEventListener("change", (event) => setLanguage(event.target.value));
  $("#alarms-unacked").addEventListener("change", renderAlarms);
  $("#act-topup").addEventListener("click", openTopUp);
  $("#act-open").addEventListener("click", openRelay);
  $("#act-auto").addEventListener("click", relayAuto);
  $("#act-lockout").addEventListener("click", openLockoutReset);
  $("#form-topup").addEventListener("submit", submitTopUp);
  $("#form-relay").addEventListener("submit", submitRelay);
  $("#form-confirm").addEventListener("submit", submitConfirm);
  for (const dialog of document.querySelectorAll("dialog")) wireDialog(dialog);
  $("#audit-older").addEventListener("click", () => {
    if (!audit.next) return;
    audit.cursors.push(audit.next);
    audit.page += 1;
    loadAudit(audit.next);
  });
  $("#audit-newest").addEventListener("click", () => loadAudit(null, true));
  window.addEventListener("hashchange", route);
}

function connectHub(url) {
  hub = new HubClient(url);
  hub.setSubscription((who) => ({
    topics: ["meters", "alarms", "park", "gateways", ...(who === "admin" ? ["audit"] : [])],
  }));
  hub.addEventListener("state", (event) => {
    showConnection(event.detail.state, event.detail.retryMs);
    if (event.detail.state !== "reconnecting" && event.detail.state !== "connecting") {
      $("#login-submit").disabled = false;
    }
  });
  hub.addEventListener("welcome", (event) => {
    store.beginSnapshot();
    signedIn(event.detail.user, event.detail.role);
  });
  hub.addEventListener("messages", (event) => store.apply(event.detail.messages));
  hub.addEventListener("snapshot", () => store.endSnapshot());
  hub.addEventListener("denied", (event) => signedOut(event.detail.reason));
  window.wattkeeper = { hub, store };
}

async function main() {
  let config = { hub: `ws://${location.hostname}:8765`, languages: ["en", "zh-CN"] };
  try {
    const response = await fetch("/api/console", { cache: "no-store" });
    if (response.ok) config = await response.json();
  } catch {
    // the defaults above
  }
  const lang = preferredLanguage(config.languages);
  $("#lang").value = lang;
  await setLanguage(lang);
  onLanguage(() => {
    $("#lang").value = language();
    if (role) $("#who-role").textContent = t(`role.${role}`);
    showConnection(hub.state, 0);
    insights.relabel();
    notices.relabel();
    renderAll();
  });
  meterList = new MeterList();
  quotas = new QuotasView({
    $, t, formatNumber, formatTime, describe: errorText, say: toast, may,
    command: (type, fields) => hub.command(type, fields),
  });
  reports = new ReportsView({
    $, t, formatNumber, describe: errorText, say: toast,
    ask: (kind, fields) => hub.command("report", { kind, ...fields }),
    tenants: () => [...new Set([...store.meters.values()].map((m) => m.tenant))].sort(),
  });
  notices = new NoticesView({
    $, t, formatNumber, formatTime, describe: errorText, say: toast,
    command: (type, fields) => hub.command(type, fields),
  });
  insights = new InsightsView({
    $, t, formatNumber, describe: errorText, say: toast,
    ask: (kind, fields) => hub.command("report", { kind, ...fields }),
  });
  wire();
  connectHub(config.hub);
  applyStrings(document);
  if (hub.hasSession()) {
    show("login");
    hub.resume();
  } else {
    signedOut(null);
  }
  document.body.dataset.ready = "true";
}

main();
