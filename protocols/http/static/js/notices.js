// The notices page (admins): how tenant notices are doing (raised, written, delivered, retried,
// waiting, dead, whether the delivery process runs) and the dead letters: deliveries a provider
// refused for good or that failed through the whole retry schedule. "Try again" sends one
// notice's dead deliveries back to pending (attempts reset), "Try all again" every one. Both go
// over the hub ("notices", "notice_retry"), so they are audited like any other command. The
// page asks again every few seconds while it is open: a retried letter leaves the list once
// the delivery process has taken it, and a delivered one does not come back.

const REFRESH_MS = 3_000;
const FIGURES = ["raised", "written", "waiting_for_storage", "delivered", "retried", "pending",
  "dead"];

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

export class NoticesView {
  // command(type, fields) -> Promise of the answer; say(text, kind) shows a toast;
  // describe(error) turns an error into words.
  constructor({ $, t, command, say, describe, formatNumber, formatTime }) {
    Object.assign(this, { $, t, command, say, describe, formatNumber, formatTime });
    this.view = null;
    this.timer = null;
    this.visible = false;
    this.$("#notices-retry-all").addEventListener("click", () => this.retry(""));
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
      this.view = await this.command("notices", {});
      this.render();
    } catch (error) {
      this.$("#notices-status").textContent = this.describe(error);
    }
  }

  relabel() {
    if (this.view) this.render();
  }

  render() {
    const { t, view } = this;
    for (const name of FIGURES) {
      this.$(`#notices-${name.replaceAll("_", "-")}`).textContent = this.formatNumber(view[name]);
    }
    const running = this.$("#notices-running");
    running.textContent = t(view.delivery_running ? "notices.running" : "notices.stopped");
    running.dataset.running = String(view.delivery_running);
    const letters = view.dead_letters;
    this.$("#notices-status").textContent = view.dead > letters.length
      ? t("notices.first", { n: letters.length, total: view.dead })
      : t("notices.count", { n: view.dead });
    this.$("#notices-retry-all").disabled = view.dead === 0;
    this.$("#notices-empty").hidden = letters.length > 0;
    this.$("#notices-table tbody").replaceChildren(...letters.map((letter) => this.row(letter)));
  }

  row(letter) {
    const { t } = this;
    const button = el("button", { type: "button", class: "primary", text: t("notices.retry") });
    button.addEventListener("click", () => this.retry(letter.notice, button));
    return el("tr", { dataset: { notice: letter.notice, channel: letter.channel } },
      el("td", { text: this.formatTime(letter.since) }),
      el("td", { class: "notice-id", text: letter.notice }),
      el("td", { text: this.channel(letter.channel) }),
      el("td", { text: letter.address }),
      el("td", { class: "num", text: String(letter.attempts) }),
      el("td", { class: "notice-error", text: letter.error }),
      el("td", {}, button));
  }

  channel(name) {
    const key = `notices.channel.${name}`;
    const label = this.t(key);
    return label === key ? name : label;
  }

  async retry(notice, button = this.$("#notices-retry-all")) {
    button.disabled = true;
    try {
      await this.command("notice_retry", { notice });
      this.say(notice ? this.t("notices.retried", { notice }) : this.t("notices.retried_all"));
    } catch (error) {
      this.say(this.describe(error), "error");
    }
    button.disabled = false;
    await this.load();
  }
}
