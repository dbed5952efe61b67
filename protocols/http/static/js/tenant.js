// The tenants' self-service page (/t/<token>): balances, days left, 30 days by band, top-ups,
// statements, and a Top up button per meter. Every figure comes from GET /t/<token>/api/summary;
// money stays the server's decimal strings (never turned into a float, except to draw bars).
//
// Language: a choice saved on this phone (the en / 中文 switch, localStorage) wins; otherwise
// the tenant's configured language. Strings are static/i18n/tenant-<lang>.json.
//
// Top up is a plain GET form to /t/<token>/topup: the server answers 303 to the payment
// provider's page ([tenant_page] topup_url). No money moves through this page; the provider's
// notification reaches the park through POST /api/payments/notify.

import { BarChart } from "./chart.js";

const STORAGE_KEY = "wattkeeper.tenant.lang";
const LANGUAGES = ["en", "zh-CN"];
const REFRESH_MS = 60_000;
const base = location.pathname.replace(/\/+$/, ""); // "/t/<token>"

const cache = new Map();
let strings = {};
let fallback = {};
let current = null;
let summary = null;
const charts = new Map(); // meter id -> BarChart

const $ = (selector, root = document) => root.querySelector(selector);

async function load(lang) {
  if (!cache.has(lang)) {
    const response = await fetch(`/static/i18n/tenant-${lang}.json`, { cache: "no-cache" });
    if (!response.ok) throw new Error(`no strings for ${lang}`);
    cache.set(lang, await response.json());
  }
  return cache.get(lang);
}

function t(key, values) {
  let text = strings[key] ?? fallback[key] ?? key;
  if (values) {
    text = text.replace(/\{(\w+)\}/g, (whole, name) => (name in values ? String(values[name]) : whole));
  }
  return text;
}

function translate(root) {
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll("[data-i18n-placeholder]")) {
    el.placeholder = t(el.dataset.i18nPlaceholder);
  }
  for (const el of root.querySelectorAll("[data-i18n-label]")) {
    el.setAttribute("aria-label", t(el.dataset.i18nLabel));
  }
}

function savedLanguage() {
  try {
    const saved = localStorage.getItem(STORAGE_KEY);
    return LANGUAGES.includes(saved) ? saved : null;
  } catch {
    return null; // storage blocked: the tenant's language it is
  }
}

async function setLanguage(lang, { save = false } = {}) {
  fallback = await load("en");
  strings = lang === "en" ? fallback : await load(lang);
  current = lang;
  if (save) {
    try {
      localStorage.setItem(STORAGE_KEY, lang);
    } catch {
      // not saved: the switch still works on this visit
    }
  }
  document.documentElement.lang = lang;
  document.body.dataset.language = lang;
  for (const button of document.querySelectorAll("button[data-lang]")) {
    button.setAttribute("aria-pressed", String(button.dataset.lang === lang));
  }
  translate(document);
  render();
}

function money(text) {
  return `${text} ${summary.currency}`;
}

function band(name) {
  const key = `band.${name}`;
  const text = t(key);
  return text === key ? name : text;
}

function shortDay(label) {
  return label.slice(5); // "2026-11-22" -> "11-22"
}

function amountPattern(decimals) {
  return decimals > 0 ? new RegExp(`^\\d+(\\.\\d{1,${decimals}})?$`) : /^\d+$/;
}

function validAmount(text, decimals) {
  return amountPattern(decimals).test(text) && /[1-9]/.test(text);
}

function meterCard(meter) {
  let card = document.querySelector(`.meter[data-meter="${CSS.escape(meter.meter)}"]`);
  if (!card) {
    card = $("#meter-card").content.firstElementChild.cloneNode(true);
    card.dataset.meter = meter.meter;
    const form = $("form.topup", card);
    form.action = `${base}/topup`;
    $("input[name=meter]", form).value = meter.meter;
    form.addEventListener("submit", (event) => {
      const input = $("input[name=amount]", form);
      const text = input.value.trim();
      const error = $(".error", form);
      if (!validAmount(text, summary.decimals)) {
        event.preventDefault();
        error.textContent = t("topup.bad_amount", { decimals: summary.decimals });
        error.hidden = false;
        input.focus();
        return;
      }
      input.value = text;
      error.hidden = true;
    });
    $("#meters").append(card);
    translate(card);
    charts.set(meter.meter, new BarChart($("canvas", card), {
      format: (v) => (v >= 10 ? v.toFixed(0) : v.toFixed(1)),
    }));
  }
  return card;
}

