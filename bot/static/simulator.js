// The simulator's web chat (served with a script-src 'self' policy: no inline script).
const log = document.getElementById("log");
function show(text, who) {
  const row = document.createElement("div");
  row.className = "row " + who;
  const bubble = document.createElement("div");
  bubble.className = who === "note" ? "note" : "bubble";
  bubble.textContent = text;
  row.appendChild(bubble);
  log.appendChild(row);
  log.scrollTop = log.scrollHeight;
}
async function post(body) {
  body.user = document.getElementById("user").value.trim() || "demo-user";
  try {
    const response = await fetch("api/messages", {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
    const data = await response.json();
    if (!response.ok) { show("错误：" + data.error, "note"); return; }  // 401: log in to the console first
    data.replies.forEach(reply => show(reply, "bot"));
  } catch (error) { show("无法连接服务：" + error, "note"); }
}
document.getElementById("send").addEventListener("submit", event => {
  event.preventDefault();
  const input = document.getElementById("text");
  const text = input.value.trim();
  if (!text) return;
  show(text, "me");
  input.value = "";
  post({text});
});
document.getElementById("follow").addEventListener("click", () => { show("（关注了公众号）", "note"); post({event: "subscribe"}); });

// Messages pushed later (staff replies, flow touches, wait notices) arrive by polling.
let cursor = null, polledUser = null;
async function poll() {
  const user = document.getElementById("user").value.trim() || "demo-user";
  if (user !== polledUser) { polledUser = user; cursor = null; }
  try {
    const query = "api/messages?user=" + encodeURIComponent(user) + (cursor === null ? "" : "&after=" + cursor);
    const response = await fetch(query);
    if (response.ok) {
      const data = await response.json();
      if (cursor !== null) data.messages.forEach(message => show(message.text, "bot"));
      cursor = data.last_id;
    }
  } catch (error) { /* the service restarts or the network blips: try again next round */ }
  setTimeout(poll, 2000);
}
poll();
