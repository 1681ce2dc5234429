// Live job panels on the deploy screens: server-sent events with a polling fallback, cancel without a
// page reload, the log on the job page. The server decides everything; this only shows it.
(function () {
  "use strict";
  const labelsNode = document.getElementById("deploy-labels");
  const labels = labelsNode ? JSON.parse(labelsNode.textContent) : { statuses: {} };
  const ACTIVE = ["queued", "running"];

  function duration(seconds) {
    if (seconds === null || seconds === undefined) { return "-"; }
    const s = Math.max(0, Math.round(seconds));
    if (s >= 60) { return labels.duration_ms.replace("{m}", Math.floor(s / 60)).replace("{s}", s % 60); }
    return labels.duration_s.replace("{s}", s);
  }

  function setText(panel, field, text) {
    const node = panel.querySelector('[data-field="' + field + '"]');
    if (node) { node.textContent = text; }
    return node;
  }

  function render(panel, job) {
    panel.dataset.status = job.status;
    panel._job = job;
    panel._seenAt = Date.now();
    const status = setText(panel, "status", labels.statuses[job.status] || job.status);
    if (status) { status.className = "badge status-" + job.status; }
    const pct = Math.round(job.progress * 1000) / 10;
    const bar = panel.querySelector('[data-field="bar"]');
    if (bar) { bar.style.width = pct + "%"; bar.className = "progress-bar status-" + job.status; }
    const progress = panel.querySelector('[role="progressbar"]');
    if (progress) { progress.setAttribute("aria-valuenow", String(Math.round(pct))); }
    setText(panel, "percent", Math.round(pct) + "%");
    setText(panel, "stage", (labels.stages && labels.stages[job.stage]) || job.stage || "-");
    setText(panel, "elapsed", duration(job.elapsed_s));
    const active = ACTIVE.indexOf(job.status) >= 0;
    setText(panel, "eta", job.eta_s !== null && job.eta_s !== undefined ? duration(job.eta_s) : (active ? labels.eta_unknown : "-"));
    const error = panel.querySelector('[data-field="error"]');
    if (error) { error.textContent = job.error || ""; error.hidden = !job.error; }
    const cancel = panel.querySelector("[data-cancel-form]");
    if (cancel) { cancel.hidden = !active; }
  }

  let lastDetail = 0;
  // The log: in full on the job page, its last lines in each panel on the deploy screen.
  function refreshDetail(jobId, force) {
    const log = document.querySelector("[data-job-log]");
    const panel = document.querySelector('[data-job-panel][data-job-id="' + jobId + '"]');
    const tail = panel ? panel.querySelector("[data-stage-list]") : null;
    if ((!log && !tail) || (!force && Date.now() - lastDetail < 2000)) { return Promise.resolve(); }
    lastDetail = Date.now();
    return window.DefectLens.api("/api/v1/deployments/" + jobId).then(function (r) { return r.ok ? r.json() : null; })
      .then(function (job) {
        if (!job) { return; }
        if (log && job.log) { log.textContent = job.log; }
        if (tail && job.log) {
          tail.replaceChildren.apply(tail, job.log.trim().split("\n").slice(-5).map(function (line) {
            const item = document.createElement("li");
            item.textContent = line;
            return item;
          }));
          tail.hidden = false;
        }
        const result = document.querySelector("[data-result-section]");
        if (result && job.result && Object.keys(job.result).length) {
          result.hidden = false;
          result.querySelector('[data-field="result"]').textContent = JSON.stringify(job.result, null, 2);
        }
      })
      .catch(function () { /* the next event tries again */ });
  }

  function finished(panel, job) {
    render(panel, job);
    refreshDetail(job.id, true).then(function () {
      // The deploy screen shows the new artifact state and history once the job is over.
      if (!document.querySelector("[data-job-log]")) { setTimeout(function () { window.location.reload(); }, 1200); }
    });
  }

  function poll(panel, jobId) {
    const timer = setInterval(function () {
      window.DefectLens.api("/api/v1/deployments/" + jobId).then(function (r) { return r.ok ? r.json() : null; })
        .then(function (job) {
          if (!job) { return; }
          if (ACTIVE.indexOf(job.status) < 0) { clearInterval(timer); finished(panel, job); return; }
          render(panel, job);
          refreshDetail(jobId);
        })
        .catch(function () { /* keep trying: the server may be restarting */ });
    }, 1500);
  }

  function watch(panel) {
    const jobId = panel.dataset.jobId;
    if (ACTIVE.indexOf(panel.dataset.status) < 0) { return; }
    if (!window.EventSource) { poll(panel, jobId); return; }
    const source = new EventSource("/api/v1/deployments/" + jobId + "/events");
    let done = false;
    source.addEventListener("progress", function (e) { render(panel, JSON.parse(e.data)); refreshDetail(jobId); });
    source.addEventListener("end", function (e) { done = true; source.close(); finished(panel, JSON.parse(e.data)); });
    source.onerror = function () {
      if (done) { return; }
      source.close();
      poll(panel, jobId);  // proxies that buffer or cut event streams: fall back to polling
    };
  }

  // Elapsed time keeps counting between events.
  setInterval(function () {
    document.querySelectorAll("[data-job-panel]").forEach(function (panel) {
      const job = panel._job;
      if (!job || job.status !== "running" || job.elapsed_s === null) { return; }
      setText(panel, "elapsed", duration(job.elapsed_s + (Date.now() - panel._seenAt) / 1000));
    });
  }, 1000);

  document.querySelectorAll("[data-job-panel]").forEach(function (panel) {
    try { render(panel, JSON.parse(panel.dataset.job)); } catch (err) { /* keep the server-rendered view */ }
    watch(panel);
    const form = panel.querySelector("[data-cancel-form]");
    if (form) {
      form.addEventListener("submit", function (event) {
        event.preventDefault();
        const question = form.getAttribute("data-cancel-confirm");
        if (question && !window.confirm(question)) { return; }
        window.DefectLens.api("/api/v1/deployments/" + panel.dataset.jobId + "/cancel", { method: "POST" })
          .then(function (r) { return r.json().then(function (body) { return { ok: r.ok, body: body }; }); })
          .then(function (res) {
            if (!res.ok) { window.alert(res.body.detail || labels.cancel_failed); return; }
            render(panel, res.body);
            if (ACTIVE.indexOf(res.body.status) < 0) { finished(panel, res.body); }
          });
      });
    }
  });
})();
