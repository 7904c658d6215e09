/* The dashboard's day-by-day charts, drawn with uPlot (vendored in /static/vendor/uplot).

   Each <figure data-chart> carries its numbers in a <script type="application/json"> block:
   data, not code, so the Content-Security-Policy (script-src 'self', no inline script) holds.
   uPlot sizes its canvas and legend through element.style, which is the CSSOM and not an
   inline style attribute, so style-src 'self' holds too. The same numbers are in a table in a
   <details> that the page serves open: without scripts (or if uPlot fails to load) nothing is
   lost; once the chart is drawn the table folds away behind its summary.

   A chart whose data says "unit": "hour" (a broadcast's opens by hour since sending) has hours
   since a start on x, not calendar days: ticks read "+3 h".

   The chart follows its container's width (a ResizeObserver), so it fits a 390 px phone as it
   fits a desktop. Lines differ by dash as well as colour, for readers who do not see colour. */
(function () {
  "use strict";

  var STYLES = {
    sent: { stroke: "#33403a", width: 2 },
    opened: { stroke: "#0067a3", width: 2 },
    clicked: { stroke: "#b34700", width: 2, dash: [8, 4] },
    unsubscribed: { stroke: "#7b3f8c", width: 1.5, dash: [2, 3] },
    bounced: { stroke: "#a1261b", width: 1.5, dash: [8, 3, 2, 3] }
  };
  var OTHER = { stroke: "#56605a", width: 1.5 };
  // counts: whole-number steps on the y axis, never 0.5 of an email
  var STEPS = [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1e3, 2e3, 2500, 5e3, 1e4, 2e4,
    25e3, 5e4, 1e5, 2e5, 25e4, 5e5, 1e6, 2e6, 25e5, 5e6, 1e7];

  // x is each of the workspace's calendar days at midnight *as if UTC*: read it in UTC
  function day(ts) {
    return window.uPlot.tzDate(new Date(ts * 1000), "Etc/UTC");
  }

  function heightFor(width) {
    return width < 520 ? 220 : 280;
  }

  function draw(figure) {
    var plot = figure.querySelector("[data-chart-plot]");
    var block = figure.querySelector("script[data-chart-data]");
    if (!plot || !block || typeof window.uPlot !== "function") {
      return;
    }
    var data = JSON.parse(block.textContent);
    var hours = data.unit === "hour";
    var tick = window.uPlot.fmtDate("{D} {MMM}");
    var since = function (u, v) {
      return v == null ? "" : "+" + v + " h";
    };
    var series = [
      hours ? { label: "Hour", value: since } : { label: "Day", value: "{WWW} {D} {MMM} {YYYY}" }
    ];
    var columns = [data.x];
    data.series.forEach(function (line) {
      var style = STYLES[line.key] || OTHER;
      series.push({
        label: line.label,
        stroke: style.stroke,
        width: style.width,
        dash: style.dash
      });
      columns.push(line.values);
    });

    var xAxis = {
      // "3 Nov" rather than "11/3": unambiguous wherever the reader is
      values: function (u, splits) {
        return splits.map(function (ts) {
          return hours ? since(u, ts) : tick(day(ts));
        });
      }
    };
    if (hours) {
      // whole hours only on x, as whole emails on y
      xAxis.incrs = [1, 2, 3, 6, 12, 24, 48];
    }
    plot.hidden = false;
    var width = plot.clientWidth;
    var chart = new window.uPlot(
      {
        width: width,
        height: heightFor(width),
        tzDate: day,
        scales: {
          x: hours
            ? {
                time: false,
                auto: false,
                // at least six hours wide: the first hour of a send is one point, not the axis
                range: [0, Math.max(data.x[data.x.length - 1] || 0, 6)]
              }
            : { time: true },
          y: {
            range: function (u, min, max) {
              return [0, max > 0 ? Math.ceil(max * 1.08) : 1];
            }
          }
        },
        axes: [
          xAxis,
          { size: 56, incrs: STEPS }
        ],
        series: series
      },
      columns,
      plot
    );

    if (typeof window.ResizeObserver === "function") {
      new window.ResizeObserver(function () {
        var now = plot.clientWidth;
        if (now > 0 && now !== chart.width) {
          chart.setSize({ width: now, height: heightFor(now) });
        }
      }).observe(plot);
    }
    var table = figure.querySelector("details[data-chart-table]");
    if (table) {
      table.open = false;
    }
    figure.setAttribute("data-drawn", "");
  }

  function drawAll() {
    Array.prototype.forEach.call(document.querySelectorAll("figure[data-chart]"), draw);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", drawAll);
  } else {
    drawAll();
  }
})();
