// Strings of the console, one JSON file per language (static/i18n/<lang>.json).
//
// Static text is marked in the HTML with data-i18n (text), data-i18n-placeholder and
// data-i18n-title; everything the scripts write goes through t(key, {name: value}). A key
// missing from a language falls back to English, then to the key itself, so a half-done
// translation shows English rather than nothing.

const STORAGE_KEY = "wattkeeper.lang";
const cache = new Map();
let current = "en";
let strings = {};
let fallback = {};
const listeners = [];

async function load(lang) {
  if (!cache.has(lang)) {
    const response = await fetch(`/static/i18n/${lang}.json`, { cache: "no-cache" });
    if (!response.ok) throw new Error(`no strings for ${lang}`);
    cache.set(lang, await response.json());
  }
  return cache.get(lang);
}

export function preferredLanguage(available) {
  const saved = localStorage.getItem(STORAGE_KEY);
  if (saved && available.includes(saved)) return saved;
  const browser = (navigator.language || "en").toLowerCase();
  if (browser.startsWith("zh") && available.includes("zh-CN")) return "zh-CN";
  return "en";
}

export async function setLanguage(lang) {
  fallback = await load("en");
  strings = lang === "en" ? fallback : await load(lang);
  current = lang;
  localStorage.setItem(STORAGE_KEY, lang);
  document.documentElement.lang = lang;
  apply(document);
  for (const listener of listeners) listener(lang);
}

export function language() {
  return current;
}

export function onLanguage(listener) {
  listeners.push(listener);
}

export function t(key, values) {
  let text = strings[key] ?? fallback[key] ?? key;
  if (values) {
    text = text.replace(/\{(\w+)\}/g, (whole, name) =>
      name in values ? String(values[name]) : whole);
  }
  return text;
}

export function apply(root) {
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll("[data-i18n-placeholder]")) {
    el.placeholder = t(el.dataset.i18nPlaceholder);
  }
  for (const el of root.querySelectorAll("[data-i18n-title]")) el.title = t(el.dataset.i18nTitle);
  document.title = t("app.title");
}

const numberFormats = new Map();

export function formatNumber(value, digits = 0) {
  const key = `${current}/${digits}`;
  if (!numberFormats.has(key)) {
    numberFormats.set(key, new Intl.NumberFormat(current, {
      minimumFractionDigits: digits, maximumFractionDigits: digits,
    }));
  }
  return numberFormats.get(key).format(value);
}

// "2026-11-22T10:15:00.123Z" -> local "10:15:00" (today) or "11-22 10:15:00".
export function formatTime(iso) {
  if (!iso) return "–";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return "–";
  const pad = (n) => String(n).padStart(2, "0");
  const time = `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
  const now = new Date();
  if (date.toDateString() === now.toDateString()) return time;
  return `${pad(date.getMonth() + 1)}-${pad(date.getDate())} ${time}`;
}
