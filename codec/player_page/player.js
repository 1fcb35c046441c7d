// nerva play: frames come from the local server (decoded on demand by the jitted INR) as raw RGBA bytes
// and are put on the canvas unchanged. All URLs are relative: they keep the per-run token in the path.
"use strict";

const $ = (id) => document.getElementById(id);
const PIPELINE = 4;            // frame requests in flight while playing (the server prefetches further)
const state = {
  info: null, index: 0, playing: false, generation: 0, showRef: false, controller: null,
  drawnAt: [], drawCount: 0, shown: null, seekMs: null, ctx: null,
};

function sleep(ms) { return new Promise((resolve) => setTimeout(resolve, ms)); }
function clampIndex(i) { return Math.max(0, Math.min(state.info.frames - 1, Math.trunc(i))); }
function aborted() { return new DOMException("superseded", "AbortError"); }

function psnrOf(header) {   // "inf" for a frame identical to the reference
  if (header === null) return null;
  return header === "inf" ? Infinity : parseFloat(header);
}

async function fetchPixels(kind, i, signal) {
  const t0 = performance.now();
  const r = await fetch(`${kind}/${i}`, { signal, cache: "no-store" });
  if (r.status === 409) throw aborted();   // the server dropped it for a newer seek
  if (!r.ok) throw new Error(`${kind} ${i}: HTTP ${r.status} ${(await r.text()).trim()}`);
  const pixels = new Uint8ClampedArray(await r.arrayBuffer());
  return {
    i, kind, pixels, latencyMs: performance.now() - t0,
    decodeMs: parseFloat(r.headers.get("X-Decode-Ms")), cached: r.headers.get("X-Cached") === "1",
    psnr: psnrOf(r.headers.get("X-PSNR")),
  };
}

// The decoded frame (always: it carries the decode time and the PSNR), or the reference in A/B mode.
async function getFrame(i, signal) {
  const decoded = await fetchPixels("frame", i, signal);
  if (!state.showRef) return decoded;
  const ref = await fetchPixels("reference", i, signal);
  return { ...decoded, kind: "reference", pixels: ref.pixels, latencyMs: decoded.latencyMs + ref.latencyMs };
}

function draw(f) {
  const { width, height } = state.info;
  state.ctx.putImageData(new ImageData(f.pixels, width, height), 0, 0);
  state.index = f.i;
  state.shown = f;
  state.drawCount += 1;
  const now = performance.now();
  state.drawnAt.push(now);
  while (state.drawnAt.length > 1 && now - state.drawnAt[0] > 1000) state.drawnAt.shift();
  $("seek").value = f.i;
  $("pos").textContent = `${f.i} / ${state.info.frames - 1}`;
  document.body.dataset.frame = String(f.i);
  renderOverlay();
}

function achievedFps() {
  const t = state.drawnAt;
  if (!state.playing || t.length < 2) return null;
  return (t.length - 1) * 1000 / (t[t.length - 1] - t[0]);
}

function renderOverlay() {
  const f = state.shown;
  if (!f) return;
  const fps = achievedFps();
  const lines = [
    `frame   ${f.i} / ${state.info.frames - 1}${f.kind === "reference" ? "   [reference]" : ""}`,
    `decode  ${f.decodeMs.toFixed(1)} ms/frame${f.cached ? " (prefetched)" : ""}`,
    `fetch   ${f.latencyMs.toFixed(1)} ms`,
    `fps     ${fps === null ? "-" : fps.toFixed(1)}${state.playing ? ` (target ${targetFps()})` : ""}`,
  ];
  if (state.seekMs !== null) lines.push(`seek    ${state.seekMs.toFixed(1)} ms`);
  if (f.psnr !== null) lines.push(`PSNR    ${Number.isFinite(f.psnr) ? f.psnr.toFixed(2) + " dB" : "inf"}`);
  $("overlay").textContent = lines.join("\n");
}

function targetFps() {
  const s = $("speed").value;
  return s === "max" ? "max" : (state.info.fps * parseFloat(s)).toFixed(1);
}

function newGeneration() {
  state.generation += 1;
  if (state.controller) state.controller.abort();
  state.controller = new AbortController();
  return [state.generation, state.controller.signal];
}

function showError(e) {
  $("error").hidden = false;
  $("error").textContent = String(e.message || e);
}

// Show frame i (seek / step): resolves to the time from the call to the frame on the canvas (ms).
async function show(i) {
  i = clampIndex(i);
  const [gen, signal] = newGeneration();
  const t0 = performance.now();
  try {
    const f = await getFrame(i, signal);
    if (gen !== state.generation) return null;
    draw(f);
    state.seekMs = performance.now() - t0;
    renderOverlay();
    return state.seekMs;
  } catch (e) {
    if (e.name !== "AbortError") showError(e);
    return null;
  }
}

function setPlaying(on) {
  state.playing = on;
  $("play").innerHTML = on ? "&#10074;&#10074; pause" : "&#9654; play";
  document.body.dataset.playing = on ? "1" : "0";
}

function pause() {
  if (!state.playing) return;
  newGeneration();
  setPlaying(false);
  renderOverlay();
}

