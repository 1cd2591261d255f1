/**
 * A horizontal bar chart as a standalone SVG string: one bar per series per group (the median),
 * with a min–max whisker. Hand-written so the benchmark needs no chart dependency.
 */

export interface BarSeries {
  /** Legend label, e.g. "tsvmm" or "QEMU microvm". */
  readonly label: string;
  readonly color: string;
}

export interface BarGroup {
  /** Row label, e.g. "start → /init". */
  readonly label: string;
  /** One value per series, in series order; undefined draws nothing for that series. */
  readonly values: readonly ({ median: number; min: number; max: number } | undefined)[];
}

export interface BarChart {
  readonly title: string;
  readonly unit: string;
  readonly series: readonly BarSeries[];
  readonly groups: readonly BarGroup[];
}

const escape = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

/** A round axis maximum at or above `v` (so that fifths of it are round too). */
function niceMax(v: number): number {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

const fmt = (v: number): string => (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2));

export function barChartSvg(chart: BarChart): string {
  const labelW = 210;
  const plotW = 460;
  const rightPad = 70;
  const barH = 16;
  const barGap = 4;
  const groupGap = 14;
  const axisH = 34;
  const width = labelW + plotW + rightPad;
  // Legend entries flow left to right from the plot's left edge and wrap when the row is full.
  const legend: { x: number; row: number; series: BarSeries }[] = [];
  let lx = labelW;
  let row = 0;
  for (const series of chart.series) {
    const w = 24 + series.label.length * 7;
    if (lx + w > width && lx > labelW) {
      row++;
      lx = labelW;
    }
    legend.push({ x: lx, row, series });
    lx += w;
  }
  const top = 48 + row * 18;
  const groupH = chart.series.length * (barH + barGap) - barGap;
  const plotH = chart.groups.length * (groupH + groupGap) - groupGap;
  const height = top + plotH + axisH;
  let hi = 0;
  for (const g of chart.groups) for (const v of g.values) if (v !== undefined) hi = Math.max(hi, v.max, v.median);
  const max = niceMax(hi);
  const x = (v: number): number => labelW + (v / max) * plotW;
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`);
  out.push(`<rect width="${width}" height="${height}" fill="white"/>`);
  out.push(`<text x="${width / 2}" y="18" text-anchor="middle" font-size="14" font-weight="bold">${escape(chart.title)}</text>`);
  for (const e of legend) {
    const y = 28 + e.row * 18;
    out.push(`<rect x="${e.x}" y="${y}" width="12" height="12" fill="${e.series.color}"/>`);
    out.push(`<text x="${e.x + 16}" y="${y + 10}">${escape(e.series.label)}</text>`);
  }
  // Grid and axis ticks: five intervals of the nice maximum.
  for (let i = 0; i <= 5; i++) {
    const v = (max * i) / 5;
    const gx = x(v);
    out.push(`<line x1="${gx}" y1="${top - 4}" x2="${gx}" y2="${top + plotH}" stroke="#ddd"/>`);
    out.push(`<text x="${gx}" y="${top + plotH + 16}" text-anchor="middle" fill="#444">${Number(v.toPrecision(3))}</text>`);
  }
  out.push(`<text x="${labelW + plotW / 2}" y="${top + plotH + 30}" text-anchor="middle" fill="#444">${escape(chart.unit)} (bar: median; whisker: min–max)</text>`);
  chart.groups.forEach((g, gi) => {
    const gy = top + gi * (groupH + groupGap);
    out.push(`<text x="${labelW - 8}" y="${gy + groupH / 2 + 4}" text-anchor="end">${escape(g.label)}</text>`);
    g.values.forEach((v, si) => {
      if (v === undefined) return;
      const y = gy + si * (barH + barGap);
      const color = chart.series[si]?.color ?? '#888';
      out.push(`<rect x="${labelW}" y="${y}" width="${Math.max(0, x(v.median) - labelW)}" height="${barH}" fill="${color}"/>`);
      const wy = y + barH / 2;
      out.push(`<line x1="${x(v.min)}" y1="${wy}" x2="${x(v.max)}" y2="${wy}" stroke="#222" stroke-width="1.5"/>`);
      out.push(`<line x1="${x(v.min)}" y1="${wy - 5}" x2="${x(v.min)}" y2="${wy + 5}" stroke="#222" stroke-width="1.5"/>`);
      out.push(`<line x1="${x(v.max)}" y1="${wy - 5}" x2="${x(v.max)}" y2="${wy + 5}" stroke="#222" stroke-width="1.5"/>`);
      out.push(`<text x="${x(Math.max(v.max, v.median)) + 6}" y="${wy + 4}" fill="#222">${fmt(v.median)}</text>`);
    });
  });
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
