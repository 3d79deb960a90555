// Change the signed-in user's password.
"use strict";
(() => {
  const { T, api, problemText } = WG;
  document.getElementById("password-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const msg = document.getElementById("password-msg");
    try {
      await api("POST", "/v1/console/password", {
        old_password: document.getElementById("old-password").value,
        new_password: document.getElementById("new-password").value });
      msg.textContent = T("password_changed");
      ev.target.reset();
    } catch (e) { msg.textContent = problemText(e); }
  });
})();
