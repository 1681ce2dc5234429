// Guidance page: stream the answer as it is written (server-sent events over fetch), then show the
// four sections and the citations. All text goes in through textContent: the answer is never HTML.
(function () {
  "use strict";
  const card = document.getElementById("gd-answer");
  if (!card) { return; }
  const form = document.getElementById("gd-generate");
  const stream = document.getElementById("gd-stream");
  const meta = document.getElementById("gd-meta");
  const notice = document.getElementById("gd-notice");
  const citations = document.getElementById("gd-citations");
  const fill = function (template, values) {
    return template.replace(/\{(\w+)\}/g, function (_, key) { return values[key] == null ? "" : String(values[key]); });
  };

  function showResult(result) {
    stream.hidden = true;
    card.querySelectorAll("[data-section]").forEach(function (el) {
      el.textContent = result.sections[el.getAttribute("data-section")] || "";
    });
    citations.replaceChildren();
    (result.citations || []).forEach(function (c) {
      const li = document.createElement("li");
      const a = document.createElement("a");
      a.href = c.url;
      a.target = "_blank";
      a.rel = "noopener";
      a.textContent = (c.manual_name || "#" + c.manual_id) + " · " + fill(card.dataset.pageLabel, { page: c.page });
      const section = document.createElement("span");
      section.className = "muted";
      section.textContent = " " + (c.section || "");
      li.append(a, section);
      citations.append(li);
    });
    meta.replaceChildren();
    const strong = document.createElement("strong");
    strong.textContent = result.generator;
    meta.append(card.dataset.generatorLabel + ": ", strong,
      " · " + card.dataset.timeLabel + ": " + fill(card.dataset.msLabel, { ms: result.elapsed_ms }));
    if (result.is_fallback) {
      notice.textContent = fill(card.dataset.fallback, { requested: result.requested_generator, reason: result.fallback_reason });
      notice.hidden = false;
    } else if (!result.has_manual) {
      notice.textContent = card.dataset.noManual;
      notice.hidden = false;
    } else {
      notice.hidden = true;
    }
    card.setAttribute("data-state", "done");
  }

  function handleEvent(name, data) {
    if (name === "delta") {
      stream.hidden = false;
      stream.textContent += data.text;
    } else if (name === "result") {
      showResult(data);
    } else if (name === "error") {
      notice.textContent = card.dataset.failed + ": " + data.detail;
      notice.hidden = false;
      card.setAttribute("data-state", "error");
    }
  }

  async function generate() {
    const generator = document.getElementById("gd-generator").value;
    const button = form.querySelector("button");
    button.disabled = true;
    card.setAttribute("data-state", "writing");
    stream.textContent = "";
    stream.hidden = true;
    meta.textContent = card.dataset.writing;
    try {
      const response = await window.DefectLens.api("/api/v1/inspections/" + card.dataset.inspectionId + "/guidance/stream", {
        method: "POST",
        headers: { "Content-Type": "application/json", "Accept": "text/event-stream" },
        body: JSON.stringify({ generator: generator || null }),
      });
      if (!response.ok) {
        const body = await response.json().catch(function () { return {}; });
        handleEvent("error", { detail: body.detail || response.statusText });
        return;
      }
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) { break; }
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          let name = "message";
          let data = "";
          block.split("\n").forEach(function (line) {
            if (line.startsWith("event: ")) { name = line.slice(7); }
            else if (line.startsWith("data: ")) { data += line.slice(6); }
          });
          if (data) { handleEvent(name, JSON.parse(data)); }
        }
      }
    } catch (err) {
      handleEvent("error", { detail: String(err) });
    } finally {
      button.disabled = false;
    }
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    generate();
  });
  if (card.dataset.autoStart === "true") { generate(); }
})();
