// Siyu staff console: live queue over server-sent events, chat view, reply, hand back, close.
"use strict";
const $ = id => document.getElementById(id);
const STATES = {bot: "机器人", queued: "排队中", staff: "客服接待中", closed: "已结束"};
const REASONS = {customer_request: "客户要求转人工", complaint: "投诉", not_understood: "多次未识别",
                 low_score: "满意度低分", vip: "VIP 客户"};
const STAGES = {contact: "接触", interest: "兴趣", purchase: "购买", use: "使用", loyalty: "忠诚",
                at_risk: "流失预警", churned: "流失"};
let me = null, current = null, canned = [], chatData = null, pending = null, cannedIndex = 0;

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props || {});
  for (const child of children) if (child != null) node.append(child);
  return node;
}
function time(iso) {
  if (!iso) return "";
  const d = new Date(iso), now = new Date();
  const hm = d.toLocaleTimeString("zh-CN", {hour: "2-digit", minute: "2-digit"});
  return d.toDateString() === now.toDateString() ? hm : `${d.getMonth() + 1}月${d.getDate()}日 ${hm}`;
}
function waited(iso) {
  if (!iso) return "";
  const minutes = Math.max(0, Math.round((Date.now() - new Date(iso)) / 60000));
  return minutes < 1 ? "刚刚" : `已等 ${minutes} 分钟`;
}
function deliveryError(error) {
  if (!error) return "";
  if (error.includes("45015") || error.startsWith("window_closed")) return "发送失败：客户超过 48 小时未互动或已取消关注，微信不允许再发客服消息。";
  if (error.includes("45047") || error.startsWith("window_quota_used")) return "发送失败：本次互动窗口内的客服消息条数已用完，请等客户再次发言。";
  return "发送失败：" + error;
}
function notice(text, ok) {
  const box = $("notice");
  box.textContent = text || "";
  box.className = ok ? "ok" : "";
  box.style.display = text ? "block" : "none";
}

