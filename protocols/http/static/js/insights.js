// The insights page (operators and admins): for each tenant over a period, its energy by
// tariff band (a stacked bar per tenant, and a small bar in its row), peak demand, load factor,
// night base load and kWh per m2 beside the medians of its peers (its sector, else the park),
// and what moving a share of its peak energy to the valley would save. Every figure is the
// server's `insights` report (the same as `wattkeeper report insights`), asked over the hub;
// the page formats it and computes nothing.

import { BarChart, PALETTE } from "./chart.js";

function localDate(d) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "text") node.textContent = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

function save(name, text, type) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const link = el("a", { href: url, download: name });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

export function bandsOf(report) {
  return report.columns.filter((c) => c.startsWith("pct_")).map((c) => c.slice(4));
}

export class InsightsView {
  // ask(kind, fields) -> Promise of {format, body}; say(text, kind) shows a toast;
  // describe(error) turns an error into words.
  constructor({ $, t, ask, say, describe, formatNumber }) {
    Object.assign(this, { $, t, ask, say, describe, formatNumber });
    this.chart = new BarChart($("#chart-insights-bands"), {
      format: (v) => `${formatNumber(v, 0)} %` });
    this.loaded = null;
    this.report = null;
    const today = new Date();
    $("#insights-from").value = localDate(new Date(today.getFullYear(), today.getMonth(), 1));
    $("#insights-to").value = localDate(new Date(today.getFullYear(), today.getMonth(),
      today.getDate() + 1));
    $("#insights-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.load();
    });
    $("#insights-csv").addEventListener("click", () => this.download());
  }

  fields() {
    return { from: this.$("#insights-from").value, to: this.$("#insights-to").value,
      shift: this.$("#insights-shift").value || "10" };
  }

  // Called when the page is shown: the report once per period and shift.
  show() {
    if (this.loaded !== JSON.stringify(this.fields())) this.load();
  }

  // Redrawn in the new language (band names, the peers' labels).
  relabel() {
    if (!this.report) return;
    this.render(this.report);
    this.$("#insights-status").textContent = this.periodText(this.report);
  }

  periodText(report) {
    return this.t("insights.period", { from: report.from, to: report.to,
      shift: report.totals?.shift_pct ?? this.fields().shift });
  }

  band(name) {
    const key = `band.${name}`;
    const text = this.t(key);
    return text === key ? name : text;
  }

  async load() {
    const status = this.$("#insights-status");
    const fields = this.fields();
    this.loaded = JSON.stringify(fields);
    status.textContent = this.t("reports.loading");
    try {
      const answer = await this.ask("insights", { ...fields, format: "json" });
      this.report = JSON.parse(answer.body);
      this.render(this.report);
      status.textContent = this.periodText(this.report);
    } catch (error) {
      this.loaded = null;
      status.textContent = "";
      this.say(this.describe(error), "bad");
    }
  }

  render(report) {
    const bands = bandsOf(report);
    this.chart.setData(report.rows.map((r) => r.tenant), bands.map((band) => ({
      name: this.band(band), values: report.rows.map((r) => Number(r[`pct_${band}`] ?? 0)) })));
    const body = this.$("#insights-table tbody");
    body.replaceChildren(...report.rows.map((row) => this.row(row, bands, true)));
    this.$("#insights-table tfoot").replaceChildren(
      ...(report.totals ? [this.row(report.totals, bands, false)] : []));
    this.$("#insights-empty").hidden = report.rows.length > 0;
  }

  // One tenant's row (or the park's total: no peers).
  row(r, bands, compared) {
    const t = this.t;
    const dash = "–";
    const figure = (value, suffix = "") => (value === null || value === undefined || value === ""
      ? dash : `${value}${suffix}`);
    const withPeers = (value, peers, suffix = "") => {
      const cell = el("td", { class: "num" }, el("span", { class: "value", text: figure(value, suffix) }));
      if (compared) {
        cell.append(el("div", { class: "peers muted", text: t("insights.peers_value", {
          value: figure(peers, suffix) }) }));
      }
      return cell;
    };
    const bar = el("div", { class: "band-bar", role: "img" });
    const words = [];
    bands.forEach((band, k) => {
      const pct = Number(r[`pct_${band}`] ?? 0);
      words.push(`${this.band(band)} ${figure(r[`pct_${band}`], " %")}`);
      if (pct > 0) {
        const part = el("span", { dataset: { band } });
        part.style.width = `${pct}%`; // (CSSOM: the page's CSP allows no inline style)
        part.style.background = PALETTE[k % PALETTE.length];
        bar.append(part);
      }
    });
    bar.setAttribute("aria-label", words.join(" · "));
    bar.title = words.join(" · ");
    const peersOf = compared
      ? (r.compared_with === "park" ? t("insights.vs_park", { n: r.peers })
        : t("insights.vs_sector", { sector: String(r.compared_with).replace(/^sector:/, ""),
          n: r.peers }))
      : "";
    const tenant = el("td", {}, el("div", { text: compared ? r.tenant : t("insights.total") }));
    if (peersOf) tenant.append(el("div", { class: "peers muted", text: peersOf }));
    const saving = el("td", { class: "num" }, el("span", { class: "value", text: figure(r.saving) }));
    saving.append(el("div", { class: "muted", text: t("insights.moved", { kwh: figure(r.shift_kwh) }) }));
    const peak = el("td", { class: "num" }, el("span", { class: "value", text: figure(r.peak_kw) }));
    if (r.peak_at) {
      peak.append(el("div", { class: "muted", text: String(r.peak_at).slice(5, 16).replace("T", " ") }));
    }
    const night = el("td", { class: "num" }, el("span", { class: "value", text: figure(r.night_base_kw) }));
    night.append(el("div", { class: "muted", text: t("insights.of_average", {
      pct: figure(r.night_base_pct, " %") }) }));
    if (compared) {
      night.append(el("div", { class: "peers muted", text: t("insights.peers_value", {
        value: figure(r.peers_night_base_pct, " %") }) }));
    }
    return el("tr", { dataset: { tenant: compared ? r.tenant : "" } },
      tenant,
      el("td", { text: r.sector || dash }),
      el("td", { class: "num", text: figure(r.kwh) }),
      el("td", { class: "bands" }, bar, el("div", { class: "muted small", text: words.join(" · ") })),
      withPeers(r.pct_peak, r.peers_pct_peak, " %"),
      peak,
      withPeers(r.load_factor, r.peers_load_factor),
      night,
      withPeers(r.kwh_per_m2, r.peers_kwh_per_m2),
      saving);
  }

  async download() {
    const { from, to, shift } = this.fields();
    try {
      const answer = await this.ask("insights", { from, to, shift, format: "csv" });
      save(`insights-${from}-${to}.csv`, answer.body, "text/csv");
    } catch (error) {
      this.say(this.describe(error), "bad");
    }
  }
}