async function play() {
  if (state.playing) return;
  const [gen, signal] = newGeneration();
  setPlaying(true);
  state.drawnAt = [];
  const frames = state.info.frames;
  let next = state.index + 1 >= frames ? 0 : state.index + 1;
  const ahead = new Map();
  let clock = performance.now(), k = 0;   // frame k of this run is due at clock + k / fps
  while (gen === state.generation) {
    if (next >= frames) {
      if (!$("loop").checked) break;
      next = 0;
      ahead.clear();
    }
    for (let j = next; j < Math.min(next + PIPELINE, frames); j++) {
      if (!ahead.has(j)) {
        const p = getFrame(j, signal);
        p.catch(() => {});   // awaited below; this only marks an abandoned request as handled
        ahead.set(j, p);
      }
    }
    let f;
    try {
      f = await ahead.get(next);
    } catch (e) {
      if (e.name === "AbortError" && gen === state.generation) {   // dropped by the server, not by us: ask again
        ahead.delete(next);
        continue;
      }
      if (e.name !== "AbortError") showError(e);
      break;
    }
    ahead.delete(next);
    const speed = $("speed").value;
    const interval = speed === "max" ? 0 : 1000 / (state.info.fps * parseFloat(speed));
    const wait = clock + k * interval - performance.now();
    if (wait > 0) await sleep(wait);
    else if (wait < -2 * interval) { clock = performance.now(); k = 0; }   // fell behind: no catch-up burst
    if (gen !== state.generation) return;
    draw(f);
    next += 1;
    k += 1;
  }
  if (gen === state.generation) setPlaying(false);
  renderOverlay();
}

async function seek(i) {
  const resume = state.playing;
  pause();
  const ms = await show(i);
  if (resume) play();
  return ms;
}

function step(d) {
  pause();
  return show(state.index + d);
}

function applyZoom() {
  const { width, height } = state.info;
  const z = $("zoom").value;
  const canvas = $("screen");
  if (z === "fit") {
    const scale = Math.min((window.innerWidth - 40) / width, (window.innerHeight - 190) / height);
    canvas.style.width = `${Math.max(1, Math.floor(width * scale))}px`;
  } else {
    canvas.style.width = `${width * parseInt(z, 10)}px`;
  }
  canvas.style.height = "auto";   // CSS scaling only: the canvas keeps the video's native pixels
}

async function toggleAB() {
  if (!state.info.reference) return;
  state.showRef = !state.showRef;
  $("ab").textContent = `A/B: showing ${state.showRef ? "reference" : "decoded"}`;
  $("ab").classList.toggle("reference", state.showRef);
  if (!state.playing) await show(state.index);
}

async function main() {
  const r = await fetch("info", { cache: "no-store" });
  if (!r.ok) throw new Error(`info: HTTP ${r.status}`);
  const info = await r.json();
  state.info = info;
  const canvas = $("screen");
  canvas.width = info.width;
  canvas.height = info.height;
  state.ctx = canvas.getContext("2d", { alpha: false });
  $("title").textContent = info.title;
  const rate = info.bytes === undefined ? "" : ` · ${info.bytes} bytes · ${info.bpp.toFixed(4)} bpp`;
  $("meta").textContent = `${info.model} · ${info.frames} frames · ${info.width}×${info.height} · ` +
    `${info.fps.toFixed(3)} fps · batch ${info.batch}${rate}`;
  $("seek").max = info.frames - 1;
  $("ab").hidden = !info.reference;
  const auto = Math.max(1, Math.min(4, Math.floor(Math.min(960 / info.width, 560 / info.height))));
  $("zoom").value = String(auto);
  applyZoom();

  $("play").onclick = () => (state.playing ? pause() : play());
  $("prev").onclick = () => step(-1);
  $("next").onclick = () => step(1);
  $("seek").oninput = (e) => seek(parseInt(e.target.value, 10));
  $("zoom").onchange = applyZoom;
  $("ab").onclick = toggleAB;
  $("showOverlay").onchange = (e) => { $("overlay").hidden = !e.target.checked; };
  window.onresize = () => { if ($("zoom").value === "fit") applyZoom(); };
  document.addEventListener("keydown", (e) => {
    if (e.target.tagName === "SELECT") return;
    const zoomBy = (d) => {
      const options = ["1", "2", "3", "4", "fit"];
      const at = options.indexOf($("zoom").value);
      $("zoom").value = options[Math.max(0, Math.min(options.length - 1, at + d))];
      applyZoom();
    };
    const keys = {
      " ": () => (state.playing ? pause() : play()), ArrowLeft: () => step(-1), ArrowRight: () => step(1),
      Home: () => seek(0), End: () => seek(info.frames - 1), a: toggleAB, "+": () => zoomBy(1),
      "=": () => zoomBy(1), "-": () => zoomBy(-1),
      o: () => { $("showOverlay").click(); },
    };
    if (keys[e.key]) { e.preventDefault(); keys[e.key](); }
  });
  await show(0);
  document.body.dataset.ready = "1";
}

// For scripts (tests, benchmarks) driving the page: the same actions as the controls.
window.nerva = {
  ready: null, pause, seek, step, toggleAB,
  play: () => { play(); return true; },   // starts playback; does not wait for it to end
  setSpeed: (s) => { $("speed").value = String(s); },
  state: () => ({
    index: state.index, playing: state.playing, fps: achievedFps(), seekMs: state.seekMs,
    decodeMs: state.shown && state.shown.decodeMs, psnr: state.shown && state.shown.psnr,
    showing: state.shown && state.shown.kind, frames: state.info && state.info.frames,
    drawn: state.drawCount, now: performance.now(),
  }),
  setLoop: (on) => { $("loop").checked = Boolean(on); },
  pixels: () => {   // the canvas's RGBA bytes, base64
    const { width, height } = state.info;
    const data = state.ctx.getImageData(0, 0, width, height).data;
    let s = "";
    for (let i = 0; i < data.length; i += 0x8000) s += String.fromCharCode.apply(null, data.subarray(i, i + 0x8000));
    return btoa(s);
  },
};
window.nerva.ready = main().catch((e) => { showError(e); throw e; });
