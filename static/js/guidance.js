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
  const generatorLabels = {};
  document.querySelectorAll("#gd-generator option").forEach(function (o) { generatorLabels[o.value] = o.textContent; });
  const fill = function (template, values) {
    return template.replace(/\{(\w+)\}/g, function (_, key) { return values[key] == null ? "" : String(values[key]); });
  };

  const unsupportedNotice = document.getElementById("gd-unsupported");
  const manual = document.getElementById("gd-manual");

  // The text as plain and flagged pieces: each unsupported sentence becomes a <mark>.
  function fillMarked(el, text, flagged) {
    el.replaceChildren();
    let rest = text || "";
    while (rest) {
      let start = -1;
      let sentence = "";
      (flagged || []).forEach(function (s) {
        const at = s ? rest.indexOf(s) : -1;
        if (at >= 0 && (start < 0 || at < start || (at === start && s.length > sentence.length))) {
          start = at;
          sentence = s;
        }
      });
      if (start < 0) { el.append(rest); break; }
      if (start > 0) { el.append(rest.slice(0, start)); }
      const mark = document.createElement("mark");
      mark.className = "gd-unsupported";
      mark.title = card.dataset.unsupportedTitle;
      mark.textContent = sentence;
      el.append(mark);
      rest = rest.slice(start + sentence.length);
    }
  }

  function showResult(result) {
    stream.hidden = true;
    const unsupported = result.unsupported || {};
    let flaggedCount = 0;
    card.querySelectorAll("[data-section]").forEach(function (el) {
      const name = el.getAttribute("data-section");
      flaggedCount += (unsupported[name] || []).length;
      fillMarked(el, result.sections[name] || "", unsupported[name]);
    });
    unsupportedNotice.textContent = fill(card.dataset.unsupportedNotice, { count: flaggedCount });
    unsupportedNotice.hidden = flaggedCount === 0;
    card.querySelectorAll("[data-manual-section]").forEach(function (el) {
      el.textContent = result.manual_sections ? (result.manual_sections[el.getAttribute("data-manual-section")] || "") : "";
    });
    manual.hidden = !result.manual_sections;
    citations.replaceChildren();
    (result.citations || []).forEach(function (c) {
      const li = document.createElement("li");
      if (c.ref) {
        const ref = document.createElement("span");
        ref.className = "gd-ref";
        ref.textContent = "[" + fill(card.dataset.sourceTag, { n: c.ref }) + "] ";
        li.append(ref);
      }
      const a = document.createElement("a");
      a.href = c.url;
      a.target = "_blank";
      a.rel = "noopener";
      a.textContent = (c.manual_name || card.dataset.manualName) + " · " + fill(card.dataset.pageLabel, { page: c.page });
      const section = document.createElement("span");
      section.className = "muted";
      section.textContent = " " + (c.section || "");
      li.append(a, section);
      citations.append(li);
    });
    meta.replaceChildren();
    const strong = document.createElement("strong");
    strong.textContent = result.generator_label || result.generator;
    meta.append(card.dataset.generatorLabel + ": ", strong,
      " · " + card.dataset.timeLabel + ": " + fill(card.dataset.msLabel, { ms: result.elapsed_ms }));
    if (result.is_fallback) {
      const reasons = JSON.parse(card.dataset.fallbackReasons || "{}");
      const requested = generatorLabels[result.requested_generator] || result.requested_generator;
      notice.textContent = fill(card.dataset.fallback, { requested: requested, reason: reasons[result.fallback_reason] || result.fallback_reason });
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
