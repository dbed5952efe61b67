// The quotas page: each production line's month budget, how much is used, whether its meters
// are held open, and its requests for extra budget. Operators ask for more (amount and
// reason); admins approve or reject. Below, for operators and admins, the production lines'
// energy per unit of output over the last two weeks, and a form to enter a day's count.
// Everything goes over the hub ("quotas", "quota_request", "quota_decide", "output", and the
// "output" report), so it is journaled and audited like any other command.

const REFRESH_MS = 10_000;
const OUTPUT_DAYS = 14;

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

export class QuotasView {
  // command(type, fields) -> Promise of the answer; may(role) -> bool; say(text, kind) shows a
  // toast; describe(error) turns an error into words.
  constructor({ $, t, command, may, say, describe, formatNumber, formatTime }) {
    Object.assign(this, { $, t, command, may, say, describe, formatNumber, formatTime });
    this.groups = [];
    this.timer = null;
    this.visible = false;
    this.wireOutput();
  }

  show() {
    this.visible = true;
    this.load();
    clearInterval(this.timer);
    this.timer = setInterval(() => { if (this.visible) this.load(); }, REFRESH_MS);
  }

  hide() {
    this.visible = false;
    clearInterval(this.timer);
  }

  async load() {
    try {
      const answer = await this.command("quotas", {});
      this.groups = answer.groups;
      this.render();
    } catch (error) {
      this.$("#quotas-status").textContent = this.describe(error);
    }
    if (this.may("operator")) await this.loadOutput();
  }

  // -- energy per unit of output ------------------------------------------------------------

  async loadOutput() {
    const today = new Date();
    const from = localDate(new Date(today.getFullYear(), today.getMonth(),
      today.getDate() - OUTPUT_DAYS + 1));
    const to = localDate(new Date(today.getFullYear(), today.getMonth(), today.getDate() + 1));
    try {
      const answer = await this.command("report", { kind: "output", from, to, format: "json" });
      this.renderOutput(JSON.parse(answer.body).rows);
    } catch (error) {
      this.$("#output-status").textContent = this.describe(error);
    }
  }

  renderOutput(rows) {
    const { t } = this;
    const card = this.$("#output-card");
    card.hidden = false;
    const lines = [...new Set(rows.map((r) => r.line))];
    const select = this.$("#output-line");
    if (select.options.length !== lines.length) {
      select.replaceChildren(...lines.map((line) => new Option(line, line)));
    }
    if (!this.$("#output-date").value) {
      const yesterday = new Date();
      yesterday.setDate(yesterday.getDate() - 1);
      this.$("#output-date").value = localDate(yesterday);
    }
    const shown = rows.filter((r) => r.units !== null || r.date === "total");
    this.$("#output-status").textContent = lines.length ? "" : t("output.none");
    this.$("#output-table tbody").replaceChildren(...shown.map((r) => el("tr", {
      dataset: { line: r.line, date: r.date } },
    el("td", { text: r.line }), el("td", { text: r.date === "total" ? t("output.total") : r.date }),
    el("td", { class: "num", text: r.kwh }),
    el("td", { class: "num", text: r.units === null ? "—" : `${r.units} ${r.unit}` }),
    el("td", { class: "num output-ratio", text: r.kwh_per_unit === null ? "—"
      : this.formatNumber(r.kwh_per_unit, 3) }),
    el("td", { class: "num", text: r.change_percent === null ? "" : `${r.change_percent > 0
      ? "+" : ""}${this.formatNumber(r.change_percent, 1)} %` }))));
  }

