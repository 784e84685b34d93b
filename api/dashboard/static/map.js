/* Maps of stores, their geofences and the scan heatmap (Leaflet), for every element
   ".map[data-url]": the URL answers {stores, geofences, heatmap, tiles} (GeoJSON). Tiles
   only from PASSERELLE_MAP_TILES_URL; without it, a plain background. */
(function () {
  "use strict";
  var lang = document.body.getAttribute("data-lang") || "en";
  var locale = lang === "fr" ? "fr-FR" : "en-GB";
  document.querySelectorAll(".map[data-url]").forEach(function (mapBox) {
    if (!window.L) { return; }
    fetch(mapBox.getAttribute("data-url"), {credentials: "same-origin"})
      .then(function (r) { return r.json(); })
      .then(function (data) {
        var texts = JSON.parse(mapBox.getAttribute("data-texts") || "{}");
        var map = L.map(mapBox, {attributionControl: !!data.tiles, zoomControl: false});
        // Leaflet's own texts are English: the zoom buttons' and popups' in the page's language.
        L.control.zoom({zoomInTitle: texts.zoom_in, zoomOutTitle: texts.zoom_out}).addTo(map);
        map.on("popupopen", function (event) {
          var close = event.popup.getElement().querySelector(".leaflet-popup-close-button");
          if (close) {
            close.setAttribute("aria-label", texts.close);
            close.setAttribute("title", texts.close);
          }
        });
        if (data.tiles) {
          L.tileLayer(data.tiles, {maxZoom: 19}).addTo(map);
        } else {
          mapBox.classList.add("plain");
        }
        var max = 1;
        data.heatmap.features.forEach(function (f) { max = Math.max(max, f.properties.scans); });
        var heat = L.geoJSON(data.heatmap, {
          style: function (f) {
            return {className: "heat-cell", color: "#b3261e", weight: 1,
                    fillColor: "#e8590c", fillOpacity: 0.15 + 0.6 * f.properties.scans / max};
          }
        }).addTo(map);
        var fences = L.geoJSON(data.geofences, {
          style: function () {
            return {className: "geofence", color: "#1f5fbf", weight: 1, fillOpacity: 0.05};
          }
        }).addTo(map);
        // A store without a polygon may have a circular geofence (radius in metres).
        var fenced = {};
        data.geofences.features.forEach(function (f) { fenced[f.properties.id] = true; });
        var circles = data.stores.features.filter(function (f) {
          return f.properties.radius_m && !fenced[f.properties.id];
        });
        var scansLabel = texts.scans;
        var stores = L.geoJSON(data.stores, {
          pointToLayer: function (f, latlng) {
            return L.circleMarker(latlng, {className: "store-marker", radius: 7,
              color: "#0b3d91", weight: 2, fillColor: "#ffffff", fillOpacity: 1});
          },
          onEachFeature: function (f, layer) {
            var box = document.createElement("div");
            var name = document.createElement("strong");
            name.textContent = f.properties.name;
            box.appendChild(name);
            box.appendChild(document.createElement("br"));
            box.appendChild(document.createTextNode(scansLabel + ": " +
              new Intl.NumberFormat(locale).format(f.properties.scans)));
            layer.bindPopup(box);
            layer.bindTooltip(f.properties.name);
          }
        }).addTo(map);
        var bounds = L.featureGroup([heat, fences, stores]).getBounds();
        if (bounds.isValid()) {
          map.fitBounds(bounds, {padding: [20, 20], maxZoom: 15});
        } else {
          map.setView([46.6, 2.4], 5);
        }
        // Circles measure metres on the map: added once the map has a view.
        circles.forEach(function (f) {
          var c = f.geometry.coordinates;
          L.circle([c[1], c[0]], {radius: f.properties.radius_m, className: "geofence",
            color: "#1f5fbf", weight: 1, fillOpacity: 0.05}).addTo(map);
        });
        stores.bringToFront();
        mapBox.setAttribute("data-ready", "true");
      });
  });
})();
