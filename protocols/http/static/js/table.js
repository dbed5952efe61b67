// A virtually scrolled table: only the rows in view (plus a few) exist in the DOM.
//
// The body holds a spacer as tall as all rows would be, so the scrollbar is true, and a layer
// of pooled row elements moved to the first visible row (transform, no layout of the rest).
// Scrolling or new data re-fills the pooled rows from the list of row keys; a cell's DOM is
// touched only when its text or class changes, so 10 updates a second of 10,000 meters cost
// what the ~30 visible rows cost. Row height is fixed (CSS var --row-h).

const OVERSCAN = 6;

export class VirtualTable {
  constructor(body, { rowHeight, columns, row, onOpen }) {
    this.body = body;
    this.spacer = body.querySelector(".vspacer");
    this.layer = body.querySelector(".vrows");
    this.rowHeight = rowHeight;
    this.columns = columns; // [{cls, text(item) -> string, className?(item) -> string}]
    this.rowOf = row; // key -> item
    this.keys = [];
    this.pool = [];
    this.first = 0;
    this.scheduled = false;
    body.addEventListener("scroll", () => this.schedule(), { passive: true });
    new ResizeObserver(() => this.schedule()).observe(body);
    body.addEventListener("click", (event) => {
      const rowEl = event.target.closest(".vrow");
      if (rowEl && rowEl.dataset.key) onOpen(rowEl.dataset.key);
    });
    body.addEventListener("keydown", (event) => {
      if (event.key === "Enter") {
        const rowEl = document.activeElement?.closest?.(".vrow");
        if (rowEl && rowEl.dataset.key) onOpen(rowEl.dataset.key);
      }
    });
  }

  setKeys(keys) {
    this.keys = keys;
    this.spacer.style.height = `${keys.length * this.rowHeight}px`;
    this.schedule();
  }

  // Redraw now if any of `changed` is in view (the caller batches per animation frame).
  refresh(changed) {
    if (!changed) {
      this.render();
      return;
    }
    for (const rowEl of this.pool) {
      if (!rowEl.hidden && changed.has(rowEl.dataset.key)) {
        this.render();
        return;
      }
    }
  }

  schedule() {
    if (this.scheduled) return;
    this.scheduled = true;
    requestAnimationFrame(() => {
      this.scheduled = false;
      this.render();
    });
  }

  makeRow() {
    const rowEl = document.createElement("div");
    rowEl.className = "vrow";
    rowEl.setAttribute("role", "row");
    rowEl.tabIndex = -1;
    rowEl.cells = this.columns.map((column) => {
      const cell = document.createElement("span");
      cell.className = column.cls || "";
      cell.baseClass = cell.className;
      cell.shownText = null;
      cell.shownClass = null;
      rowEl.append(cell);
      return cell;
    });
    this.layer.append(rowEl);
    return rowEl;
  }

  render() {
    const height = this.body.clientHeight;
    if (!height) return; // not shown
    const rowHeight = this.rowHeight;
    const first = Math.max(0, Math.floor(this.body.scrollTop / rowHeight) - OVERSCAN);
    const count = Math.min(this.keys.length - first,
      Math.ceil(height / rowHeight) + 2 * OVERSCAN);
    while (this.pool.length < count) this.pool.push(this.makeRow());
    this.layer.style.transform = `translateY(${first * rowHeight}px)`;
    this.first = first;
    for (let i = 0; i < this.pool.length; i++) {
      const rowEl = this.pool[i];
      if (i >= count) {
        rowEl.hidden = true;
        continue;
      }
      const key = this.keys[first + i];
      const item = this.rowOf(key);
      rowEl.hidden = false;
      if (rowEl.dataset.key !== key) rowEl.dataset.key = key;
      rowEl.classList.toggle("odd", (first + i) % 2 === 1);
      for (let c = 0; c < this.columns.length; c++) {
        const column = this.columns[c];
        const cell = rowEl.cells[c];
        const text = item ? column.text(item) : "";
        if (cell.shownText !== text) {
          cell.textContent = text;
          cell.shownText = text;
        }
        if (column.className) {
          const cls = item ? column.className(item) : "";
          if (cell.shownClass !== cls) {
            cell.className = cls ? `${cell.baseClass} ${cls}` : cell.baseClass;
            cell.shownClass = cls;
          }
        }
      }
    }
  }
}
