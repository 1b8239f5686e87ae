"""The whole takeover in Debian's Chromium: WeChat XML in, the live queue, a reply out, hand back."""

from __future__ import annotations

import os

import pytest

from tests.console.support import PASSWORD, create_staff
from tests.console.test_console_http import OPEN, Clock
from tests.support.wechat import text_xml

CHROMIUM = os.environ.get("SIYU_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
HOURS_REPLY = "亲，我们的门店营业时间是每天 10:00–22:00，线上客服 9:00–21:00。"

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM) and not os.environ.get("CI"),
                                reason=f"Chromium not found at {CHROMIUM} (.ci/run installs it)")


async def test_staff_take_over_a_chat_answer_it_and_hand_it_back(console, fake_api, sqlite_url):
    from playwright.async_api import async_playwright, expect

    app = await console(clock=Clock(OPEN))
    await create_staff(sqlite_url, "lin")
    base = str(app.client.make_url("/console/"))
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 800})
            await page.goto(base)
            await page.fill("#name", "lin")
            await page.fill("#password", PASSWORD)
            await page.click("button[type=submit]")
            await expect(page.locator("#live")).to_have_text("实时", timeout=5000)

            # The customer asks for a person; the chat shows up without a reload.
            reply = await app.server.say("o-alice", "转人工")
            assert reply is not None and "人工客服" in reply["Content"]
            item = page.locator("#queue-queued .queue-item")
            await expect(item).to_have_count(1, timeout=2000)
            await expect(item).to_contain_text("转人工")

            await item.click()
            await page.click("#claim")
            await expect(page.locator("#queue-mine .queue-item")).to_have_count(1)
            await page.fill("#reply-text", "您好，我是客服小林，请问有什么可以帮您？")
            await page.click("#reply-send")
            sent = await fake_api.wait_for_sent(1)
            assert sent[-1]["touser"] == "o-alice"
            assert sent[-1]["text"]["content"] == "您好，我是客服小林，请问有什么可以帮您？"

            # The customer's next message appears live, and the bot keeps quiet.
            status, body = await app.server.post(text_xml("o-alice", "我的快递三天没动了"))
            assert status == 200 and body in ("", "success")
            await expect(page.locator("#transcript .msg.in .bubble").last).to_have_text(
                "我的快递三天没动了", timeout=2000)

            # Canned replies by short code.
            await page.fill("#reply-text", "/wai")
            await page.locator("#reply-text").dispatch_event("input")
            await page.keyboard.press("Enter")
            await expect(page.locator("#reply-text")).to_have_value("好的，我这边帮您查询一下，请稍等片刻～")

            await page.click("#hand-back")
            await expect(page.locator("#queue-mine .queue-item")).to_have_count(0)
        finally:
            await browser.close()

    reply = await app.server.say("o-alice", "你们几点开门？")
    assert reply is not None and reply["Content"] == HOURS_REPLY


async def test_operators_see_each_groups_figures_and_recent_messages(console, sqlite_url):
    from playwright.async_api import async_playwright, expect

    app = await console(clock=Clock(OPEN))
    for body in ({"type": "join", "members": ["amy", "ben"]}, {"member": "amy", "text": "大家好"},
                 {"member": "ben", "text": "@思语 几点开门"}):
        response = await app.client.post("/simulator/api/group", json={"group": "门店会员群", **body})
        assert response.status == 200
    await create_staff(sqlite_url, "ops", "operator")
    base = str(app.client.make_url("/console/"))
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 800})
            await page.goto(base)
            await page.fill("#name", "ops")
            await page.fill("#password", PASSWORD)
            await page.click("button[type=submit]")
            await page.click("#groups-link")
            row = page.locator("#groups tbody tr")
            await expect(row).to_have_count(1, timeout=5000)
            # name, members, today's joins, leaves, messages, speakers, answers
            cells = row.locator("td")
            await expect(cells.nth(0)).to_have_text("门店会员群")
            await expect(cells.nth(1)).to_have_text("2")
            await expect(cells.nth(4)).to_have_text("2")
            await expect(cells.nth(6)).to_have_text("1")
            await row.click()
            await expect(page.locator("#detail-title")).to_have_text("门店会员群（2 人）")
            await expect(page.locator("#log")).to_contain_text("@思语 几点开门")
            await expect(page.locator("#log .entry.bot").last).to_contain_text("营业时间")
        finally:
            await browser.close()
