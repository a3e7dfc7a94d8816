// The console's charts: each <figure class="chart" data-chart="…"> holds a table; this draws it with the vendored
// Chart.js above the table, which stays (the numbers, for screen readers and without JavaScript).
(function () {
  "use strict";
  var COLOURS = ["#1a4f9c", "#b35900", "#1d5e20", "#7a1f8f", "#a11d1d", "#4a4a4a", "#00708a", "#8a6d00",
    "#5c3b1e", "#d1477a", "#2f7d6d", "#6b6bb3"];

  function number(cell) {
    var raw = cell.getAttribute("data-value");
    return raw === null ? null : Number(raw);
  }

  function read(table) {
    var heads = Array.prototype.slice.call(table.tHead.rows[0].cells, 1);
    var rows = Array.prototype.slice.call(table.tBodies[0].rows);
    var labels = rows.map(function (row) { return row.cells[0].textContent.trim(); });
    var datasets = [];
    heads.forEach(function (head, i) {
      var values = rows.map(function (row) { return number(row.cells[i + 1]); });
      if (values.every(function (v) { return v === null; })) { return; }
      var colour = COLOURS[datasets.length % COLOURS.length];
      datasets.push({ label: head.textContent.trim(), data: values, borderColor: colour, backgroundColor: colour,
        pointRadius: 0, borderWidth: 2 });
    });
    return { labels: labels, datasets: datasets };
  }

  function draw(figure) {
    var table = figure.querySelector("table");
    if (!table || !window.Chart) { return; }
    var kind = figure.getAttribute("data-chart");
    var data = read(table);
    var options = { animation: false, responsive: true, maintainAspectRatio: false,
      plugins: { legend: { position: "bottom" } }, scales: {} };
    var type = "bar";
    if (kind === "line") {
      type = "line";
      options.scales = { y: { beginAtZero: true } };
    } else if (kind === "stacked") {
      options.scales = { x: { stacked: true }, y: { stacked: true, beginAtZero: true } };
    } else if (kind === "funnel") {
      options.indexAxis = "y";
      options.scales = { x: { beginAtZero: true } };
    }
    var box = document.createElement("div");
    box.className = "chart-box";
    var canvas = document.createElement("canvas");
    canvas.setAttribute("role", "img");
    var caption = table.caption ? table.caption.textContent.trim() : "";
    canvas.setAttribute("aria-label", caption + ". " + (figure.getAttribute("data-note") || ""));
    box.appendChild(canvas);
    figure.insertBefore(box, figure.firstChild);
    new window.Chart(canvas, { type: type, data: data, options: options });
  }

  function start() {
    Array.prototype.forEach.call(document.querySelectorAll("figure.chart"), draw);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
