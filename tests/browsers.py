"""Debian's Chromium for the page tests (Playwright, headless, offline): its launch
arguments, the console's test accounts and one person's browser context that records console
errors and every request (a request leaving localhost fails the test). The ``browser`` fixture
is in conftest.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from geo.auth.service import AuthSettings

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROME_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--no-first-run", "--disable-sync"]
AUTH = AuthSettings(jwt_secret="console-test-" + "z" * 32, enforce_access=True)
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 820}
PASSWORD = "console-password"


def is_local(url: str) -> bool:
    """Whether a page's request stays on this machine (or is inline data, or a local file)."""
    u = urlparse(url)
    return u.scheme in ("file", "data", "about", "blob") or u.hostname in (
        "127.0.0.1", "localhost", "::1")


class Person:
    """One person's browser context: records console errors and every request's URL."""

    def __init__(self, browser: Any, site: Any, user: str | None, viewport: dict) -> None:
        self.site, self.user = site, user
        self.ctx = browser.new_context(viewport=viewport, locale="zh-CN",
                                       timezone_id="Asia/Shanghai")
        self.page = self.ctx.new_page()
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))

    def sign_in(self) -> None:
        self.page.goto(f"{self.site.base}/console/login")
        self.page.get_by_label("用户名").first.fill(self.user or "")
        self.page.get_by_label("密码", exact=True).first.fill(PASSWORD)
        self.page.get_by_role("button", name="登录").click()
        self.page.wait_for_url("**/console/*")
        self.ready()

    def ready(self) -> None:
        try:
            self.page.wait_for_selector("body[data-ready='1']", timeout=20_000)
        except Exception as exc:
            raise AssertionError(f"{self.page.url} not ready: {self.errors}") from exc

    def shot(self, name: str) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"console-{name}.png"), full_page=True)

    def check(self, allowed_errors: tuple[str, ...] = ()) -> None:
        errors = [e for e in self.errors if not any(a in e for a in allowed_errors)]
        outside = [u for u in self.requests if not is_local(u)]
        assert outside == [], outside
        assert errors == [], errors

    def close(self) -> None:
        self.ctx.close()
