// Saliency of factors: hovering a point of a factor's sparkline paints the tokens that drive that
// factor at that position (their share of the gradient x input of its readout), writes each share
// under its token and names the top three. A generated token's point is the position before it, unless
// the view colours tokens by their own position.
// args: src (the panel's token boxes), factor_src (the factors view's tokens: tags[1] its colouring),
// cells (the sparkline cells: factor, x), mats [k][n][n], palette, details, n_prompt, input_rgb, output_rgb
const idx = cb_data.index.indices;
if (!idx.length) return;
const f = cells.data.factor[idx[0]], token = cells.data.x[idx[0]];
const own = factor_src.tags[1] == 1;                      // the factors view's colouring toggle
const pos = (own || token < n_prompt) ? token : token - 1;
const row = mats[f][pos];
const d = src.data, n = d.x.length;
const alpha = new Array(n).fill(0), pct = new Array(n).fill(""), tc = new Array(n), lw = new Array(n).fill(1);
const paint = new Array(n).fill(palette[f]);
const name = "factor " + (f + 1) + " at position " + pos + " (" + escapeHtml(JSON.stringify(d.token[pos])) + ")";
if (row.slice(0, pos + 1).every(v => v == 0)) {
    details.text = name + ": left out of the factorisation.";
} else {
    const mx = Math.max(...row.slice(0, pos + 1), 1e-12);
    for (let j = 0; j <= pos; j++) {
        alpha[j] = 0.85 * row[j] / mx;
        pct[j] = shareLabel(row[j]);
    }
    details.text = "What drives " + name + ": " +
        topShares(row, pos + 1, d.token);
}
lw[pos] = 3;
for (let j = 0; j < n; j++)
    tc[j] = textColor(blend(hexrgb(paint[j]), j < n_prompt ? input_rgb : output_rgb, alpha[j]));
src.data = Object.assign({}, d, {alpha: alpha, pct: pct, text_color: tc, line_width: lw, paint: paint});