async function api(path, options = {}) {
  const init = {credentials: "same-origin", ...options, headers: {...(options.headers || {})}};
  if (init.method && init.method !== "GET") {
    init.headers["X-CSRF-Token"] = me ? me.csrf : "";
    init.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(path, init);
  if (response.status === 401) { location.href = "login"; throw new Error("请先登录"); }
  const data = await response.json().catch(() => ({}));
  return {ok: response.ok, status: response.status, data};
}

function queueItem(item) {
  const tag = item.state === "staff"
    ? el("span", {className: "tag staff", textContent: item.assigned_staff || "客服"})
    : el("span", {className: "tag", textContent: REASONS[item.reason] || "转人工"});
  const node = el("div", {className: "queue-item" + (item.id === current ? " current" : ""), tabIndex: 0},
    el("div", {className: "who"}, el("span", {textContent: item.customer}), tag),
    el("div", {className: "last", textContent: item.last_text || "（无文字消息）"}),
    el("div", {className: "meta", textContent: item.state === "queued" ? waited(item.queued_at) : `接入于 ${time(item.claimed_at)}`}));
  node.dataset.id = item.id;
  node.addEventListener("click", () => openChat(item.id));
  node.addEventListener("keydown", event => { if (event.key === "Enter") openChat(item.id); });
  return node;
}
function fill(id, items, emptyText) {
  const box = $(id);
  box.replaceChildren(...(items.length ? items.map(queueItem) : [el("div", {className: "empty", textContent: emptyText})]));
}
async function refreshQueue() {
  const {ok, data} = await api("api/queue");
  if (!ok) return;
  fill("queue-queued", data.queued, "没有排队的会话");
  fill("queue-mine", data.mine, "暂无");
  $("count-queued").textContent = data.queued.length ? `(${data.queued.length})` : "";
  if (me && me.sees_all) { $("others-block").hidden = false; fill("queue-others", data.others, "暂无"); }
  document.title = data.queued.length ? `(${data.queued.length}) Siyu 客服工作台` : "Siyu 客服工作台";
}

function renderTranscript(data) {
  const box = $("transcript");
  const nearBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 60;
  const rows = data.messages.map(m => {
    const staff = m.source === "staff";
    const who = m.direction === "in" ? data.profile.name : staff ? (m.staff || "客服") : "机器人";
    const node = el("div", {className: `msg ${m.direction}${staff ? " staff" : ""}${m.delivery === "failed" ? " failed" : ""}`},
      el("div", {className: "bubble", textContent: m.text}),
      el("div", {className: "meta", textContent: `${who} · ${time(m.at)}`}),
      m.delivery === "failed" ? el("div", {className: "error", textContent: deliveryError(m.error)}) : null);
    node.dataset.id = m.id;
    return node;
  });
  box.replaceChildren(...rows);
  if (nearBottom || pending === "scroll") box.scrollTop = box.scrollHeight;
}
function renderProfile(p, c) {
  const rows = [["阶段", STAGES[p.stage] || p.stage], ["标签", p.tags.join("、") || "无"], ["积分", p.points],
                ["订单数", p.orders_count], ["累计消费", "¥" + p.lifetime_spend], ["来源", p.source || "—"],
                ["渠道", p.channel], ["首次接触", time(p.since)], ["转人工原因", REASONS[c.reason] || c.reason || "—"]];
  const list = (title, items, line) => [el("h3", {textContent: title}),
    items.length ? el("ul", {}, ...items.map(i => el("li", {textContent: line(i)}))) : el("div", {className: "empty", textContent: "无"})];
  $("profile").replaceChildren(
    el("h2", {textContent: p.name}),
    el("dl", {}, ...rows.flatMap(([k, v]) => [el("dt", {textContent: k}), el("dd", {textContent: String(v)})])),
    ...list("最近订单", p.orders, o => `${o.order_id} · ¥${o.amount} · ${o.status} · ${time(o.paid_at)}`),
    ...list("积分变动", p.points_changes, x => `${x.delta > 0 ? "+" : ""}${x.delta} ${x.reason || ""} · ${time(x.at)}`),
    ...list("问卷回答", p.surveys, s => `${s.question}: ${s.score ?? ""} ${s.text || ""}`.trim()));
}
function renderChat(data) {
  chatData = data;
  const c = data.conversation;
  const mine = c.state === "staff" && me && c.assigned_staff_id === me.id;
  $("chat-title").textContent = data.profile.name;
  $("chat-state").textContent = STATES[c.state] + (c.assigned_staff ? ` · ${c.assigned_staff}` : "");
  $("claim").hidden = c.state !== "queued";
  $("hand-back").hidden = !(c.state === "staff" && (mine || me.sees_all));
  $("close").hidden = !((c.state === "staff" && (mine || me.sees_all)) || c.state === "queued");
  $("composer").hidden = !mine;
  renderTranscript(data);
  renderProfile(data.profile, c);
}
async function openChat(id) {
  if (current !== id) { notice(""); pending = "scroll"; }
  current = id;
  document.body.classList.add("chat-open");
  for (const node of document.querySelectorAll(".queue-item")) node.classList.toggle("current", Number(node.dataset.id) === id);
  const {ok, data} = await api(`api/conversations/${id}`);
  if (current !== id) return;
  if (!ok) { notice(data.error || "无法打开会话"); return; }
  renderChat(data);
  pending = null;
}
async function act(path, done) {
  if (!current) return;
  const {ok, data} = await api(`api/conversations/${current}/${path}`, {method: "POST", body: "{}"});
  notice(ok ? done : data.error, ok);
  await Promise.all([refreshQueue(), openChat(current)]);
}

async function sendReply(event) {
  event.preventDefault();
  const input = $("reply-text"), text = input.value.trim();
  if (!text || !current) return;
  $("reply-send").disabled = true;
  try {
    const {ok, data} = await api(`api/conversations/${current}/reply`, {method: "POST", body: JSON.stringify({text})});
    if (data.message) input.value = "";
    notice(ok ? "" : (data.error && data.message ? deliveryError(data.error) : data.error));
    pending = "scroll";
    await openChat(current);
  } finally { $("reply-send").disabled = false; input.focus(); }
}

function showCanned() {
  const input = $("reply-text"), list = $("canned-list");
  const m = /^\/(\S*)$/.exec(input.value);
  if (!m) { list.hidden = true; return; }
  const q = m[1].toLowerCase();
  const found = canned.filter(c => c.code.toLowerCase().startsWith(q) || c.title.toLowerCase().includes(q) || c.text.includes(q));
  cannedIndex = 0;
  list.replaceChildren(...found.map((c, i) => {
    const node = el("div", {className: i === 0 ? "active" : ""}, el("b", {textContent: "/" + c.code}), c.title || c.text.slice(0, 30));
    node.addEventListener("mousedown", e => { e.preventDefault(); pickCanned(c); });
    node.dataset.code = c.code;
    return node;
  }));
  list.hidden = !found.length;
}
function pickCanned(c) { $("reply-text").value = c.text.replaceAll("{staff}", me ? me.name : ""); $("canned-list").hidden = true; $("reply-text").focus(); }

function listen() {
  const source = new EventSource("api/events");
  source.addEventListener("changed", () => {
    $("live").textContent = "实时"; $("live").className = "live";
    refreshQueue();
    if (current) openChat(current);
  });
  source.onerror = () => { $("live").textContent = "重新连接中…"; $("live").className = "live off"; };
}

async function start() {
  const who = await api("api/me");
  me = who.data;
  $("groups-link").hidden = !me.sees_all;
  $("whoami").textContent = `${me.name}（${{staff: "客服", operator: "运营", admin: "管理员"}[me.role] || me.role}）`;
  canned = (await api("api/canned")).data.canned || [];
  $("claim").addEventListener("click", () => act("claim", "已接入，可以直接回复客户"));
  $("hand-back").addEventListener("click", () => act("hand-back", "已交还机器人"));
  $("close").addEventListener("click", () => { if (confirm("确定结束这个会话吗？")) act("close", "会话已结束"); });
  $("reply-form").addEventListener("submit", sendReply);
  $("reply-text").addEventListener("input", showCanned);
  $("reply-text").addEventListener("keydown", event => {
    const list = $("canned-list"), items = [...list.children];
    if (!list.hidden && items.length && (event.key === "ArrowDown" || event.key === "ArrowUp")) {
      event.preventDefault();
      cannedIndex = (cannedIndex + (event.key === "ArrowDown" ? 1 : items.length - 1)) % items.length;
      items.forEach((n, i) => n.classList.toggle("active", i === cannedIndex));
    } else if (!list.hidden && items.length && (event.key === "Enter" || event.key === "Tab")) {
      event.preventDefault();
      pickCanned(canned.find(c => c.code === items[cannedIndex].dataset.code));
    } else if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      sendReply(event);
    }
  });
  $("back").addEventListener("click", () => { document.body.classList.remove("chat-open"); current = null; refreshQueue(); });
  $("logout").addEventListener("click", async () => { await api("logout", {method: "POST", body: "{}"}); location.href = "login"; });
  await refreshQueue();
  const id = Number(location.hash.slice(1));
  if (id) openChat(id);
  listen();
  setInterval(refreshQueue, 30000);  // keeps the "waited" minutes fresh
}
start();
