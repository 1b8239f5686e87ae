// Siyu console: customer groups — the list with today's and the week's figures, one group's days and log.
"use strict";
const $ = id => document.getElementById(id);
const KINDS = {join: "入群", leave: "退群", welcome: "入群欢迎", note: "私信提示", answer: "回答"};
let current = null;

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props || {});
  for (const child of children) if (child != null) node.append(child);
  return node;
}
function time(iso) {
  const d = new Date(iso);
  return `${d.getMonth() + 1}月${d.getDate()}日 ${d.toLocaleTimeString("zh-CN", {hour: "2-digit", minute: "2-digit"})}`;
}
async function api(path) {
  const response = await fetch(path, {credentials: "same-origin"});
  if (response.status === 401) { location.href = "login"; throw new Error("请先登录"); }
  return {ok: response.ok, data: await response.json().catch(() => ({}))};
}
function cells(values) { return values.map(value => el("td", {textContent: String(value)})); }

async function refreshList() {
  const {ok, data} = await api("api/groups");
  if (!ok) return;
  $("period").textContent = `今日 ${data.today}，近 7 日自 ${data.since}`;
  $("no-groups").hidden = data.groups.length > 0;
  const busiest = Math.max(1, ...data.groups.map(g => g.today.messages));
  $("groups").querySelector("tbody").replaceChildren(...data.groups.map(g => {
    const bar = el("span", {className: "bar"});
    bar.style.width = `${Math.round(40 * g.today.messages / busiest)}px`;
    const messages = el("td", {}, bar, String(g.today.messages));
    const row = el("tr", {className: g.id === current ? "current" : "", tabIndex: 0},
      el("td", {textContent: g.name}), el("td", {textContent: String(g.members)}),
      ...cells([g.today.joins, g.today.leaves]), messages,
      ...cells([g.today.speakers, g.today.answers, g.period.messages, g.period.answers]));
    row.dataset.id = g.id;
    row.addEventListener("click", () => openGroup(g.id));
    row.addEventListener("keydown", event => { if (event.key === "Enter") openGroup(g.id); });
    return row;
  }));
}

function entry(e) {
  if (e.kind === "join" || e.kind === "leave") {
    return el("div", {className: "entry event", textContent: `${e.members.join("、")} ${KINDS[e.kind]} · ${time(e.at)}`});
  }
  const bot = e.direction === "out";
  const who = bot ? `机器人${e.members.length ? " @" + e.members.join(" @") : ""}` : (e.name || e.member);
  const node = el("div", {className: "entry" + (bot ? " bot" : "")}, el("span", {className: "who", textContent: who}),
    el("span", {textContent: e.text || (e.kind === "welcome" ? "（待发送）" : "")}));
  if (bot && KINDS[e.kind]) node.append(el("span", {className: "tag", textContent: KINDS[e.kind]}));
  if (e.addressed) node.append(el("span", {className: "tag", textContent: "@机器人"}));
  const meta = el("div", {className: "meta", textContent: time(e.at)});
  if (e.delivery === "failed") meta.append(el("span", {className: "failed", textContent: ` 发送失败：${e.reason || ""}`}));
  node.append(meta);
  return node;
}

async function openGroup(id) {
  current = id;
  document.querySelectorAll("#groups tbody tr").forEach(row => row.classList.toggle("current", Number(row.dataset.id) === id));
  const {ok, data} = await api(`api/groups/${id}`);
  if (!ok) { $("detail-title").textContent = data.error || "加载失败"; return; }
  $("detail-title").textContent = `${data.group.name}（${data.group.members} 人）`;
  $("days").hidden = false;
  $("days").querySelector("tbody").replaceChildren(...data.days.slice().reverse().map(d =>
    el("tr", {}, ...cells([d.day, d.members, d.joins, d.leaves, d.messages, d.speakers, d.answers]))));
  $("log").replaceChildren(...(data.log.length ? data.log.map(entry) : [el("p", {className: "empty", textContent: "暂无消息"})]));
}

refreshList();
setInterval(() => { refreshList(); if (current !== null) openGroup(current); }, 5000);
