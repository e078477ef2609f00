// Latchkey portal enhancements. Every page works without this file; it only
// adds copy buttons, usage charts drawn from their data tables, and a
// confirmation prompt on destructive forms.
(function () {
  "use strict";

  // Copy buttons: <button data-copy="id-of-input-or-textarea" hidden>.
  function setUpCopyButtons() {
    document.querySelectorAll("button[data-copy]").forEach(function (button) {
      var target = document.getElementById(button.getAttribute("data-copy"));
      if (!target) return;
      button.hidden = false;
      button.addEventListener("click", function () {
        var done = function () {
          button.textContent = "Copied";
          setTimeout(function () { button.textContent = "Copy"; }, 2000);
        };
        // The old way needs the text selected, so it moves focus; the clipboard API
        // leaves focus on the button.
        var fallback = function () {
          target.focus();
          target.select();
          document.execCommand("copy");
          done();
        };
        if (navigator.clipboard && window.isSecureContext) {
          navigator.clipboard.writeText(target.value).then(done, fallback);
        } else {
          fallback();
        }
      });
    });
  }

  // Forms with data-confirm ask before submitting.
  function setUpConfirmations() {
    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        if (!window.confirm(form.getAttribute("data-confirm"))) event.preventDefault();
      });
    });
  }

  var SVG = "http://www.w3.org/2000/svg";

  function el(name, attrs, text) {
    var node = document.createElementNS(SVG, name);
    Object.keys(attrs).forEach(function (key) { node.setAttribute(key, attrs[key]); });
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // A "nice" integer axis for counts up to max: steps of 1, 2 or 5 times a power
  // of ten, about five of them, never fractional (no labels 1, 1, 0).
  function niceAxis(max) {
    if (max <= 0) return { top: 1, step: 1 };
    var raw = max / 5, power = Math.pow(10, Math.floor(Math.log10(raw))), step = power;
    [1, 2, 5, 10].some(function (m) { step = m * power; return step >= raw; });
    step = Math.max(1, Math.round(step));
    return { top: Math.ceil(max / step) * step, step: step };
  }
  window.latchkeyNiceAxis = niceAxis; // for tests

  // Charts: <div class="chart" data-chart-table="table-id"> becomes a bar chart
  // of the table's two series (issued, failed), one group of bars per row. It is
  // drawn at the holder's own width, so its labels keep their size on a phone.
  function drawChart(holder) {
    var table = document.getElementById(holder.getAttribute("data-chart-table"));
    if (!table) return;
    var rows = Array.prototype.slice.call(table.tBodies[0].rows);
    var series = [[], []], labels = [];
    rows.forEach(function (row) {
      labels.push(row.getAttribute("data-label") || row.cells[0].textContent);
      series[0].push(parseInt(row.cells[1].textContent, 10) || 0);
      series[1].push(parseInt(row.cells[2].textContent, 10) || 0);
    });
    var width = Math.max(280, Math.round(holder.clientWidth || 720));
    var height = width < 480 ? 200 : 220, bottom = 28, top = 12;
    var axis = niceAxis(Math.max.apply(null, series[0].concat(series[1])));
    var left = 12 + 7 * String(axis.top).length;
    var plotW = width - left - 8, plotH = height - top - bottom;
    var slot = plotW / Math.max(1, rows.length);
    var bar = Math.max(1, slot * 0.38);
    var svg = el("svg", {
      viewBox: "0 0 " + width + " " + height, width: width, height: height, role: "img",
      "class": "chart-svg",
      "aria-label": (holder.closest("figure").querySelector("figcaption") || {}).textContent || "Usage chart"
    });
    for (var tick = 0; tick <= axis.top; tick += axis.step) {
      var y = top + plotH - tick / axis.top * plotH;
      svg.appendChild(el("line", { x1: left, x2: width - 8, y1: y, y2: y, "class": "chart-grid" }));
      svg.appendChild(el("text", { x: left - 6, y: y + 4, "text-anchor": "end", "class": "chart-axis" },
        String(tick)));
    }
    var every = Math.ceil(rows.length / Math.max(2, Math.floor(plotW / 56)));
    rows.forEach(function (row, i) {
      var x = left + i * slot + (slot - 2 * bar) / 2;
      [0, 1].forEach(function (s) {
        var h = series[s][i] / axis.top * plotH;
        var rect = el("rect", { x: x + s * bar, y: top + plotH - h, width: bar, height: h,
                                "class": s === 0 ? "chart-issued" : "chart-failed" });
        rect.appendChild(el("title", {}, labels[i] + ": " + series[s][i] + (s === 0 ? " issued" : " failed")));
        svg.appendChild(rect);
      });
      if (i % every === 0) {
        svg.appendChild(el("text", { x: left + i * slot + slot / 2, y: height - 8,
                                     "text-anchor": "middle", "class": "chart-axis" }, labels[i]));
      }
    });
    var old = holder.querySelector("svg");
    if (old) { holder.replaceChild(svg, old); return; }  // a redraw at a new width
    holder.appendChild(svg);
    var legend = document.createElement("p");
    legend.className = "chart-legend";
    legend.innerHTML = '<span class="key key-issued"></span> Tokens issued ' +
                       '<span class="key key-failed"></span> Failed requests';
    holder.appendChild(legend);
    holder.setAttribute("data-rendered", "true");
    holder.setAttribute("data-axis", String(axis.top) + "/" + String(axis.step));

    // The table stays available behind a toggle.
    var wrap = document.getElementById(table.id + "-wrap");
    if (wrap) {
      wrap.hidden = true;
      var toggle = document.createElement("button");
      toggle.type = "button";
      toggle.className = "button-link";
      toggle.textContent = "Show data table";
      toggle.setAttribute("aria-controls", wrap.id);
      toggle.setAttribute("aria-expanded", "false");
      toggle.addEventListener("click", function () {
        wrap.hidden = !wrap.hidden;
        toggle.setAttribute("aria-expanded", String(!wrap.hidden));
        toggle.textContent = wrap.hidden ? "Show data table" : "Hide data table";
      });
      holder.appendChild(toggle);
    }
  }

  // A table box that scrolls sideways (on a phone) can be scrolled from the keyboard:
  // it becomes a focusable region named after its table's caption.
  function markScrollers() {
    document.querySelectorAll(".table-scroll").forEach(function (box) {
      var scrolls = box.scrollWidth > box.clientWidth + 1;
      if (scrolls && !box.hasAttribute("tabindex")) {
        var caption = box.querySelector("caption");
        box.setAttribute("tabindex", "0");
        box.setAttribute("role", "region");
        box.setAttribute("aria-label", (caption && caption.textContent.trim()) || "Table");
        box.setAttribute("data-scroller", "");
      } else if (!scrolls && box.hasAttribute("data-scroller")) {
        ["tabindex", "role", "aria-label", "data-scroller"].forEach(function (name) {
          box.removeAttribute(name);
        });
      }
    });
  }

  function drawCharts() {
    document.querySelectorAll(".chart[data-chart-table]").forEach(drawChart);
  }

  document.addEventListener("DOMContentLoaded", function () {
    setUpCopyButtons();
    setUpConfirmations();
    drawCharts();
    markScrollers();
    var lastWidth = window.innerWidth, pending = null;
    window.addEventListener("resize", function () {
      if (window.innerWidth === lastWidth) return;
      lastWidth = window.innerWidth;
      clearTimeout(pending);
      pending = setTimeout(function () { drawCharts(); markScrollers(); }, 150);
    });
  });
})();
