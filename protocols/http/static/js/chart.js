// A small time-series line chart on a canvas: no library, redrawn whole when asked.
//
// The canvas is sized to its CSS box times devicePixelRatio (sharp on any screen); a
// ResizeObserver redraws it when the layout changes. The y axis gets "nice" round ticks
// (1, 2, 5 x 10^n) from 0 (or the minimum when negative) to above the maximum. The time axis
// spans what there is, at least minWindowMs (a fresh page) and at most windowMs.

const PAD = { left: 56, right: 12, top: 10, bottom: 24 };

function niceStep(range, ticks) {
  const raw = range / Math.max(1, ticks);
  const power = 10 ** Math.floor(Math.log10(raw || 1));
  for (const m of [1, 2, 5, 10]) {
    if (m * power >= raw) return m * power;
  }
  return 10 * power;
}

function clock(t) {
  const d = new Date(t);
  const pad = (n) => String(n).padStart(2, "0");
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

// The canvas sized to its box (sharp on any screen) and cleared, with the theme's colours;
// null while it is hidden.
function prepare(canvas) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  if (!width || !height) return null;
  if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
  }
  const g = canvas.getContext("2d");
  g.setTransform(ratio, 0, 0, ratio, 0, 0);
  g.clearRect(0, 0, width, height);
  g.font = "11px system-ui, sans-serif";
  const styles = getComputedStyle(canvas);
  return {
    g, width, height,
    ink: styles.getPropertyValue("--chart-ink").trim() || "#6b7280",
    grid: styles.getPropertyValue("--chart-grid").trim() || "#e5e7eb",
  };
}

// Horizontal grid lines with their values, from lo to hi every step; y maps a value to pixels.
function yTicks({ g, width, ink, grid }, lo, hi, step, y, format) {
  g.strokeStyle = grid;
  g.fillStyle = ink;
  g.lineWidth = 1;
  g.textAlign = "right";
  g.textBaseline = "middle";
  for (let v = lo; v <= hi + step / 2; v += step) {
    const yy = Math.round(y(v)) + 0.5;
    g.beginPath();
    g.moveTo(PAD.left, yy);
    g.lineTo(width - PAD.right, yy);
    g.stroke();
    g.fillText(format(v), PAD.left - 6, yy);
  }
}

export class LineChart {
  constructor(canvas, {
    color = "#2f7de1", format = (v) => String(v), windowMs = 300_000, minWindowMs = 60_000,
  } = {}) {
    this.canvas = canvas;
    this.color = color;
    this.format = format;
    this.maxWindowMs = windowMs;
    this.minWindowMs = Math.min(minWindowMs, windowMs);
    this.windowMs = this.minWindowMs;
    this.points = [];
    this.observer = new ResizeObserver(() => this.draw());
    this.observer.observe(canvas);
  }

  setPoints(points) {
    this.points = points;
    this.draw();
  }

