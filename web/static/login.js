// Sign in (sets the session cookie) and residents' own registration.
"use strict";
(() => {
  const { T, api, problemText } = WG;
  const nextPath = new URLSearchParams(location.search).get("next");
  const u = new URLSearchParams(location.search).get("u");
  if (u) document.getElementById("username").value = u;
  document.getElementById("login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const err = document.getElementById("login-error");
    err.textContent = "";
    const form = new URLSearchParams({ username: document.getElementById("username").value,
      password: document.getElementById("password").value });
    try {
      const me = await api("POST", "/v1/console/session", form, { noRedirect: true });
      location.href = nextPath && nextPath.startsWith("/console/") ? nextPath : me.home;
    } catch (e) {
      err.textContent = e.status === 401 ? T("sign_in_failed") : problemText(e);
    }
  });
  document.getElementById("register-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const msg = document.getElementById("register-msg");
    try {
      await api("POST", "/v1/console/residents", {
        username: document.getElementById("reg-username").value,
        password: document.getElementById("reg-password").value }, { noRedirect: true });
      msg.textContent = T("register_done");
      document.getElementById("username").value = document.getElementById("reg-username").value;
    } catch (e) { msg.textContent = problemText(e); }
  });
})();
