"""The single HTML page of the A/B study (inline CSS/JS: nothing is fetched from outside).

Vote buttons unlock only once both videos have actually played (a `timeupdate` past 0 on
each side), so a vote is never cast on a video that did not load.
"""

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Which video is better?</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:70em}
.pair{display:flex;gap:2em;margin:1em 0}
.side{flex:1;text-align:center}
video{width:100%;max-width:28em;image-rendering:pixelated;background:#000}
button{font-size:1.1em;padding:.6em 1.4em;margin:.3em}
button:disabled{opacity:.4}
#status{color:#555}
</style></head>
<body>
<h1>Which video is better?</h1>
<p>Both videos start from the same first frame. Pick the better one, or "same".
Sides are shuffled and the models are not named.</p>
<label>Rater id <input id="rater" autocomplete="off" placeholder="your initials"></label>
<button id="start">Start</button>
<div class="pair">
  <div class="side"><h2>A</h2><video id="left" muted loop playsinline></video></div>
  <div class="side"><h2>B</h2><video id="right" muted loop playsinline></video></div>
</div>
<div>
  <button id="vote-left" data-choice="left" disabled>A is better</button>
  <button id="vote-same" data-choice="same" disabled>Same</button>
  <button id="vote-right" data-choice="right" disabled>B is better</button>
</div>
<p id="status">Enter a rater id and press Start.</p>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
let trial = null, played = {left: false, right: false}, votes = 0;
const buttons = () => document.querySelectorAll("button[data-choice]");
function setButtons(on) { buttons().forEach((b) => { b.disabled = !on; }); }
function rater() { return $("rater").value.trim(); }
["left", "right"].forEach((side) => {
  $(side).addEventListener("timeupdate", () => {
    if ($(side).currentTime > 0 && !played[side]) {
      played[side] = true;
      if (played.left && played.right) { setButtons(true); document.body.dataset.ready = trial; }
    }
  });
});
async function next() {
  setButtons(false);
  delete document.body.dataset.ready;
  const r = await fetch("/api/next?rater=" + encodeURIComponent(rater()));
  const t = await r.json();
  if (!r.ok) { $("status").textContent = t.error; return; }
  trial = t.trial; votes = t.votes; played = {left: false, right: false};
  $("left").src = t.left; $("right").src = t.right;
  await Promise.all([$("left").play(), $("right").play()]);
  $("status").textContent = "votes by " + rater() + ": " + votes + " (" + t.pairs + " pairs)";
}
async function vote(choice) {
  setButtons(false);
  const r = await fetch("/api/vote", {method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({trial: trial, rater: rater(), choice: choice})});
  if (!r.ok) { $("status").textContent = (await r.json()).error; return; }
  document.body.dataset.voted = String(votes + 1);
  await next();
}
buttons().forEach((b) => b.addEventListener("click", () => vote(b.dataset.choice)));
$("start").addEventListener("click", () => {
  if (!rater()) { $("status").textContent = "a rater id is required"; return; }
  localStorage.setItem("rater", rater());
  next();
});
$("rater").value = new URLSearchParams(location.search).get("rater") || localStorage.getItem("rater") || "";
</script>
</body></html>
"""
