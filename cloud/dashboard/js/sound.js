// The audible cue for new critical alerts: a Web Audio beep, armed by a click (browsers only
// let a page make sound after a user gesture), with a visible on/off control.
import { t } from "./i18n.js";
import { askPermission } from "./notify.js";

let ctx = null;
let button = null;

function show() {
  button.textContent = ctx ? t("sound.on") : t("sound.off");
  button.setAttribute("aria-pressed", String(Boolean(ctx)));
  button.classList.toggle("on", Boolean(ctx));
}

export function setupSound(el) {
  button = el;
  button.dataset.beeps = "0";
  button.dataset.repeatBeeps = "0";
  button.addEventListener("click", async () => {
    if (ctx) { await ctx.close(); ctx = null; } else {
      ctx = new AudioContext();
      await ctx.resume();
      askPermission();
    }
    show();
  });
  show();
}

export const refreshSound = () => button && show();

// Three short high tones: distinct from a phone's ring, audible across a duty room. A cue's
// repeats are counted apart from first cues (data-repeat-beeps, data-beeps).
export function beep(repeat = false) {
  if (!ctx) return false;
  const start = ctx.currentTime;
  for (let i = 0; i < 3; i += 1) {
    const osc = ctx.createOscillator();
    const gain = ctx.createGain();
    osc.type = "square";
    osc.frequency.value = 880;
    gain.gain.setValueAtTime(0.0001, start + i * 0.25);
    gain.gain.exponentialRampToValueAtTime(0.3, start + i * 0.25 + 0.02);
    gain.gain.exponentialRampToValueAtTime(0.0001, start + i * 0.25 + 0.18);
    osc.connect(gain).connect(ctx.destination);
    osc.start(start + i * 0.25);
    osc.stop(start + i * 0.25 + 0.2);
  }
  const counter = repeat ? "repeatBeeps" : "beeps";
  button.dataset[counter] = String(Number(button.dataset[counter] || 0) + 1);
  return true;
}
