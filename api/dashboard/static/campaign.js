/* The campaign page: the time-series chart (uPlot), the map (Leaflet) and the live feed
   (Server-Sent Events: events "scan" and "conversion" with JSON data). No inline script:
   the page's Content-Security-Policy allows only these files. */
(function () {
  "use strict";
  var lang = document.body.getAttribute("data-lang") || "en";
  var locale = lang === "fr" ? "fr-FR" : "en-GB";

  // Selects that submit their form when changed (the attribution model, the interval).
  document.querySelectorAll("select.autosubmit").forEach(function (select) {
    select.addEventListener("change", function () { select.form.submit(); });
  });

  // --- Chart -------------------------------------------------------------------------
  // Every text uPlot would draw in English comes from the page (data-texts) or from Intl
  // in the page's language: the legend's labels and date, month and day names, the
  // day/month order and the 24-hour clock of the axis (both en-GB and fr-FR).
  var monthNames = function (style) {
    var f = new Intl.DateTimeFormat(locale, {month: style, timeZone: "UTC"});
    var out = [];
    for (var m = 0; m < 12; m++) { out.push(f.format(new Date(Date.UTC(2026, m, 1)))); }
    return out;
  };
  var dayNames = function (style) {
    var f = new Intl.DateTimeFormat(locale, {weekday: style, timeZone: "UTC"});
    var out = [];
    // 2026-01-04 is a Sunday: uPlot's day names start on Sunday (Date.getDay).
    for (var d = 0; d < 7; d++) { out.push(f.format(new Date(Date.UTC(2026, 0, 4 + d)))); }
    return out;
  };
  var dateNames = {MMMM: monthNames("long"), MMM: monthNames("short"),
                   WWWW: dayNames("long"), WWW: dayNames("short")};
  function localTemplate(tpl) {
    return tpl.replace("{M}/{D}", "{D}/{M}")
      .replace("{h}:{mm}{aa}", "{HH}:{mm}")
      .replace("{h}{aa}", "{HH}:00")
      .replace("{h}", "{HH}")
      .replace("{aa}", "");
  }

  var chartBox = document.getElementById("chart");
  if (chartBox && window.uPlot) {
    var chartTexts = JSON.parse(chartBox.getAttribute("data-texts"));
    var chartUnavailable = function () {
      // A refused series (too many buckets) or a network error: say so, never a blank box.
      var note = document.createElement("p");
      note.className = "notice";
      note.setAttribute("role", "status");
      note.textContent = chartTexts.unavailable;
      chartBox.replaceChildren(note);
      chartBox.setAttribute("data-ready", "unavailable");
    };
    fetch(chartBox.getAttribute("data-url"), {credentials: "same-origin"})
      .then(function (r) {
        if (!r.ok) { throw new Error("series " + r.status); }
        return r.json();
      })
      .then(function (data) {
        var texts = chartTexts;
        var hourly = chartBox.getAttribute("data-interval") === "hour";
        var width = function () { return Math.max(260, chartBox.clientWidth); };
        var counts = new Intl.NumberFormat(locale, {maximumFractionDigits: 0});
        var when = new Intl.DateTimeFormat(locale, hourly
          ? {dateStyle: "medium", timeStyle: "short", timeZone: data.timezone}
          : {dateStyle: "medium", timeZone: data.timezone});
        var count = function (u, v) { return v == null ? "—" : counts.format(v); };
        var plot = new uPlot({
          width: width(),
          height: 260,
          tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1e3), data.timezone); },
          fmtDate: function (tpl) { return uPlot.fmtDate(localTemplate(tpl), dateNames); },
          series: [
            {label: texts.when,
             value: function (u, ts) { return ts == null ? "—" : when.format(new Date(ts * 1e3)); }},
            {label: texts.scans, stroke: "#1f5fbf", width: 2, fill: "rgba(31,95,191,0.08)",
             value: count},
            {label: texts.conversions, stroke: "#b3261e", width: 2, value: count}
          ],
          // Counts: whole-number ticks only, from zero.
          scales: {y: {range: function (u, min, max) { return [0, Math.max(4, max)]; }}},
          axes: [{}, {incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000,
                              20000, 50000, 100000, 200000, 500000, 1000000],
                      values: function (u, ticks) { return ticks.map(counts.format); }}]
        }, [data.t, data.scans, data.conversions], chartBox);
        chartBox.setAttribute("data-ready", "true");
        window.addEventListener("resize", function () {
          plot.setSize({width: width(), height: 260});
        });
      })
      .catch(chartUnavailable);
  }

  // --- Live feed ---------------------------------------------------------------------
  var live = document.getElementById("live");
  if (!live || !window.EventSource) { return; }
  var texts = JSON.parse(live.getAttribute("data-texts"));
  var feed = document.getElementById("feed");
  var status = document.getElementById("live-status");
  var MAX_ROWS = 50;

  function counter(name) { return document.querySelector('[data-counter="' + name + '"]'); }

  function bump(name, by) {
    var el = counter(name);
    if (!el) { return; }
    var value = Number(el.getAttribute("data-value") || "0") + by;
    el.setAttribute("data-value", String(value));
    el.textContent = new Intl.NumberFormat(locale).format(value);
  }

  function addRevenue(value) {
    var el = counter("revenue");
    if (!el || !value || value.currency !== el.getAttribute("data-currency")) { return; }
    var minor = Number(el.getAttribute("data-value") || "0") + Number(value.amount_minor || 0);
    var digits = Number(el.getAttribute("data-digits") || "2");
    el.setAttribute("data-value", String(minor));
    el.textContent = new Intl.NumberFormat(locale, {style: "currency", currency: value.currency})
      .format(minor / Math.pow(10, digits));
  }

  function row(kind, parts, when) {
    var li = document.createElement("li");
    li.className = "feed-" + kind;
    var time = document.createElement("time");
    var date = when ? new Date(when) : new Date();
    time.dateTime = date.toISOString();
    time.textContent = new Intl.DateTimeFormat(locale, {timeStyle: "medium"}).format(date);
    var label = document.createElement("strong");
    label.textContent = texts[kind];
    li.appendChild(time);
    li.appendChild(document.createTextNode(" "));
    li.appendChild(label);
    li.appendChild(document.createTextNode(" " + parts.filter(Boolean).join(" · ")));
    feed.insertBefore(li, feed.firstChild);
    while (feed.children.length > MAX_ROWS) { feed.removeChild(feed.lastChild); }
  }

  function parse(event) {
    try { return JSON.parse(event.data); } catch (e) { return {}; }
  }

  var retry = 1000;
  var opened = false;
  function connect() {
    var source = new EventSource(live.getAttribute("data-url"));
    source.addEventListener("open", function () {
      retry = 1000;
      opened = true;
      status.textContent = texts.connected;
    });
    source.addEventListener("scan", function (event) {
      var scan = parse(event);
      // Staff's scans (a phone signed into the dashboard) count apart, flagged.
      if (scan.internal) { bump("internal_scans", 1); } else if (!scan.is_bot) { bump("scans", 1); }
      // Device, city and store only: never an address.
      row(scan.internal ? "internal" : "scan", [scan.device_type || texts.unknown, scan.city,
                   scan.location_name || scan.store, scan.channel], scan.scanned_at);
    });
    source.addEventListener("conversion", function (event) {
      var conversion = parse(event);
      bump("conversions", 1);
      addRevenue(conversion.value);
      var amount = conversion.value ? new Intl.NumberFormat(locale, {style: "currency",
        currency: conversion.value.currency}).format(conversion.value.amount_minor /
        Math.pow(10, Number(counter("revenue") ? counter("revenue").getAttribute("data-digits") : 2)))
        : "";
      row("conversion", [conversion.event, amount], conversion.occurred_at);
    });
    source.addEventListener("error", function () {
      status.textContent = opened ? texts.reconnecting : texts.unavailable;
      // EventSource reconnects by itself after a network error; after a refusal (HTTP
      // error or 204) it is closed: reconnect here, backing off up to 30 s.
      if (source.readyState === EventSource.CLOSED) {
        setTimeout(connect, retry);
        retry = Math.min(retry * 2, 30000);
      }
    });
  }
  connect();
})();