function renderMeter(meter) {
  const card = meterCard(meter);
  const kind = t(`kind.${meter.kind}`);
  // The meter id in one piece: "M-0001" must not break at its hyphen on a narrow screen.
  const [before, after = ""] = t("meter.title", { meter: "\u0000" }).split("\u0000");
  const id = document.createElement("span");
  id.className = "id";
  id.textContent = meter.meter;
  $(".meter-title", card).replaceChildren(`${kind} · ${before}`, id, after);
  const supply = $(".supply", card);
  const on = meter.relay === "closed";
  supply.textContent = !meter.online ? t("meter.offline") : on ? t("meter.supply_on") : t("meter.supply_off");
  supply.classList.toggle("off", !on || !meter.online);
  card.dataset.relay = meter.relay;
  const reason = $(".reason", card);
  reason.hidden = on || !meter.relay_reason;
  reason.textContent = meter.relay_reason ? t(`reason.${meter.relay_reason}`) : "";
  const balance = $(".balance", card);
  const amount = document.createElement("span");
  amount.textContent = meter.balance;
  const currency = document.createElement("span");
  currency.className = "currency";
  currency.textContent = summary.currency;
  balance.replaceChildren(amount, " ", currency);
  balance.classList.toggle("negative", meter.balance.startsWith("-"));
  const left = $(".days-left", card);
  left.textContent = meter.days_left === null ? t("meter.days_left_none")
    : t("meter.days_left_value", { days: meter.days_left.toFixed(1) });
  left.classList.toggle("small", meter.days_left === null);
  $(".spend", card).textContent = t("meter.spend_7d", { amount: money(meter.spend_7d) });
  $("form.topup", card).hidden = !summary.topup;

  const bands = [...new Set(meter.consumption.flatMap((day) => Object.keys(day.bands)))].sort();
  const used = meter.consumption.some((day) => Object.values(day.bands).some((q) => Number(q) > 0));
  $(".chart-title", card).textContent = t("chart.title", { unit: meter.unit });
  const canvas = $("canvas", card);
  canvas.setAttribute("aria-label", t("chart.title", { unit: meter.unit }));
  $(".chart-empty", card).hidden = used;
  charts.get(meter.meter).setData(
    summary.days.map(shortDay),
    bands.map((name) => ({
      name: band(name),
      values: meter.consumption.map((day) => Number(day.bands[name] || 0)),
    })),
  );
}

function renderTopups() {
  const rows = $("#topup-rows");
  rows.replaceChildren(...summary.topups.map((topup) => {
    const row = document.createElement("tr");
    for (const [text, cls] of [[topup.date, ""], [topup.meter, ""], [money(topup.amount), "num"]]) {
      const cell = document.createElement("td");
      cell.textContent = text;
      if (cls) cell.className = cls;
      row.append(cell);
    }
    return row;
  }));
  $("#topups-empty").hidden = summary.topups.length > 0;
  $("#topups").hidden = false;
}

function renderStatements() {
  $("#statement-list").replaceChildren(...summary.statements.map((statement) => {
    const item = document.createElement("li");
    const link = document.createElement("a");
    link.href = statement.url;
    link.target = "_blank";
    link.rel = "noreferrer";
    link.textContent = t("statements.open", { month: statement.month });
    item.append(link);
    return item;
  }));
  $("#statements").hidden = summary.statements.length === 0;
}

// `insights` (when the server computes them): a list of {title, text} (or plain strings), or an
// object holding one as `items`.
function renderInsights() {
  const raw = summary.insights;
  const items = Array.isArray(raw) ? raw : raw && Array.isArray(raw.items) ? raw.items : [];
  $("#insights-list").replaceChildren(...items.map((item) => {
    const li = document.createElement("li");
    if (typeof item === "string") {
      li.textContent = item;
    } else if (item.key) {
      const title = document.createElement("strong");
      title.textContent = t(`insight.${item.key}`);
      li.append(title, document.createTextNode(` ${item.value}`));
      if (item.peers) li.append(document.createTextNode(` ${t("insight.peers", { value: item.peers })}`));
    } else {
      if (item.title) {
        const title = document.createElement("strong");
        title.textContent = item.title;
        li.append(title);
      }
      li.append(document.createTextNode(item.text ?? item.message ?? ""));
    }
    return li;
  }));
  $("#insights").hidden = items.length === 0;
}

function render() {
  if (!summary || !current) return;
  document.title = `${summary.name} · ${t("app.title")}`;
  $("#tenant-name").textContent = summary.name;
  $("#updated").textContent = t("page.updated", { time: new Date().toLocaleTimeString(current) });
  for (const meter of summary.meters) renderMeter(meter);
  renderTopups();
  renderStatements();
  renderInsights();
}

function refused(code) {
  const box = $("#refused");
  box.dataset.code = code;
  const title = document.createElement("h1");
  title.textContent = t("refused.title");
  const text = document.createElement("p");
  text.textContent = t(`refused.${code}`);
  box.replaceChildren(title, text);
  box.hidden = false;
  for (const id of ["#meters", "#topups", "#statements", "#insights", "#status"]) $(id).hidden = true;
}

async function refresh() {
  let response;
  try {
    response = await fetch(`${base}/api/summary`, { cache: "no-store" });
  } catch {
    if (current) $("#status").textContent = t("page.failed"); // (else: still "Loading…")
    return;
  }
  if (response.status === 401) {
    const body = await response.json().catch(() => ({}));
    if (!current) await setLanguage(savedLanguage() || "en");
    refused(body.error || "bad_signature");
    return;
  }
  if (!response.ok) {
    if (!current) await setLanguage(savedLanguage() || "en");
    $("#status").textContent = t("page.failed");
    return;
  }
  summary = await response.json();
  $("#status").hidden = true;
  if (!current) {
    const start = savedLanguage() || (LANGUAGES.includes(summary.language) ? summary.language : "en");
    await setLanguage(start); // renders
  } else {
    render();
  }
  document.body.dataset.ready = "true";
}

for (const button of document.querySelectorAll("button[data-lang]")) {
  button.addEventListener("click", () => setLanguage(button.dataset.lang, { save: true }));
}
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") refresh();
});
setInterval(() => {
  if (document.visibilityState === "visible") refresh();
}, REFRESH_MS);
refresh();
