// What the console knows of the park: the latest message per meter, alarm and gateway, the
// park totals, and short histories for the charts. Fed by the hub's messages; the views read
// it when they draw (once per animation frame at most), never per message.
//
// A meter's history is a small ring (HISTORY points of time and power) so a meter page opened
// later still has a recent curve: 8 bytes a point (ms since the console started, as 32 bits,
// and a 32-bit float), ~10 MB for 10,000 meters. The park load history keeps one point per
// second for LOAD_HISTORY seconds.

const HISTORY = 120;
const LOAD_HISTORY = 900;
const BASE_MS = Date.now() - 86_400_000; // readings a day older than the page still fit

class Ring {
  constructor(size) {
    this.t = new Uint32Array(size);
    this.v = new Float32Array(size);
    this.size = size;
    this.count = 0;
    this.next = 0;
  }

  push(t, v) {
    this.t[this.next] = Math.max(0, t - BASE_MS);
    this.v[this.next] = v;
    this.next = (this.next + 1) % this.size;
    if (this.count < this.size) this.count += 1;
  }

  replaceLast(t, v) {
    const last = (this.next - 1 + this.size) % this.size;
    this.t[last] = Math.max(0, t - BASE_MS);
    this.v[last] = v;
  }

  lastTime() {
    return this.count ? this.t[(this.next - 1 + this.size) % this.size] + BASE_MS : -Infinity;
  }

  points() {
    const out = [];
    const start = (this.next - this.count + this.size) % this.size;
    for (let i = 0; i < this.count; i++) {
      const k = (start + i) % this.size;
      out.push([this.t[k] + BASE_MS, this.v[k]]);
    }
    return out;
  }
}

export class ParkStore {
  constructor() {
    this.meters = new Map();
    this.order = []; // meter ids in arrival order (snapshot order)
    this.alarms = new Map();
    this.gateways = new Map();
    this.park = null;
    this.audit = []; // live audit entries, newest first (bounded)
    this.history = new Map();
    this.loadHistory = new Ring(LOAD_HISTORY);
    this.changed = new Set();
    this.newMeters = false;
    this.flags = { park: false, alarms: false, gateways: false, audit: false };
    this.listeners = [];
    this.seenAlarms = null;
  }

  onChange(listener) {
    this.listeners.push(listener);
  }

  // A new subscription's snapshot is coming: alarms that it does not mention are gone.
  beginSnapshot() {
    this.seenAlarms = new Set();
  }

  endSnapshot() {
    if (this.seenAlarms) {
      for (const id of [...this.alarms.keys()]) {
        if (!this.seenAlarms.has(id)) this.alarms.delete(id);
      }
      this.seenAlarms = null;
      this.flags.alarms = true;
    }
    this.notify();
  }

  apply(messages) {
    for (const m of messages) {
      switch (m.type) {
        case "meter":
          this.meter(m);
          break;
        case "alarm":
          this.alarm(m);
          break;
        case "park":
          this.park = m;
          this.flags.park = true;
          this.recordLoad(m);
          break;
        case "gateway":
          this.gateways.set(m.gateway, m);
          this.flags.gateways = true;
          break;
        case "audit":
          this.audit.unshift(m.entry);
          if (this.audit.length > 200) this.audit.length = 200;
          this.flags.audit = true;
          break;
        default:
          break;
      }
    }
    this.notify();
  }

  meter(m) {
    if (!this.meters.has(m.meter)) {
      this.order.push(m.meter);
      this.newMeters = true;
    }
    m.balanceNumber = Number.parseFloat(m.balance);
    this.meters.set(m.meter, m);
    this.changed.add(m.meter);
    let ring = this.history.get(m.meter);
    if (!ring) {
      ring = new Ring(HISTORY);
      this.history.set(m.meter, ring);
    }
    const t = m.ts ? Date.parse(m.ts) : Date.now();
    if (t > ring.lastTime()) ring.push(t, m.power_w ?? 0);
    else if (t === ring.lastTime()) ring.replaceLast(t, m.power_w ?? 0);
  }

  alarm(m) {
    if (this.seenAlarms) this.seenAlarms.add(m.alarm);
    if (m.state === "cleared") this.alarms.delete(m.alarm);
    else {
      m.acknowledged = Boolean(m.acknowledged) || m.state === "acknowledged";
      const before = this.alarms.get(m.alarm);
      // An acknowledgement event may come without the detail of the raise: keep it.
      if (before && !m.detail) m.detail = before.detail;
      if (before && !m.level) m.level = before.level;
      this.alarms.set(m.alarm, m);
    }
    this.flags.alarms = true;
  }

  recordLoad(m) {
    const t = m.ts ? Date.parse(m.ts) : Date.now();
    const kw = (m.load_w ?? 0) / 1000;
    // One point per second: the park message comes up to 4 times a second.
    if (t - this.loadHistory.lastTime() >= 1000) this.loadHistory.push(t, kw);
    else this.loadHistory.replaceLast(this.loadHistory.lastTime(), kw);
  }

  notify() {
    if (!this.changed.size && !this.newMeters && !Object.values(this.flags).some(Boolean)) {
      return;
    }
    const change = {
      meters: this.changed,
      newMeters: this.newMeters,
      ...this.flags,
    };
    this.changed = new Set();
    this.newMeters = false;
    this.flags = { park: false, alarms: false, gateways: false, audit: false };
    for (const listener of this.listeners) listener(change);
  }

  activeAlarms() {
    return [...this.alarms.values()].sort((a, b) => (a.ts < b.ts ? 1 : a.ts > b.ts ? -1 : 0));
  }

  alarmsOf(meterId) {
    return this.activeAlarms().filter((a) => a.meter === meterId);
  }

  powerHistory(meterId) {
    const ring = this.history.get(meterId);
    return ring ? ring.points() : [];
  }
}