  wireOutput() {
    this.$("#output-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const count = Number(this.$("#output-count").value);
      try {
        const answer = await this.command("output", { line: this.$("#output-line").value,
          date: this.$("#output-date").value, count });
        this.say(this.t("output.saved", { count: answer.count, unit: answer.unit,
          date: answer.date }));
        this.loadOutput();
      } catch (error) {
        this.say(this.describe(error), "error");
      }
    });
  }

  unit(group) {
    return group.unit === "kwh" ? "kWh" : "";
  }

  render() {
    const list = this.$("#quota-groups");
    const { t } = this;
    this.$("#quotas-status").textContent = this.groups.length
      ? t("quotas.count", { n: this.groups.length }) : t("quotas.none");
    list.replaceChildren(...this.groups.map((group) => this.card(group)));
  }

  card(group) {
    const { t } = this;
    const percent = Math.min(group.percent, 100);
    const state = group.blocked ? t("quotas.blocked") : t("quotas.supplied");
    const bar = el("div", { class: "quota-bar", role: "meter", "aria-valuemin": "0",
      "aria-valuemax": "100", "aria-valuenow": String(group.percent) },
    el("span", { dataset: { level: this.level(group) } }));
    bar.firstChild.style.width = `${percent}%`; // (CSSOM: the page's CSP allows no inline style)
    const card = el("div", { class: "card quota", dataset: { group: group.id,
      blocked: String(group.blocked) } },
    el("h2", { text: `${group.name} · ${group.month}` }),
    el("p", { class: "quota-figures" },
      el("strong", { class: "quota-used", text: `${group.used} / ${group.limit} ${this.unit(group)}` }),
      ` (${this.formatNumber(group.percent, 1)} %) · `,
      el("span", { class: "quota-state", text: state })),
    bar,
    el("p", { class: "muted", text: t("quotas.budget", {
      budget: group.budget, extension: group.extension, unit: this.unit(group),
      meters: group.meters.length }) }));
    if (group.requests.length) card.append(this.requests(group));
    if (this.may("operator")) card.append(this.requestForm(group));
    return card;
  }

  level(group) {
    const reached = group.alarm_percents.filter((p) => group.percent >= p).length;
    if (group.blocked) return "cut";
    return reached ? "warn" : "ok";
  }

  requests(group) {
    const { t } = this;
    const rows = group.requests.map((r) => {
      const actions = el("td");
      if (r.status === "pending" && this.may("admin")) {
        for (const decision of ["approve", "reject"]) {
          const button = el("button", { type: "button", class: decision === "approve" ? "primary" : "",
            dataset: { decide: decision, request: r.id }, text: t(`quotas.${decision}`) });
          button.addEventListener("click", () => this.decide(group, r, decision));
          actions.append(button);
        }
      }
      return el("tr", { dataset: { request: r.id, status: r.status } },
        el("td", { text: this.formatTime(new Date(r.ts_ms).toISOString()) }),
        el("td", { class: "num", text: `${r.amount} ${this.unit(group)}` }),
        el("td", { text: r.reason }), el("td", { text: r.requested_by }),
        el("td", { class: "request-status", text: t(`quotas.status.${r.status}`)
          + (r.decided_by ? ` (${r.decided_by})` : "") }),
        actions);
    });
    return el("table", { class: "plain quota-requests" },
      el("thead", {}, el("tr", {}, ...["time", "amount", "reason", "by", "status", ""].map(
        (key) => el("th", { text: key ? t(`quotas.col.${key}`) : "" })))),
      el("tbody", {}, ...rows));
  }

  requestForm(group) {
    const { t } = this;
    const amount = el("input", { name: "amount", required: "", inputmode: "decimal",
      placeholder: group.unit === "kwh" ? "500" : "300.00", "aria-label": t("quotas.amount") });
    const reason = el("input", { name: "reason", required: "", maxlength: "200",
      placeholder: t("quotas.reason"), "aria-label": t("quotas.reason") });
    const form = el("form", { class: "quota-request buttons left" }, amount, reason,
      el("button", { type: "submit", text: t("quotas.ask") }));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        await this.command("quota_request", { group: group.id, amount: amount.value.trim(),
          reason: reason.value.trim() });
        this.say(t("quotas.asked"));
        this.load();
      } catch (error) {
        this.say(this.describe(error), "error");
      }
    });
    return form;
  }

  async decide(group, request, decision) {
    try {
      await this.command("quota_decide", { group: group.id, request: request.id, decision });
      this.say(this.t(decision === "approve" ? "quotas.approved" : "quotas.rejected"));
      this.load();
    } catch (error) {
      this.say(this.describe(error), "error");
    }
  }
}
