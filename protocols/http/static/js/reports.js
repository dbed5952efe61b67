// The reports page (operators and admins): charts over a period, top consumers, CSV downloads
// and tenant statements. Every figure comes from the server's reports (the same as
// `wattkeeper report`), asked over the hub with the console's own session ("report" message);
// CSV files are the server's bytes, saved as they arrive.

import { BarChart } from "./chart.js";

const TOP = 10;

function localDate(d) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

function bandsOf(report) {
  return report.columns.filter((c) => c.startsWith("kwh_")).map((c) => c.slice(4));
}

function save(name, text, type) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const link = document.createElement("a");
  link.href = url;
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

export class ReportsView {
  // ask(kind, fields) -> Promise of {format, body}; tenants() -> sorted tenant names;
  // say(text, kind) shows a toast; describe(error) turns an error into words.
  constructor({ $, t, ask, tenants, say, describe, formatNumber }) {
    Object.assign(this, { $, t, ask, tenants, say, describe, formatNumber });
    this.kwhChart = new BarChart($("#chart-daily-kwh"), { format: (v) => formatNumber(v, 0) });
    this.costChart = new BarChart($("#chart-daily-cost"), { format: (v) => formatNumber(v, 0) });
    this.arrearsChart = new BarChart($("#chart-arrears"), {
      format: (v) => formatNumber(v, 0), whole: true });
    this.loaded = null;
    const today = new Date();
    $("#reports-from").value = localDate(new Date(today.getFullYear(), today.getMonth(), 1));
    $("#reports-to").value = localDate(new Date(today.getFullYear(), today.getMonth(),
      today.getDate() + 1));
    $("#reports-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.load();
    });
    for (const button of document.querySelectorAll("[data-csv]")) {
      button.addEventListener("click", () => this.download(...button.dataset.csv.split(":")));
    }
    $("#statement-view").addEventListener("click", () => this.statement("html"));
    $("#statement-csv").addEventListener("click", () => this.statement("csv"));
  }

  period() {
    return { from: this.$("#reports-from").value, to: this.$("#reports-to").value };
  }

  // Called when the page is shown: the tenant list, and the charts once per period.
  show() {
    const select = this.$("#statement-tenant");
    const names = this.tenants();
    if (select.options.length !== names.length) {
      const chosen = select.value;
      select.replaceChildren(...names.map((name) => new Option(name, name)));
      if (names.includes(chosen)) select.value = chosen;
    }
    const key = JSON.stringify(this.period());
    if (this.loaded !== key) this.load();
  }

  async json(kind, fields) {
    const answer = await this.ask(kind, { ...this.period(), ...fields, format: "json" });
    return JSON.parse(answer.body);
  }

  async load() {
    const status = this.$("#reports-status");
    this.loaded = JSON.stringify(this.period());
    status.textContent = this.t("reports.loading");
    try {
      const [daily, tenants, arrears] = await Promise.all([
        this.json("consumption", { by: "day" }),
        this.json("consumption", { by: "tenant" }),
        this.json("arrears", { by: "day" }),
      ]);
      this.drawDaily(daily);
      this.drawTop(tenants);
      this.arrearsChart.setData(arrears.rows.map((r) => r.day.slice(5)),
        [{ name: this.t("reports.meters_below_zero"), values: arrears.rows.map((r) => Number(r.meters)) }]);
      status.textContent = this.t("reports.period", { from: daily.from, to: daily.to });
    } catch (error) {
      this.loaded = null;
      status.textContent = "";
      this.say(this.describe(error), "bad");
    }
  }

  drawDaily(report) {
    const bands = bandsOf(report);
    const labels = report.rows.map((r) => r.day.slice(5));
    this.kwhChart.setData(labels, bands.map((band) => ({
      name: band, values: report.rows.map((r) => Number(r[`kwh_${band}`])) })));
    this.costChart.setData(labels, bands.map((band) => ({
      name: band, values: report.rows.map((r) => Number(r[`cost_${band}`])) })));
  }

  drawTop(report) {
    const rows = [...report.rows].sort((a, b) => Number(b.kwh) - Number(a.kwh)).slice(0, TOP);
    this.$("#top-table tbody").replaceChildren(...rows.map((r) => {
      const tr = document.createElement("tr");
      for (const [text, cls] of [[r.tenant, ""], [r.kwh, "num"], [r.cost, "num"]]) {
        const td = document.createElement("td");
        td.textContent = text;
        if (cls) td.className = cls;
        tr.append(td);
      }
      return tr;
    }));
  }

  async download(kind, by) {
    const { from, to } = this.period();
    try {
      const fields = { from, to, format: "csv", ...(by ? { by } : {}) };
      const answer = await this.ask(kind, fields);
      save(`${kind}${by ? `-by-${by}` : ""}-${from}-${to}.csv`, answer.body, "text/csv");
    } catch (error) {
      this.say(this.describe(error), "bad");
    }
  }

  async statement(form) {
    const tenant = this.$("#statement-tenant").value;
    if (!tenant) return;
    const { from, to } = this.period();
    // Opened before the answer comes: a window opened later is a popup the browser blocks.
    const page = form === "html" ? window.open("", "_blank") : null;
    try {
      const answer = await this.ask("statement", { from, to, tenant, format: form });
      if (form === "csv") {
        save(`statement-${tenant}-${from}-${to}.csv`, answer.body, "text/csv");
      } else if (page) {
        page.location.href = URL.createObjectURL(new Blob([answer.body], { type: "text/html" }));
      }
    } catch (error) {
      if (page) page.close();
      this.say(this.describe(error), "bad");
    }
  }
}
