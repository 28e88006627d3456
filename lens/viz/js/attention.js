// The head view: hovering (or tapping) a token paints the tokens it attends to in the chosen layer and
// head (the last entry of each layer: the mean over heads); the first position, the attention sink, is
// left unpainted and the colours scale over the others.
// args: src (token boxes; tags[0] the last token shown), pats [L][H + 1][n][n], layer, head (Selects),
// details, paint_rgb, input_rgb, output_rgb
let idx = (cb_data && cb_data.index) ? cb_data.index.indices : [];
if (idx.length == 0) idx = src.selected.indices.length ? src.selected.indices : src.tags;
if (!idx || idx.length == 0) return;
const q = idx[idx.length - 1];
src.tags = [q];
const l = parseInt(layer.value) - 1, hs = pats[l].length;
const h = head.value == "mean" ? hs - 1 : parseInt(head.value) - 1;
const row = pats[l][h][q];
const d = src.data, n = d.x.length;
const alpha = new Array(n).fill(0), pct = new Array(n).fill(""), tc = new Array(n), lw = new Array(n).fill(1);
const mx = Math.max(...(q > 0 ? row.slice(1, q + 1) : row.slice(0, 1)), 1e-12);
for (let k = 0; k <= q; k++) {
    alpha[k] = (k == 0 && q > 0) ? 0 : 0.85 * row[k] / mx;
    pct[k] = shareLabel(row[k]);
}
lw[q] = 3;
for (let k = 0; k < n; k++)
    tc[k] = textColor(blend(paint_rgb, d.kind[k] == "input" ? input_rgb : output_rgb, alpha[k]));
details.text = "Position " + q + " " + escapeHtml(JSON.stringify(d.token[q])) + ", layer " + (l + 1) + ", " +
    (head.value == "mean" ? "mean of the heads" : "head " + head.value) + ", attends to: " +
    topShares(row, q + 1, d.token) +
    (q > 0 ? ". The first position (unpainted) takes " + (100 * row[0]).toFixed(1) + "%" : "");
src.data = Object.assign({}, d, {alpha: alpha, pct: pct, text_color: tc, line_width: lw});
