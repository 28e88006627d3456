// Two explanations side by side: for the pair chosen in the menu, paint A's text with A's attribution
// row, B's text with B's row of the paired token, and A's text again with the difference (blue: A
// gives more, red: B gives more), each share or difference written under its token.
// args: a, b, diff (token sources), select, rows (A's positions of the pairs), align (B's position of
// each A position, -1 none), a_scores, b_scores (B's own rows), b_on_a (B's rows on A's positions),
// paint_rgb, a_color, b_color, input_rgb, output_rgb
const i = parseInt(select.value);
const ra = rows[i], rb = align[ra];
function shares(src, row, upto, mark) {
    const d = src.data, n = d.x.length;
    const alpha = new Array(n).fill(0), pct = new Array(n).fill(""), tc = new Array(n), lw = new Array(n).fill(1);
    const mx = Math.max(...row.slice(0, upto), 1e-12);
    for (let j = 0; j < upto; j++) {
        alpha[j] = 0.85 * row[j] / mx;
        pct[j] = shareLabel(row[j]);
    }
    lw[mark] = 3;
    for (let j = 0; j < n; j++)
        tc[j] = textColor(blend(paint_rgb, d.kind[j] == "input" ? input_rgb : output_rgb, alpha[j]));
    src.data = Object.assign({}, d, {alpha: alpha, pct: pct, text_color: tc, line_width: lw});
}
shares(a, a_scores[i], ra, ra);
shares(b, b_scores[i], rb, rb);
const d = diff.data, n = d.x.length;
const delta = a_scores[i].map((v, j) => j < ra ? v - b_on_a[i][j] : 0);
const mx = Math.max(...delta.map(Math.abs), 1e-12);
const alpha = new Array(n).fill(0), pct = new Array(n).fill(""), tc = new Array(n), lw = new Array(n).fill(1);
const paint = new Array(n).fill(a_color);
for (let j = 0; j < ra; j++) {
    paint[j] = delta[j] >= 0 ? a_color : b_color;
    alpha[j] = 0.85 * Math.abs(delta[j]) / mx;
    const v = 100 * delta[j];
    pct[j] = Math.abs(v) >= 0.5 ? (v > 0 ? "+" : "") + v.toFixed(0) : "";
    if (align[j] < 0) pct[j] = "only A";
}
lw[ra] = 3;
for (let j = 0; j < n; j++)
    tc[j] = textColor(blend(hexrgb(paint[j]), d.kind[j] == "input" ? input_rgb : output_rgb, alpha[j]));
diff.data = Object.assign({}, d, {alpha: alpha, pct: pct, text_color: tc, line_width: lw, paint: paint});
