// Worker steps 1-2: photo upload with preview, and the search result page (choose TOP-1, TOP-K, register).
// Decisions (verdict, file names, thresholds) come from the server; this file only calls the API.
(function () {
  "use strict";

  function detailOf(response, fallback) {
    return response.json().then(function (body) {
      return (body && body.detail) || fallback;
    }, function () { return fallback; });
  }

  function showError(box, message) {
    box.textContent = message;
    box.hidden = false;
  }

  function formatBytes(n) {
    if (n >= 1048576) { return (n / 1048576).toFixed(1) + " MB"; }
    return Math.max(1, Math.round(n / 1024)) + " KB";
  }

  // --- step 1: upload --------------------------------------------------------------------------
  function initUpload(form) {
    const input = document.getElementById("photo-input");
    const zone = document.getElementById("drop-zone");
    const preview = document.getElementById("photo-preview");
    const info = document.getElementById("photo-info");
    const submit = document.getElementById("upload-submit");
    const errorBox = document.getElementById("upload-error");
    const maxBytes = parseInt(form.dataset.maxBytes, 10);
    let file = null;

    function choose(candidate) {
      errorBox.hidden = true;
      if (!candidate) { return; }
      if (!candidate.type || candidate.type.indexOf("image/") !== 0) {
        showError(errorBox, form.dataset.notImage);
        return;
      }
      if (candidate.size > maxBytes) {
        showError(errorBox, form.dataset.tooLarge);
        return;
      }
      file = candidate;
      preview.src = URL.createObjectURL(file);
      preview.hidden = false;
      zone.classList.add("has-photo");
      document.getElementById("info-name").textContent = file.name;
      document.getElementById("info-size").textContent = formatBytes(file.size);
      document.getElementById("info-resolution").textContent = "-";
      preview.onload = function () {
        document.getElementById("info-resolution").textContent = preview.naturalWidth + " × " + preview.naturalHeight;
      };
      info.hidden = false;
      submit.disabled = false;
    }

    // several views: more photos, each with its view label (the server checks the labels)
    const viewsBox = document.getElementById("views-add");
    const viewRows = document.getElementById("view-rows");
    const viewsInput = document.getElementById("views-input");
    let extra = [];

    function addView(candidate) {
      if (!candidate.type || candidate.type.indexOf("image/") !== 0) {
        showError(errorBox, form.dataset.notImage);
        return;
      }
      if (candidate.size > maxBytes) {
        showError(errorBox, form.dataset.tooLarge);
        return;
      }
      const row = document.createElement("div");
      row.className = "view-row";
      const thumb = document.createElement("img");
      thumb.src = URL.createObjectURL(candidate);
      thumb.alt = "";
      const name = document.createElement("span");
      name.textContent = candidate.name;
      const label = document.createElement("input");
      label.maxLength = 32;
      label.className = "view-label-input";
      label.placeholder = viewsBox.dataset.placeholder;
      label.setAttribute("list", "view-suggestions");
      const remove = document.createElement("button");
      remove.type = "button";
      remove.className = "small";
      remove.textContent = viewsBox.dataset.remove;
      const entry = { file: candidate, input: label };
      remove.addEventListener("click", function () {
        extra = extra.filter(function (e) { return e !== entry; });
        row.remove();
      });
      row.append(thumb, name, label, remove);
      viewRows.appendChild(row);
      extra.push(entry);
    }

    if (viewsInput) {
      viewsInput.addEventListener("change", function () {
        errorBox.hidden = true;
        Array.prototype.forEach.call(viewsInput.files, addView);
        viewsInput.value = "";
      });
    }

    input.addEventListener("change", function () { choose(input.files[0]); });
    ["dragenter", "dragover"].forEach(function (name) {
      zone.addEventListener(name, function (event) { event.preventDefault(); zone.classList.add("dragging"); });
    });
    ["dragleave", "drop"].forEach(function (name) {
      zone.addEventListener(name, function (event) { event.preventDefault(); zone.classList.remove("dragging"); });
    });
    zone.addEventListener("drop", function (event) {
      const files = event.dataTransfer && event.dataTransfer.files;
      if (files && files.length) { choose(files[0]); }
    });

    form.addEventListener("submit", function (event) {
      event.preventDefault();
      if (!file) { return; }
      const body = new FormData();
      const mainView = document.getElementById("main-view");
      const mainLabel = mainView ? mainView.value.trim() : "";
      if (extra.length || mainLabel) {
        body.append("files", file, file.name);
        body.append("views", mainLabel);
        extra.forEach(function (e) {
          body.append("files", e.file, e.file.name);
          body.append("views", e.input.value.trim());
        });
      } else {
        body.append("file", file, file.name);
      }
      const product = document.getElementById("product-select").value;
      if (product) { body.append("product_id", product); }
      submit.disabled = true;
      const label = submit.textContent;
      submit.textContent = form.dataset.uploading;
      window.DefectLens.api("/api/v1/inspections", { method: "POST", body: body }).then(function (response) {
        if (response.status === 201) {
          return response.json().then(function (created) {
            window.location.assign("/inspect/" + created.id + "/search");
          });
        }
        return detailOf(response, form.dataset.failed).then(function (message) {
          showError(errorBox, message);
          submit.disabled = false;
          submit.textContent = label;
        });
      }, function () {
        showError(errorBox, form.dataset.failed);
        submit.disabled = false;
        submit.textContent = label;
      });
    });
  }

  // --- step 2: search result -------------------------------------------------------------------
  function initSearch(page) {
    const id = page.dataset.inspectionId;
    const errorBox = document.getElementById("search-error");

    function post(url, payload) {
      return window.DefectLens.api(url, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(payload),
      });
    }

    function postThenReload(url, payload) {
      page.classList.add("busy");
      return post(url, payload).then(function (response) {
        if (response.ok) { window.location.reload(); return; }
        page.classList.remove("busy");
        return detailOf(response, page.dataset.msgFailed).then(function (message) {
          const searching = document.getElementById("searching");
          if (searching) { searching.hidden = true; }
          showError(errorBox, message);
        });
      });
    }

    function search(topK) {
      return postThenReload("/api/v1/inspections/" + id + "/search", { top_k: topK });
    }

    const canChange = page.dataset.canChange !== "false";
    // the step runs once, on the first visit; a stored result is shown as it was recorded
    if (page.dataset.hasResult !== "true" && canChange) {
      search(parseInt(page.dataset.topK, 10) || 5);
    }
    const topK = document.getElementById("top-k");
    if (topK) {
      topK.addEventListener("change", function () { search(parseInt(topK.value, 10)); });
    }
    document.querySelectorAll("#other-matches .thumb").forEach(function (button) {
      button.addEventListener("click", function () {
        postThenReload("/api/v1/inspections/" + id + "/search/choose", { image_id: parseInt(button.dataset.imageId, 10) });
      });
    });
    const reset = document.getElementById("reset-choice");
    if (reset) {
      reset.addEventListener("click", function () {
        postThenReload("/api/v1/inspections/" + id + "/search/choose", { image_id: null });
      });
    }
    initRegister(page, id, post);
  }

  function initRegister(page, id, post) {
    const dialog = document.getElementById("register-dialog");
    const opener = document.getElementById("open-register");
    if (!dialog || !opener) { return; }
    const product = document.getElementById("register-product");
    const defectType = document.getElementById("register-defect-type");
    const fileName = document.getElementById("register-file-name");
    const message = document.getElementById("register-message");
    const submit = document.getElementById("register-submit");

    function say(text, isError) {
      message.textContent = text;
      message.className = isError ? "alert" : "notice success";
      message.hidden = false;
    }

    function updatePreview() {
      fileName.textContent = "-";
      if (!product.value || !defectType.value) { return; }
      const url = "/api/v1/inspections/" + id + "/register/preview?product_id=" + product.value +
        "&defect_type_id=" + defectType.value;
      window.DefectLens.api(url).then(function (response) {
        if (response.ok) {
          return response.json().then(function (body) { fileName.textContent = body.file_name; });
        }
        return detailOf(response, page.dataset.msgFailed).then(function (text) { say(text, true); });
      });
    }

    function loadDefectTypes() {
      defectType.innerHTML = "";
      if (!product.value) { updatePreview(); return; }
      window.DefectLens.api("/api/v1/products/" + product.value + "/defect-types").then(function (response) {
        return response.ok ? response.json() : [];
      }).then(function (types) {
        types.forEach(function (type) {
          const option = document.createElement("option");
          option.value = type.id;
          option.textContent = type.name + " (" + type.code + ")";
          if (String(type.id) === defectType.dataset.preferred) { option.selected = true; }
          defectType.appendChild(option);
        });
        updatePreview();
      });
    }

    opener.addEventListener("click", function () {
      message.hidden = true;
      loadDefectTypes();
      dialog.showModal();
    });
    const offer = document.getElementById("outcome-register");
    if (offer) { offer.addEventListener("click", function () { opener.click(); }); }
    if (window.location.hash === "#register" && !opener.disabled) { opener.click(); }
    document.getElementById("register-cancel").addEventListener("click", function () { dialog.close(); });
    product.addEventListener("change", loadDefectTypes);
    defectType.addEventListener("change", updatePreview);
    document.getElementById("register-form").addEventListener("submit", function (event) {
      event.preventDefault();
      if (!product.value || !defectType.value) { say(page.dataset.msgChooseProduct, true); return; }
      submit.disabled = true;
      post("/api/v1/inspections/" + id + "/register", {
        product_id: parseInt(product.value, 10),
        defect_type_id: parseInt(defectType.value, 10),
      }).then(function (response) {
        if (response.status === 201) {
          return response.json().then(function (body) {
            const template = body.is_searchable ? page.dataset.msgRegistered : page.dataset.msgRegisteredPending;
            say(template.replace("{file_name}", body.file_name), false);
            opener.disabled = true;
          });
        }
        submit.disabled = false;
        return detailOf(response, page.dataset.msgFailed).then(function (text) { say(text, true); });
      });
    });
  }

  const uploadForm = document.getElementById("upload-form");
  if (uploadForm) { initUpload(uploadForm); }
  const searchPage = document.getElementById("search-page");
  if (searchPage) { initSearch(searchPage); }
})();
