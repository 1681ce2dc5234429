// Worker step 3: show the stored check; run it once on the first visit (owner only); re-checks are explicit
// (the "check again" button, another reference image) and the page reloads to show the stored record.
(function () {
  "use strict";
  const root = document.getElementById("anomaly-root");
  if (!root) { return; }
  const inspectionId = root.dataset.inspectionId;
  const productId = root.dataset.productId ? Number(root.dataset.productId) : null;
  const statusEl = document.getElementById("anomaly-status");
  const errorEl = document.getElementById("anomaly-error");
  const resultEl = document.getElementById("anomaly-result");
  const picture = document.getElementById("anomaly-picture");
  let current = null;

  function format(template, values) {
    return template.replace(/\{(\w+)\}/g, function (match, key) {
      return Object.prototype.hasOwnProperty.call(values, key) ? values[key] : match;
    });
  }

  function showView(key) {
    if (!current) { return; }
    picture.src = current[key] + "?v=" + Date.now();
    document.querySelectorAll(".anomaly-tabs button").forEach(function (b) {
      b.classList.toggle("active", b.dataset.view === key);
    });
  }

  function showResult(data) {
    current = data;
    resultEl.hidden = false;
    errorEl.hidden = true;
    statusEl.hidden = true;
    const badge = document.getElementById("anomaly-badge");
    badge.textContent = data.is_anomaly ? root.dataset.tAnomaly : root.dataset.tNormal;
    badge.className = "badge verdict " + (data.is_anomaly ? "is-anomaly" : "is-normal");
    document.getElementById("anomaly-score").textContent = data.score.toFixed(3);
    document.getElementById("anomaly-threshold").textContent = data.threshold.toFixed(3);
    const bar = document.getElementById("anomaly-bar");
    const share = Math.max(0, Math.min(1, data.score / (2 * data.threshold)));
    bar.style.width = (share * 100).toFixed(1) + "%";
    bar.classList.toggle("over", data.is_anomaly);
    const list = document.getElementById("anomaly-regions");
    list.innerHTML = "";
    if (!data.regions.length) {
      const li = document.createElement("li");
      li.textContent = root.dataset.tNoRegions;
      list.appendChild(li);
    }
    data.regions.forEach(function (r, i) {
      const li = document.createElement("li");
      li.textContent = format(root.dataset.tRegion, {
        n: i + 1, x: r.x, y: r.y, w: r.width, h: r.height, score: r.score.toFixed(2),
      });
      list.appendChild(li);
    });
    document.getElementById("anomaly-elapsed").textContent = format(root.dataset.tElapsed, { ms: Math.round(data.elapsed_ms) });
    document.querySelectorAll(".thumb").forEach(function (t) {
      t.classList.toggle("selected", data.reference_image && Number(t.dataset.referenceId) === data.reference_image.id);
    });
    showView("comparison_url");
  }

  function showError(status, body) {
    statusEl.hidden = true;
    errorEl.hidden = false;
    errorEl.textContent = (body && body.detail) ? body.detail : ("HTTP " + status);
    if (status === 409 && root.dataset.isAdmin === "true") {
      const link = document.createElement("a");
      link.href = root.dataset.deployLink;
      link.textContent = " " + root.dataset.tDeployLink;
      link.className = "deploy-link";
      errorEl.appendChild(document.createElement("br"));
      errorEl.appendChild(link);
    }
  }

  function run(referenceId) {
    statusEl.hidden = false;
    statusEl.textContent = root.dataset.tRunning;
    const body = { product_id: productId, reference_image_id: referenceId || null };
    window.DefectLens.api("/api/v1/inspections/" + inspectionId + "/anomaly", {
      method: "POST",
      headers: { "Content-Type": "application/json", "Accept": "application/json" },
      body: JSON.stringify(body),
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (data) {
        // reload: the outcome, the status and the record are the server's, as stored
        if (response.ok) { window.location.reload(); } else { showError(response.status, data); }
      });
    }).catch(function () { showError(0, null); });
  }

  function generatorNames(data) {
    // only generators this server can run and this worker may pick; the default one first
    const items = Array.isArray(data) ? data : (data && (data.generators || data.items)) || [];
    const usable = items.filter(function (g) {
      return typeof g === "string" || (g.available !== false && g.is_allowed !== false);
    });
    usable.sort(function (a, b) { return (b.is_default ? 1 : 0) - (a.is_default ? 1 : 0); });
    // the translated label on the button, the name in the link
    return usable.map(function (g) {
      return typeof g === "string" ? { name: g, label: g } : { name: g.name || g.id, label: g.label || g.name || g.id };
    }).filter(function (g) { return g.name; });
  }

  function loadGenerators() {
    const holder = document.getElementById("generator-buttons");
    window.DefectLens.api("/api/v1/generators", { headers: { "Accept": "application/json" } })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (data) {
        const names = data ? generatorNames(data) : [];
        if (!names.length) { return; }  // keep the server-rendered "extractive" button
        holder.innerHTML = "";
        names.forEach(function (g, i) {
          const a = document.createElement("a");
          a.className = "button" + (i === 0 ? " primary" : "");
          a.href = "/inspect/" + inspectionId + "/guidance?generator=" + encodeURIComponent(g.name);
          a.textContent = format(root.dataset.tGenerator, { name: g.label });
          holder.appendChild(a);
        });
      })
      .catch(function () { /* keep the default button */ });
  }

  document.querySelectorAll(".anomaly-tabs button").forEach(function (b) {
    b.addEventListener("click", function () { showView(b.dataset.view); });
  });
  const canChange = root.dataset.canChange === "true";
  document.querySelectorAll(".thumb").forEach(function (t) {
    t.disabled = !canChange;
    t.addEventListener("click", function () { if (canChange) { run(Number(t.dataset.referenceId)); } });
  });
  const rerun = document.getElementById("anomaly-rerun");
  if (rerun) {
    rerun.addEventListener("click", function () {
      const selected = document.querySelector(".thumb.selected");
      run(selected ? Number(selected.dataset.referenceId) : null);
    });
  }
  loadGenerators();
  const stored = document.getElementById("anomaly-stored");
  if (stored) {
    showResult(JSON.parse(stored.textContent));
    statusEl.hidden = false;
  } else if (canChange && root.dataset.hasModel === "true" && root.dataset.hadCheck !== "true") {
    run(null);
  }
})();
