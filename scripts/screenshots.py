"""Take the README's screenshots from a running service, in Debian's Chromium.

    .venv/bin/python scripts/screenshots.py [--base-url http://127.0.0.1:8080] [--out docs]
"""

from __future__ import annotations

import argparse
import asyncio
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


def main() -> None:
    parser = argparse.ArgumentParser(description="Take the README's screenshots from a running service.")
    parser.add_argument("--base-url", default="http://127.0.0.1:8080")
    parser.add_argument("--out", type=Path, default=Path("docs"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    asyncio.run(simulator(args.base_url.rstrip("/"), args.out))
    print(f"wrote {args.out / 'simulator.png'}")


if __name__ == "__main__":
    main()
