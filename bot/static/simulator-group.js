// Siyu simulator: the group room — members join, leave and speak; the group's log and a member's private chat by polling.
"use strict";
const $ = id => document.getElementById(id);
const members = [];
let speaker = null, cursor = null, polledGroup = null, privateCursor = null, privateUser = null;
const shown = new Set();

function groupName() { return $("group").value.trim() || "门店会员群"; }
function note(text) { const row = document.createElement("div"); row.className = "note"; row.textContent = text; $("log").appendChild(row); $("log").scrollTop = $("log").scrollHeight; }
function bubble(box, who, text, cls, mention) {
  const row = document.createElement("div");
  row.className = "row " + cls;
  const name = document.createElement("div"); name.className = "who"; name.textContent = who;
  const body = document.createElement("div"); body.className = "bubble";
  if (mention && mention.length) { const m = document.createElement("span"); m.className = "mention"; m.textContent = mention.map(n => "@" + n).join(" ") + " "; body.appendChild(m); }
  body.appendChild(document.createTextNode(text));
  row.append(name, body);
  box.appendChild(row);
  box.scrollTop = box.scrollHeight;
}
function renderMembers() {
  $("chips").replaceChildren(...members.map(name => {
    const chip = document.createElement("span");
    chip.className = "chip" + (name === speaker ? " current" : "");
    chip.textContent = name;
    chip.title = "以 " + name + " 的身份发言";
    chip.addEventListener("click", () => choose(name));
    const leave = document.createElement("button"); leave.type = "button"; leave.textContent = "×"; leave.title = name + " 退群";
    leave.addEventListener("click", event => { event.stopPropagation(); leaveGroup(name); });
    chip.appendChild(leave);
    return chip;
  }));
  $("speaker").textContent = speaker ? speaker + "：" : "（未选成员）";
}
function choose(name) { speaker = name; privateUser = null; $("private").replaceChildren(); $("private-title").textContent = "私信 · " + name; renderMembers(); pollPrivate(); }

async function post(body) {
  body.group = groupName();
  try {
    const response = await fetch("api/group", {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
    const data = await response.json();
    if (!response.ok) { note("错误：" + data.error); return null; }
    return data;
  } catch (error) { note("无法连接服务：" + error); return null; }
}
async function joinGroup() {
  const names = $("newcomers").value.split(/[,，\s]+/).map(n => n.trim()).filter(n => n && !members.includes(n));
  if (!names.length) return;
  $("newcomers").value = "";
  if (await post({type: "join", members: names})) { members.push(...names); if (!speaker) choose(names[0]); renderMembers(); pollGroup(); }
}
async function leaveGroup(name) {
  if (await post({type: "leave", members: [name]})) {
    members.splice(members.indexOf(name), 1);
    if (speaker === name) speaker = members[0] || null;
    renderMembers(); pollGroup();
  }
}
$("join").addEventListener("click", joinGroup);
$("newcomers").addEventListener("keydown", event => { if (event.key === "Enter") { event.preventDefault(); joinGroup(); } });
$("send").addEventListener("submit", async event => {
  event.preventDefault();
  const text = $("text").value.trim();
  if (!text) return;
  if (!speaker) { note("先选一位成员（或让成员入群）再发言"); return; }
  $("text").value = "";
  const body = {type: "message", member: speaker, text};
  if ($("mentioned").checked) body.mentioned = true;
  $("mentioned").checked = false;
  if (await post(body)) { pollGroup(); setTimeout(pollPrivate, 300); }
});
$("group").addEventListener("change", () => { cursor = null; shown.clear(); $("log").replaceChildren(); pollGroup(); });

// The group's log (members' messages, the bot's answers, welcomes once they are sent) by polling.
async function pollGroup() {
  const group = groupName();
  if (group !== polledGroup) { polledGroup = group; cursor = null; }
  try {
    const query = "api/group?group=" + encodeURIComponent(group) + (cursor === null ? "" : "&after=" + cursor);
    const response = await fetch(query);
    if (!response.ok) return;
    const data = await response.json();
    for (const e of data.entries) {
      if (shown.has(e.id)) continue;
      shown.add(e.id);
      if (e.kind === "join") note(e.members.join("、") + " 加入了群聊");
      else if (e.kind === "leave") note(e.members.join("、") + " 退出了群聊");
      else if (e.direction === "out") bubble($("log"), "机器人", e.text, "bot", e.members);
      else bubble($("log"), e.member, e.text, e.member === speaker ? "me" : "other");
    }
    cursor = data.last_id;
  } catch (error) { /* try again next round */ }
}
// The selected member's private chat: what the bot sent them alone.
async function pollPrivate() {
  if (!speaker) return;
  const user = speaker;
  if (user !== privateUser) { privateUser = user; privateCursor = null; }
  try {
    const query = "api/messages?user=" + encodeURIComponent(user) + (privateCursor === null ? "" : "&after=" + privateCursor);
    const response = await fetch(query);
    if (!response.ok) return;
    const data = await response.json();
    if (user !== privateUser) return;
    data.messages.forEach(m => bubble($("private"), "机器人 → " + user, m.text, "bot"));
    privateCursor = data.last_id;
  } catch (error) { /* try again next round */ }
}
setInterval(pollGroup, 1500);
setInterval(pollPrivate, 2000);
pollGroup();