  draw() {
    const surface = prepare(this.canvas);
    if (!surface) return; // hidden
    const { g, width, height } = surface;

    const now = this.points.length ? this.points[this.points.length - 1][0] : Date.now();
    const span = this.points.length ? now - this.points[0][0] : 0;
    this.windowMs = Math.min(this.maxWindowMs, Math.max(this.minWindowMs, span));
    const t0 = now - this.windowMs;
    const shown = this.points.filter(([t]) => t >= t0);
    let lo = 0;
    let hi = 1;
    for (const [, v] of shown) {
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    const step = niceStep(hi - lo, 4);
    lo = Math.floor(lo / step) * step;
    hi = Math.ceil((hi * 1.05) / step) * step;
    const plotW = width - PAD.left - PAD.right;
    const plotH = height - PAD.top - PAD.bottom;
    const x = (t) => PAD.left + ((t - t0) / this.windowMs) * plotW;
    const y = (v) => PAD.top + plotH - ((v - lo) / (hi - lo || 1)) * plotH;

    yTicks(surface, lo, hi, step, y, this.format);
    g.textAlign = "center";
    g.textBaseline = "top";
    for (let i = 0; i <= 4; i++) {
      const t = t0 + (this.windowMs * i) / 4;
      g.fillText(clock(t), Math.min(Math.max(x(t), PAD.left + 24), width - PAD.right - 24),
        height - PAD.bottom + 6);
    }
    if (shown.length < 2) return;
    g.beginPath();
    shown.forEach(([t, v], i) => (i ? g.lineTo(x(t), y(v)) : g.moveTo(x(t), y(v))));
    g.strokeStyle = this.color;
    g.lineWidth = 2;
    g.lineJoin = "round";
    g.stroke();
    g.lineTo(x(shown[shown.length - 1][0]), y(lo));
    g.lineTo(x(shown[0][0]), y(lo));
    g.closePath();
    g.globalAlpha = 0.12;
    g.fillStyle = this.color;
    g.fill();
    g.globalAlpha = 1;
  }
}

// Stacked bars by category (a day, a tenant): one colour per series (a tariff band), a legend
// above, round y ticks as the line chart has. `dataset.bars` tells how many bars were drawn.
export const PALETTE = ["#2f7de1", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6", "#64748b"];

export class BarChart {
  // whole: the values are counts, so the ticks are whole numbers.
  constructor(canvas, { format = (v) => String(v), whole = false } = {}) {
    this.canvas = canvas;
    this.format = format;
    this.whole = whole;
    this.labels = [];
    this.series = [];
    this.observer = new ResizeObserver(() => this.draw());
    this.observer.observe(canvas);
  }

  // labels: ["2026-11-01", ...]; series: [{ name, values: [number per label] }, ...]
  setData(labels, series) {
    this.labels = labels;
    this.series = series;
    this.draw();
  }

  draw() {
    const canvas = this.canvas;
    const surface = prepare(canvas);
    if (!surface) return; // hidden
    const { g, width, height, ink } = surface;
    const top = PAD.top + 16;
    const totals = this.labels.map((_, i) => this.series.reduce((s, x) => s + (x.values[i] || 0), 0));
    const hi0 = Math.max(1e-9, ...totals);
    const step = this.whole ? Math.max(1, niceStep(hi0, 4)) : niceStep(hi0, 4);
    const hi = Math.ceil((hi0 * 1.05) / step) * step;
    const plotW = width - PAD.left - PAD.right;
    const plotH = height - top - PAD.bottom;
    const y = (v) => top + plotH - (v / hi) * plotH;
    yTicks(surface, 0, hi, step, y, this.format);
    let legendX = PAD.left;
    g.textAlign = "left";
    this.series.forEach((s, k) => {
      g.fillStyle = PALETTE[k % PALETTE.length];
      g.fillRect(legendX, PAD.top, 10, 10);
      g.fillStyle = ink;
      g.fillText(s.name, legendX + 14, PAD.top + 5);
      legendX += 24 + g.measureText(s.name).width;
    });
    const n = this.labels.length;
    const slot = plotW / Math.max(1, n);
    const barW = Math.max(1, Math.min(40, slot * 0.7));
    const every = Math.max(1, Math.ceil(n / Math.max(1, Math.floor(plotW / 70))));
    g.textAlign = "center";
    g.textBaseline = "top";
    let drawn = 0;
    this.labels.forEach((label, i) => {
      const x = PAD.left + slot * i + (slot - barW) / 2;
      let base = 0;
      this.series.forEach((s, k) => {
        const v = s.values[i] || 0;
        if (v <= 0) return;
        g.fillStyle = PALETTE[k % PALETTE.length];
        g.fillRect(x, y(base + v), barW, y(base) - y(base + v));
        base += v;
      });
      if (base > 0) drawn += 1;
      if (i % every === 0) {
        g.fillStyle = ink;
        g.fillText(label, x + barW / 2, height - PAD.bottom + 6);
      }
    });
    canvas.dataset.bars = String(drawn);
  }
}
