"""Take the README's screenshots from a running service, in Debian's Chromium.

    .venv/bin/python scripts/screenshots.py [--base-url http://127.0.0.1:8080] [--out docs]

The console shot logs in as --staff (password in $SIYU_SCREENSHOT_PASSWORD; create the account with
`siyu staff add`) and needs the console reachable over plain http (SIYU_CONSOLE_SECURE_COOKIES=false).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import urllib.request
from pathlib import Path

from playwright.async_api import async_playwright

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


async def simulator(base_url: str, out: Path) -> None:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = await browser.new_page(viewport={"width": 480, "height": 720}, device_scale_factor=1)
        await page.goto(f"{base_url}/simulator/")
        await page.fill("#user", "screenshot-demo")
        await page.click("#follow")
        await page.wait_for_selector(".row.bot")
        for text in ("你们几点开门？", "官网", "今天天气怎么样"):
            count = await page.locator(".row.bot").count()
            await page.fill("#text", text)
            await page.press("#text", "Enter")
            await page.wait_for_function(f"document.querySelectorAll('.row.bot').length > {count}")
        await page.screenshot(path=str(out / "simulator.png"))
        await browser.close()


def _say(base_url: str, user: str, text: str) -> None:
    request = urllib.request.Request(f"{base_url}/simulator/api/messages", method="POST",
                                     data=json.dumps({"user": user, "text": text}).encode(),
                                     headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request).read()


async def console(base_url: str, out: Path, staff: str, password: str) -> None:
    for user, text in (("陈女士", "转人工"), ("王先生", "我要投诉，快递三天没动了"), ("王先生", "人工客服")):
        _say(base_url, user, text)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = await browser.new_page(viewport={"width": 1280, "height": 720}, device_scale_factor=1)
        await page.goto(f"{base_url}/console/")
        await page.fill("#name", staff)
        await page.fill("#password", password)
        await page.click("button[type=submit]")
        await page.locator("#queue-queued .queue-item").first.click()
        await page.click("#claim")
        await page.wait_for_selector("#composer:not([hidden])")
        await page.fill("#reply-text", "您好，我是客服，很高兴为您服务，请问有什么可以帮您？")
        await page.click("#reply-send")
        await page.wait_for_selector("#transcript .msg.staff")
        await page.fill("#reply-text", "/")
        await page.locator("#reply-text").dispatch_event("input")
        await page.screenshot(path=str(out / "console.png"))
        await browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="Take the README's screenshots from a running service.")
    parser.add_argument("--base-url", default="http://127.0.0.1:8080")
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--staff", help="console account for the console shot (skipped without it)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    asyncio.run(simulator(args.base_url.rstrip("/"), args.out))
    print(f"wrote {args.out / 'simulator.png'}")
    if args.staff:
        asyncio.run(console(args.base_url.rstrip("/"), args.out, args.staff,
                            os.environ.get("SIYU_SCREENSHOT_PASSWORD", "")))
        print(f"wrote {args.out / 'console.png'}")


if __name__ == "__main__":
    main()
