// A line chart drawn as SVG by hand (no library, no CDN): points [[t_ms, value], ...].
const NS = "http://www.w3.org/2000/svg";

function node(tag, attrs, text) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

export function lineChart(series, { width = 560, height = 180, from, to, unit = "", fmt }) {
  const svg = node("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img" });
  const pad = { l: 44, r: 8, t: 8, b: 22 };
  const values = series.flatMap((s) => s.points.map((p) => p[1]));
  if (!values.length) return svg;
  let lo = Math.min(...values);
  let hi = Math.max(...values);
  if (hi - lo < 1e-9) { lo -= 1; hi += 1; }
  const x = (t) => pad.l + ((t - from) / (to - from)) * (width - pad.l - pad.r);
  const y = (v) => pad.t + (1 - (v - lo) / (hi - lo)) * (height - pad.t - pad.b);
  svg.append(node("rect", { x: pad.l, y: pad.t, width: width - pad.l - pad.r,
    height: height - pad.t - pad.b, class: "frame" }));
  for (const v of [lo, (lo + hi) / 2, hi]) {
    svg.append(node("line", { x1: pad.l, x2: width - pad.r, y1: y(v), y2: y(v), class: "grid" }));
    svg.append(node("text", { x: pad.l - 4, y: y(v) + 4, "text-anchor": "end" },
      `${Math.round(v * 10) / 10}${unit}`));
  }
  svg.append(node("text", { x: pad.l, y: height - 6 }, fmt(from)));
  svg.append(node("text", { x: width - pad.r, y: height - 6, "text-anchor": "end" }, fmt(to)));
  series.forEach((s, i) => {
    // A silence three times the usual spacing (and three steps) is drawn as a gap: no data
    // is not a flat line. The usual spacing is the median: a device reports at its own pace.
    const gaps = s.points.slice(1).map((p, j) => p[0] - s.points[j][0]).sort((a, b) => a - b);
    const usual = gaps.length ? gaps[Math.floor(gaps.length / 2)] : 0;
    const gap = 3 * Math.max(usual, s.step || 0);
    const parts = [];
    let current = [];
    s.points.forEach((p, j) => {
      if (j && p[0] - s.points[j - 1][0] > gap) { parts.push(current); current = []; }
      current.push(`${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`);
    });
    parts.push(current);
    for (const part of parts) {
      svg.append(node("polyline", { points: part.join(" "), class: `line s${i}` }));
    }
  });
  return svg;
}
