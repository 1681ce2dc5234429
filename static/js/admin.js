// Admin console: uploads with progress (XHR), the refused-file list, live preprocessing preview and
// manual indexing status polling. Validation and storage happen on the server; this only presents it.
(function () {
  "use strict";
  const RESULT_KEY = "defectlens.uploadResult";

  function fmt(template, params) {
    return String(template || "").replace(/\{(\w+)\}/g, function (m, k) { return k in params ? params[k] : m; });
  }
  function humanSize(bytes) {
    if (bytes < 1024) return bytes + " B";
    if (bytes < 1048576) return (bytes / 1024).toFixed(1) + " KB";
    return (bytes / 1048576).toFixed(1) + " MB";
  }
  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function errorDetail(xhr, fallback) {
    try { const body = JSON.parse(xhr.responseText); if (body && body.detail) return body.detail; } catch (e) { /* not JSON */ }
    return fallback + " (HTTP " + xhr.status + ")";
  }

  // POST multipart with upload progress; resolves with {status, body}.
  function send(url, formData, onProgress) {
    return new Promise(function (resolve) {
      const xhr = new XMLHttpRequest();
      xhr.open("POST", url);
      xhr.setRequestHeader("X-CSRF-Token", window.DefectLens.csrfToken);
      xhr.setRequestHeader("Accept", "application/json");
      xhr.upload.addEventListener("progress", function (e) {
        if (e.lengthComputable) onProgress(Math.round((e.loaded / e.total) * 100));
      });
      xhr.addEventListener("load", function () { resolve(xhr); });
      xhr.addEventListener("error", function () { resolve(xhr); });
      xhr.send(formData);
    });
  }

  function wireUpload(form, buildData, onDone) {
    const input = form.querySelector("input[type=file]");
    const zone = form.querySelector(".dropzone");
    const chosen = form.querySelector(".dz-chosen");
    const wrap = form.querySelector(".progress-wrap");
    const bar = wrap.querySelector("progress");
    const text = wrap.querySelector(".progress-text");
    const button = form.querySelector("button[type=submit]");
    function showChosen() {
      const files = Array.prototype.slice.call(input.files || []);
      const size = files.reduce(function (s, f) { return s + f.size; }, 0);
      chosen.textContent = files.length ? fmt(chosen.dataset.template, { count: files.length, size: humanSize(size) }) : "";
    }
    input.addEventListener("change", showChosen);
    ["dragenter", "dragover"].forEach(function (n) { zone.addEventListener(n, function () { zone.classList.add("dragging"); }); });
    ["dragleave", "drop"].forEach(function (n) { zone.addEventListener(n, function () { zone.classList.remove("dragging"); }); });
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      if (!input.files || !input.files.length) { window.alert(form.dataset.msgChoose); return; }
      const data = buildData(input.files);
      wrap.hidden = false; bar.value = 0; button.disabled = true;
      text.textContent = fmt(form.dataset.msgUploading, { percent: 0 });
      const target = form.querySelector("select[name=product_id]");
      const url = form.dataset.url.replace("{id}", target ? encodeURIComponent(target.value) : "");
      send(url, data, function (pct) {
        bar.value = pct;
        text.textContent = pct >= 100 ? form.dataset.msgProcessing : fmt(form.dataset.msgUploading, { percent: pct });
      }).then(function (xhr) {
        button.disabled = false;
        if (xhr.status >= 200 && xhr.status < 300) {
          bar.value = 100;
          onDone(JSON.parse(xhr.responseText));
        } else {
          wrap.hidden = true;
          const alert = el("div", { class: "alert", role: "alert" }, errorDetail(xhr, form.dataset.msgFailed));
          form.parentNode.insertBefore(alert, form);
        }
      });
    });
  }

  // --- Reference images: many files or ZIPs; the result survives the reload that refreshes the grid.
  function renderUploadResult(box, result) {
    box.hidden = false;
    box.textContent = "";
    const summary = el("div", { class: "summary" });
    summary.appendChild(el("span", { class: "ok" }, fmt(box.dataset.msgCreated, { count: result.created.length })));
    if (result.rejected.length) summary.appendChild(el("span", { class: "bad" }, fmt(box.dataset.msgRejected, { count: result.rejected.length })));
    box.appendChild(summary);
    if (result.rejected.length) {
      const table = el("table", { class: "table compact rejected-list" });
      const head = el("tr");
      head.appendChild(el("th", {}, box.dataset.colFile));
      head.appendChild(el("th", {}, box.dataset.colReason));
      table.appendChild(el("thead")).appendChild(head);
      const body = el("tbody");
      result.rejected.forEach(function (r) {
        const row = el("tr");
        row.appendChild(el("td", { class: "name" }, r.file_name));
        row.appendChild(el("td", { class: "reason" }, r.reason));
        body.appendChild(row);
      });
      table.appendChild(body);
      box.appendChild(table);
    }
    if (result.created.length) {
      const p = el("p", { class: "muted small-text" }, box.dataset.msgDeploy + " ");
      p.appendChild(el("a", { href: box.dataset.deployLink }, "→"));
      box.appendChild(p);
    }
  }

  const imageForm = document.getElementById("upload-form");
  const resultBox = document.getElementById("upload-result");
  if (imageForm && resultBox) {
    const saved = window.sessionStorage.getItem(RESULT_KEY);
    if (saved) {
      window.sessionStorage.removeItem(RESULT_KEY);
      try { renderUploadResult(resultBox, JSON.parse(saved)); } catch (e) { /* ignore a stale entry */ }
    }
    wireUpload(imageForm, function (files) {
      const data = new FormData();
      data.append("kind", imageForm.dataset.kind);
      const dt = imageForm.querySelector("select[name=defect_type_id]");
      if (dt) data.append("defect_type_id", dt.value);
      const view = imageForm.querySelector("input[name=view]");
      if (view && view.value.trim()) data.append("view", view.value.trim());
      Array.prototype.forEach.call(files, function (f) { data.append("files", f, f.name); });
      return data;
    }, function (result) {
      window.sessionStorage.setItem(RESULT_KEY, JSON.stringify(result));
      window.location.reload();
    });
  }

  // --- Manuals: one PDF or DOCX at a time, then poll indexing status until every row is final.
  const manualForm = document.getElementById("manual-upload-form");
  if (manualForm) {
    wireUpload(manualForm, function (files) {
      const data = new FormData();
      data.append("file", files[0], files[0].name);
      return data;
    }, function () {
      window.location.reload();
    });
  }
  const manualTable = document.getElementById("manual-table");
  if (manualTable) {
    const FINAL = ["indexed", "failed"];
    const labels = JSON.parse(manualTable.dataset.statusLabels || "{}");
    function pending() {
      return Array.prototype.filter.call(manualTable.querySelectorAll("tr[data-manual-id]"), function (row) {
        return FINAL.indexOf(row.dataset.status) < 0;
      });
    }
    function poll() {
      const rows = pending();
      if (!rows.length) return;
      const products = {};
      rows.forEach(function (row) { products[row.dataset.productId] = true; });
      Promise.all(Object.keys(products).map(function (pid) {
        return window.DefectLens.api("/api/v1/products/" + pid + "/manuals").then(function (r) { return r.ok ? r.json() : []; });
      })).then(function (lists) {
        let understood = false;
        lists.forEach(function (list) {
          list.forEach(function (m) {
            const row = manualTable.querySelector('tr[data-manual-id="' + m.id + '"]');
            if (!row) return;
            if (m.status === "indexed" && row.dataset.status !== "indexed") understood = true;
            row.dataset.status = m.status;
            const badge = row.querySelector(".status-badge");
            badge.className = "badge status-badge state-" + m.status;
            badge.textContent = labels[m.status] || m.status;
            row.querySelector(".error-text").textContent = m.error || "";
            row.querySelector(".page-count").textContent = m.page_count;
          });
        });
        // A manual just indexed has a structure to show (sections found): redraw the list once.
        if (understood && !pending().length) { window.location.reload(); return; }
        window.setTimeout(poll, 3000);
      }).catch(function () { window.setTimeout(poll, 10000); });
    }
    window.setTimeout(poll, 2000);
  }

  // --- Preprocessing: redraw the "after" image whenever a switch or the sample image changes.
  const preview = document.getElementById("prep-preview");
  const prepForm = document.getElementById("prep-form");
  if (preview && prepForm) {
    const after = document.getElementById("prep-after");
    const before = document.getElementById("prep-before");
    const select = document.getElementById("prep-image");
    const spinner = preview.querySelector(".spinner");
    let timer = null;
    function redraw() {
      const option = select.options[select.selectedIndex];
      const version = option ? option.dataset.v : "";
      const params = new URLSearchParams();
      params.set("image_id", select.value);
      params.set("v", version);
      prepForm.querySelectorAll("input[name=steps]").forEach(function (box) { params.set(box.value, box.checked ? "true" : "false"); });
      spinner.hidden = false;
      after.src = preview.dataset.url + "?" + params.toString();
      // "Before" goes through the same endpoint with every switch off: same size, same scaling.
      before.src = preview.dataset.url + "?image_id=" + encodeURIComponent(select.value) + "&v=" + encodeURIComponent(version);
    }
    after.addEventListener("load", function () { spinner.hidden = true; after.dataset.loaded = after.src; });
    after.addEventListener("error", function () { spinner.hidden = true; after.alt = preview.dataset.msgFailed; });
    function schedule() { window.clearTimeout(timer); timer = window.setTimeout(redraw, 120); }
    prepForm.addEventListener("change", schedule);
    select.addEventListener("change", schedule);
    redraw();
  }
})();
