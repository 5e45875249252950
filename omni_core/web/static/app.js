// The page's side of the live demo (protocol: omni_core/web/server.py).
"use strict";
const $ = (id) => document.getElementById(id);
const CHUNK_SECONDS = 0.1;          // microphone chunk sent to the server
let ws, audioCtx, media, frameTimer, player, current = null, settings = {};

function setState(text) { $("state").textContent = text; }

function send(kind, bytes) {        // one binary message: a kind byte, then the payload
  if (!ws || ws.readyState !== WebSocket.OPEN) return;
  const msg = new Uint8Array(1 + bytes.byteLength);
  msg[0] = kind.charCodeAt(0);
  msg.set(new Uint8Array(bytes.buffer || bytes, bytes.byteOffset || 0, bytes.byteLength), 1);
  ws.send(msg);
}

function turnBox() {
  const box = document.createElement("div");
  box.className = "turn";
  box.innerHTML = '<div class="user"></div><div class="answer"></div><div class="meta"></div>';
  $("log").prepend(box);
  return box;
}

function showError(text) {
  const box = document.createElement("div");
  box.className = "error";
  box.textContent = text;
  $("log").prepend(box);
}

function stopSpeaking() { if (player) { player.pause(); player = null; } }

function onMessage(msg) {
  switch (msg.type) {
    case "ready":
      settings = msg;
      $("status").textContent = `${msg.profile} model, 16 kHz audio, frames at ${msg.video_fps} fps while you speak`;
      setState("listening");
      $("reset").disabled = false;
      break;
    case "event":
      if (msg.kind === "speech_start") {
        setState("hearing you");
        current = turnBox();
        current.querySelector(".user").textContent = `you spoke at ${msg.time.toFixed(1)} s`;
      } else if (msg.kind === "speech_end") {
        setState("answering");
        if (current) current.querySelector(".user").textContent += ` until ${msg.time.toFixed(1)} s`;
      } else if (msg.kind === "barge_in") {
        stopSpeaking();
        const last = $("log").querySelector(".turn.answered");
        if (last) { last.classList.add("interrupted"); last.querySelector(".meta").textContent += " · interrupted"; }
      } else if (msg.kind === "reset") {
        $("log").innerHTML = "";
        setState("listening");
      }
      break;
    case "answer_start":
      if (!current) current = turnBox();
      break;
    case "text":
      if (current) current.querySelector(".answer").textContent += msg.text;
      break;
    case "answer_end":
      if (current) {
        current.classList.add("answered");
        if (msg.interrupted) current.classList.add("interrupted");
        current.querySelector(".answer").textContent = msg.answer || "(empty answer)";
        current.querySelector(".meta").textContent =
          `first token ${msg.latency_ms.toFixed(0)} ms after you stopped` + (msg.interrupted ? " · interrupted" : "");
      }
      current = null;
      setState("listening");
      break;
    case "speech":
      stopSpeaking();
      player = new Audio("data:audio/wav;base64," + msg.wav);
      player.play().catch((err) => showError("cannot play the spoken answer: " + err));
      break;
    case "busy":
    case "error":
      showError(msg.message);
      break;
  }
}

async function start() {
  $("start").disabled = true;
  try {
    media = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true },
      video: { width: 320, height: 240 } });
  } catch (err) {
    showError("no camera or microphone: " + err.message);
    $("start").disabled = false;
    return;
  }
  $("camera").srcObject = media;
  ws = new WebSocket(`ws://${location.host}/ws`);
  ws.binaryType = "arraybuffer";
  ws.onmessage = (e) => onMessage(JSON.parse(e.data));
  ws.onclose = () => { $("status").textContent = "disconnected: reload the page to talk again"; setState("stopped"); };
  await new Promise((resolve) => { ws.onopen = resolve; });

  audioCtx = new AudioContext({ sampleRate: 16000 });       // the browser resamples the microphone
  await audioCtx.audioWorklet.addModule("/static/pcm-worklet.js");
  const chunker = new AudioWorkletNode(audioCtx, "pcm-chunker",
    { processorOptions: { chunkSamples: Math.round(16000 * CHUNK_SECONDS) } });
  chunker.port.onmessage = (e) => {
    const pcm = e.data;
    let peak = 0;
    for (let i = 0; i < pcm.length; i++) peak = Math.max(peak, Math.abs(pcm[i]));
    $("level").style.width = Math.min(100, 300 * peak) + "%";
    send("A", pcm);
  };
  const silent = audioCtx.createGain();
  silent.gain.value = 0;                                    // pulled by the graph, never heard
  audioCtx.createMediaStreamSource(media).connect(chunker).connect(silent).connect(audioCtx.destination);

  const canvas = document.createElement("canvas");
  const video = $("camera");
  const fps = Math.max(1, 2 * (settings.video_fps || 1));  // twice the model's rate: a fresh frame when speech starts
  frameTimer = setInterval(() => {
    if (!video.videoWidth) return;
    canvas.width = video.videoWidth;
    canvas.height = video.videoHeight;
    canvas.getContext("2d").drawImage(video, 0, 0);
    canvas.toBlob(async (blob) => { if (blob) send("V", new Uint8Array(await blob.arrayBuffer())); }, "image/jpeg", 0.8);
  }, 1000 / fps);
}

$("start").onclick = start;
$("reset").onclick = () => { stopSpeaking(); ws && ws.send(JSON.stringify({ type: "reset" })); };
