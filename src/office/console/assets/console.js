// The office console's script: signing keys that stay in this browser,
// image uploads, and the fleet page's renewed table. Served by the office under a Content-Security-Policy that
// allows no other script.
//
// Keys: at enrolment the browser makes an Ed25519 key with WebCrypto (or
// imports the seed file of `gongkai keygen`) as a non-extractable CryptoKey,
// kept in IndexedDB under the person's name. Only the public key is sent.
// Signing: a button with data-sign signs the exact payload bytes in its
// data-payload (base64) as DSSE's pre-authentication encoding, after
// checking that they are the text the page shows and that the key is the
// one the person enrolled.
"use strict";

const DB_NAME = "gongkai-console";
const STORE = "keys";
// PKCS#8 of an Ed25519 private key, before its 32-byte seed (RFC 8410).
const PKCS8_PREFIX = [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];

function openDb() {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(DB_NAME, 1);
    request.onupgradeneeded = () => request.result.createObjectStore(STORE);
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

async function putKey(name, value) {
  const db = await openDb();
  await new Promise((resolve, reject) => {
    const tx = db.transaction(STORE, "readwrite");
    tx.objectStore(STORE).put(value, name);
    tx.oncomplete = resolve;
    tx.onerror = () => reject(tx.error);
  });
  db.close();
}

async function getKey(name) {
  const db = await openDb();
  const value = await new Promise((resolve, reject) => {
    const request = db.transaction(STORE, "readonly").objectStore(STORE).get(name);
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
  db.close();
  return value;
}

function toBase64(bytes) {
  let text = "";
  for (const b of new Uint8Array(bytes)) text += String.fromCharCode(b);
  return btoa(text);
}

function fromBase64(text) {
  let clean = text.trim().replace(/-/g, "+").replace(/_/g, "/");
  while (clean.length % 4 !== 0) clean += "=";
  const raw = atob(clean);
  const out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out;
}

async function keyId(publicRaw) {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", publicRaw));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

// A new key, non-extractable: its private half never leaves WebCrypto.
async function generateKey() {
  const pair = await crypto.subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"]);
  const publicRaw = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
  return { privateKey: pair.privateKey, publicRaw };
}

// A `gongkai keygen` file: the 32-byte seed as base64 on one line. The
// public half comes from one extractable import (the only way WebCrypto
// gives it), then the key is imported again, non-extractable, for keeps.
async function importSeed(file) {
  const seed = fromBase64(await file.text());
  if (seed.length !== 32) throw new Error("密钥文件应为 gongkai keygen 生成的 32 字节种子（base64）");
  const pkcs8 = new Uint8Array(PKCS8_PREFIX.length + 32);
  pkcs8.set(PKCS8_PREFIX);
  pkcs8.set(seed, PKCS8_PREFIX.length);
  try {
    const once = await crypto.subtle.importKey("pkcs8", pkcs8, { name: "Ed25519" }, true, ["sign"]);
    const jwk = await crypto.subtle.exportKey("jwk", once);
    const publicRaw = fromBase64(jwk.x);
    const privateKey = await crypto.subtle.importKey("pkcs8", pkcs8, { name: "Ed25519" }, false, ["sign"]);
    return { privateKey, publicRaw };
  } finally {
    seed.fill(0);
    pkcs8.fill(0);
  }
}

// A form's own submit(), whatever its fields are named (a button with id
// "submit" shadows form.submit).
function submitForm(form) {
  HTMLFormElement.prototype.submit.call(form);
}

function setStatus(id, text) {
  const el = document.getElementById(id);
  if (el) el.textContent = text;
}

function enrolment() {
  const form = document.getElementById("enrol-form");
  if (!form || form.dataset.needsKey !== "true") return;
  let ready = false;
  form.addEventListener("submit", async (event) => {
    if (ready) return;
    event.preventDefault();
    try {
      const source = form.querySelector("input[name=key_source]:checked").value;
      let key;
      if (source === "import") {
        const file = document.getElementById("seed-file").files[0];
        if (!file) throw new Error("请选择密钥文件");
        key = await importSeed(file);
      } else {
        key = await generateKey();
      }
      const publicKey = toBase64(key.publicRaw);
      await putKey(form.dataset.enrolUser, { privateKey: key.privateKey, publicKey, keyid: await keyId(key.publicRaw) });
      document.getElementById("public-key").value = publicKey;
      setStatus("key-status", "密钥已保存在本浏览器中。");
      ready = true;
      submitForm(form);
    } catch (e) {
      setStatus("key-status", "无法准备签名密钥：" + e.message);
    }
  });
}

// DSSE: "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body, lengths in bytes.
function pae(type, body) {
  const typeBytes = new TextEncoder().encode(type);
  const head = new TextEncoder().encode(`DSSEv1 ${typeBytes.length} ${type} ${body.length} `);
  const out = new Uint8Array(head.length + body.length);
  out.set(head);
  out.set(body, head.length);
  return out;
}

function signing() {
  for (const button of document.querySelectorAll("button[data-sign]")) {
    button.addEventListener("click", async () => {
      const status = button.id + "-status";
      try {
        const form = document.getElementById(button.dataset.sign);
        const payload = fromBase64(button.dataset.payload);
        const shown = document.getElementById("payload");
        const text = new TextDecoder("utf-8", { fatal: true }).decode(payload);
        if (!shown || shown.textContent !== text) throw new Error("页面显示的内容与待签名内容不一致，已停止签名");
        const user = document.body.dataset.user;
        const stored = await getKey(user);
        if (!stored) throw new Error("本浏览器中没有您的签名密钥：请使用登记时的浏览器");
        if (stored.keyid !== document.body.dataset.keyid) throw new Error("本浏览器中的密钥与您登记的不一致");
        const sig = await crypto.subtle.sign({ name: "Ed25519" }, stored.privateKey, pae(button.dataset.payloadType, payload));
        form.elements.sig.value = toBase64(sig);
        form.elements.keyid.value = stored.keyid;
        button.disabled = true;
        setStatus(status, "已签名，正在提交……");
        submitForm(form);
      } catch (e) {
        setStatus(status, "签名失败：" + e.message);
      }
    });
  }
}

function uploads() {
  for (const input of document.querySelectorAll("input[data-upload]")) {
    input.addEventListener("change", async () => {
      const i = input.dataset.upload;
      const file = input.files[0];
      if (!file) return;
      setStatus("upload-status-" + i, "正在上传……");
      try {
        const response = await fetch("/console/media", {
          method: "POST",
          headers: { "Content-Type": file.type, "X-CSRF-Token": document.body.dataset.csrf },
          body: file,
          credentials: "same-origin",
        });
        const answer = await response.json();
        if (!response.ok) throw new Error(answer.error || response.status);
        const form = input.form;
        form.elements["b" + i + "_sha256"].value = answer.sha256;
        form.elements["b" + i + "_bytes"].value = answer.bytes;
        form.elements["b" + i + "_mime"].value = answer.mime;
        setStatus("upload-status-" + i, `已上传 ${answer.bytes} 字节，保存后生效`);
      } catch (e) {
        setStatus("upload-status-" + i, "上传失败：" + e.message);
      }
    });
  }
}

// The fleet page renews its table: every data-every seconds the table is
// fetched again as HTML from data-refresh (same origin, under the page's
// CSP) and put in place of the old one. Not while a button of the table
// has the focus, about to be pressed, nor while the tab is hidden; a
// failed fetch or a lost session (a redirect) leaves the table as it was.
function fleetRefresh() {
  const view = document.getElementById("fleet-view");
  if (!view || !view.dataset.refresh) return;
  const every = Number(view.dataset.every || 30) * 1000;
  setInterval(async () => {
    if (document.hidden || view.contains(document.activeElement)) return;
    try {
      const response = await fetch(view.dataset.refresh, { credentials: "same-origin", redirect: "manual" });
      if (!response.ok) return;
      const table = await response.text();
      if (!view.contains(document.activeElement)) view.innerHTML = table;
    } catch (e) {
      // The next round tries again.
    }
  }, every);
}

document.addEventListener("DOMContentLoaded", () => {
  enrolment();
  signing();
  uploads();
  fleetRefresh();
});
