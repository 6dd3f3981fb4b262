"""Headless Chromium (Debian's, through its chromedriver) and `orderflow console` as a process,
for the browser tests. WebDriver calls block, so each runs in a thread: the test's event loop
keeps serving the supervisor of the services meanwhile."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from selenium import webdriver
from selenium.common.exceptions import (
    NoSuchElementException,
    StaleElementReferenceException,
    WebDriverException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

T = TypeVar("T")
ROOT = Path(__file__).parents[2]
CHROMIUM = os.environ.get("ORDERFLOW_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("ORDERFLOW_CHROMEDRIVER", "/usr/bin/chromedriver")


class Browser:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self._profile = tempfile.mkdtemp(prefix="orderflow-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for argument in (
            "--headless=new",
            "--no-sandbox",  # as root
            "--disable-dev-shm-usage",
            "--window-size=1400,1000",
            f"--user-data-dir={self._profile}",
        ):
            options.add_argument(argument)
        self.driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
        self.driver.implicitly_wait(0)

    def close(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self._profile, ignore_errors=True)

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(fn, *args)

    async def open(self, path: str) -> None:
        await self.call(self.driver.get, self.base_url + path)

    async def text(self, css: str) -> str:
        return await self.call(lambda: self.driver.find_element(By.CSS_SELECTOR, css).text)

    async def page(self) -> str:
        return await self.call(lambda: self.driver.find_element(By.TAG_NAME, "body").text)

    async def exists(self, css: str) -> bool:
        return bool(await self.call(self.driver.find_elements, By.CSS_SELECTOR, css))

    async def click(self, css: str) -> None:
        await self.call(lambda: self.driver.find_element(By.CSS_SELECTOR, css).click())

    async def fill(self, css: str, value: str) -> None:
        def typing() -> None:
            element: WebElement = self.driver.find_element(By.CSS_SELECTOR, css)
            element.clear()
            element.send_keys(value)

        await self.call(typing)

    async def until(self, check: Callable[[], Any], timeout: float, what: str) -> Any:
        """Poll ``check`` (run in the browser's thread) until it returns something true."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                found = await self.call(check)
            except (NoSuchElementException, StaleElementReferenceException):
                found = None
            except WebDriverException as exc:  # a node of the page that was just left
                if "does not belong to the document" not in str(exc):
                    raise
                found = None
            if found:
                return found
            if time.monotonic() > deadline:
                body = await self.page()
                raise AssertionError(
                    f"not seen within {timeout} s: {what}\n--- page ---\n{body[:3000]}"
                )
            await asyncio.sleep(0.2)

    def exists_now(self, css: str) -> bool:
        """For checks run by :meth:`until` (in the browser's thread)."""
        return bool(self.driver.find_elements(By.CSS_SELECTOR, css))

    def find(self, css: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    async def screenshot(self, name: str) -> None:
        """Into $ORDERFLOW_SCREENSHOTS (docs/console/ is made this way), when set."""
        folder = os.environ.get("ORDERFLOW_SCREENSHOTS")
        if folder:

            def save() -> None:
                Path(folder).mkdir(parents=True, exist_ok=True)
                self.driver.save_screenshot(str(Path(folder) / f"{name}.png"))

            await self.call(save)

    async def log_in(self, user: str, password: str) -> None:
        await self.open("/login")
        await self.fill("#user", user)
        await self.fill("#password", password)
        await self.click("#login")
        await self.until(lambda: user in self.find("#who").text, 10, f"{user} logged in")

    async def log_out(self) -> None:
        await self.open("/")
        await self.click("header form button")
        await self.until(lambda: "visitor" in self.find("#who").text, 10, "logged out")


@asynccontextmanager
async def browser(base_url: str) -> AsyncIterator[Browser]:
    b = await asyncio.to_thread(Browser, base_url)
    try:
        yield b
    finally:
        await asyncio.to_thread(b.close)


@asynccontextmanager
async def console_process(env: dict[str, str], refresh: float = 1.0) -> AsyncIterator[str]:
    """`orderflow console` on a free port, as a user starts it; its base URL."""
    folder = Path(tempfile.mkdtemp(prefix="orderflow-console-"))
    port_file = folder / "port"
    output = (folder / "console.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "orderflow.cli",
        "console",
        "--port",
        "0",
        env={
            **os.environ,
            **env,
            "ORDERFLOW_CONSOLE_PORT_FILE": str(port_file),
            "ORDERFLOW_CONSOLE_REFRESH": str(refresh),
        },
        cwd=ROOT,
        stdout=output,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        for _ in range(200):
            if port_file.is_file() and port_file.read_text().strip():
                break
            if process.returncode is not None:
                said = (folder / "console.log").read_text()[-2000:]
                raise AssertionError(f"the console exited: {said}")
            await asyncio.sleep(0.05)
        yield f"http://127.0.0.1:{int(port_file.read_text())}"
    finally:
        if process.returncode is None:
            process.terminate()
            await asyncio.wait_for(process.wait(), 10)
        output.close()
        shutil.rmtree(folder, ignore_errors=True)
