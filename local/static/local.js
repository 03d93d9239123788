// The /local page's one script: follow changes with a long poll and swap in the fragments the
// server rendered (and escaped); send clicks, modal submits and closes, and slash commands to
// /local/act. Text from the server's JSON answers is only ever set with textContent.
"use strict";

(function () {
  const body = document.body;
  const state = { as: body.dataset.as, channel: body.dataset.channel, version: Number(body.dataset.version) };

  function fragmentNodes(html) {
    // DOMParser runs no script and loads nothing; the HTML was rendered and escaped by the server.
    return new DOMParser().parseFromString(html, "text/html").body.childNodes;
  }

  function swap(element, html) {
    element.replaceChildren(...fragmentNodes(html));
  }

  function apply(view) {
    state.version = view.version;
    swap(document.getElementById("sidebar"), view.sidebar);
    const messages = document.getElementById("messages");
    const atBottom = messages.scrollHeight - messages.scrollTop - messages.clientHeight < 40;
    const open = new Set([...messages.querySelectorAll("details[open]")].map((d) => d.dataset.thread));
    swap(messages, view.messages);
    for (const details of messages.querySelectorAll("details[data-thread]")) {
      if (open.has(details.dataset.thread)) details.open = true;
    }
    if (atBottom) messages.scrollTop = messages.scrollHeight;
    const modal = document.getElementById("modal");
    if (modal.dataset.key !== view.modal_key) {  // the same view stays: what is typed in it stays too
      modal.dataset.key = view.modal_key;
      swap(modal, view.modal);
    }
  }

  function viewUrl(after) {
    const query = new URLSearchParams({ as: state.as, c: state.channel || "" });
    if (after !== undefined) query.set("after", String(after));
    return "/local/view?" + query.toString();
  }

  async function refresh() {
    const response = await fetch(viewUrl());
    if (response.ok) apply(await response.json());
  }

  async function follow() {
    for (;;) {
      try {
        const response = await fetch(viewUrl(state.version));
        if (!response.ok) throw new Error(String(response.status));
        apply(await response.json());
      } catch (error) {
        await new Promise((resolve) => setTimeout(resolve, 2000));
      }
    }
  }

  function notice(text, isError) {
    const line = document.getElementById("notice");
    line.textContent = text;
    line.classList.toggle("error", Boolean(isError));
    line.hidden = !text;
  }

  async function post(url, payload) {
    let response;
    try {
      response = await fetch(url, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(payload),
      });
    } catch (error) {
      notice("The server did not answer: " + error.message, true);
      return null;
    }
    let answer = {};
    try {
      answer = await response.json();
    } catch (error) {
      answer = { ok: false, error: "The server answered " + response.status };
    }
    if (answer.error) notice(answer.error, true);
    else if (answer.message) notice(answer.message, false);
    else notice("", false);
    return answer;
  }

  async function act(payload) {
    const answer = await post("/local/act", Object.assign({ user: state.as }, payload));
    refresh();
    return answer;
  }

  function messageOf(element) {
    const message = element.closest(".message");
    return {
      channel: message.dataset.channel,
      ts: message.dataset.ts,
      ephemeral: message.dataset.ephemeral === "true",
    };
  }

  document.addEventListener("click", (event) => {
    const button = event.target.closest(".message button[data-action]");
    if (!button) return;
    button.disabled = true;
    const where = messageOf(button);
    act(Object.assign(where, { kind: "click", block_id: button.dataset.block, action_id: button.dataset.action }));
  });

  document.addEventListener("change", (event) => {
    const select = event.target.closest(".message select[data-action]");
    if (!select) return;
    const where = messageOf(select);
    act(Object.assign(where, {
      kind: "click", block_id: select.dataset.block, action_id: select.dataset.action, value: select.value,
    }));
  });

  function inputValue(block) {
    const type = block.dataset.type;
    if (type === "checkboxes") {
      return [...block.querySelectorAll("input:checked")].map((input) => input.value);
    }
    if (type === "radio_buttons") {
      const checked = block.querySelector("input:checked");
      return checked ? checked.value : null;
    }
    const field = block.querySelector(".field");
    return field ? field.value : null;
  }

  function showErrors(form, errors) {
    for (const slot of form.querySelectorAll(".field-error")) {
      const text = errors[slot.dataset.errorFor];
      slot.textContent = typeof text === "string" ? text : "";
      slot.hidden = !slot.textContent;
    }
    const unplaced = Object.keys(errors).filter((id) => !form.querySelector(`.field-error[data-error-for="${CSS.escape(id)}"]`));
    const general = form.querySelector(".modal-error");
    general.textContent = unplaced.map((id) => String(errors[id])).join(" ");
    general.hidden = !general.textContent;
  }

  document.addEventListener("submit", async (event) => {
    const form = event.target;
    if (form.matches(".modal")) {
      event.preventDefault();
      const values = {};
      for (const block of form.querySelectorAll(".input-block")) {
        values[block.dataset.block] = values[block.dataset.block] || {};
        values[block.dataset.block][block.dataset.action] = inputValue(block);
      }
      const answer = await act({ kind: "submit", view_id: form.dataset.view, values: values });
      if (answer && answer.errors) showErrors(form, answer.errors);
    } else if (form.id === "command") {
      event.preventDefault();
      const input = document.getElementById("command-text");
      if (!input.value.trim()) return;
      const answer = await act({ kind: "command", channel: state.channel, text: input.value });
      if (answer && answer.ok) input.value = "";
    }
  });

  document.addEventListener("click", (event) => {
    const close = event.target.closest("[data-modal='close']");
    if (!close) return;
    const form = close.closest(".modal");
    act({ kind: "close", view_id: form.dataset.view });
  });

  const picker = document.getElementById("as");
  picker.addEventListener("change", () => picker.form.submit());

  const demo = document.getElementById("demo");
  if (demo) demo.addEventListener("click", () => post("/local/demo", {}));

  const messages = document.getElementById("messages");
  messages.scrollTop = messages.scrollHeight;
  follow();
})();
