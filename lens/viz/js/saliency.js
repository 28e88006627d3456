// Input saliency: hovering (or tapping) a generated token paints the earlier tokens by their share of
// its attribution under the chosen method, writes each share under its token and names the top three.
// args: src (the token boxes), mats {method: [n_generated][n_tokens]}, sinks (methods whose rows sit on the
// first position: it stays unpainted and colours scale over the others), held (methods that hold the first
// position fixed: integrated gradients' path), probs, select (method menu),
// details, heading, n_prompt, input_rgb, output_rgb, paint_rgb, heading_html
// the hovered token, else the tapped one, else the last one shown (when the method changes)
let idx = (cb_data && cb_data.index) ? cb_data.index.indices : [];
if (idx.length == 0) idx = src.selected.indices.length ? src.selected.indices : src.tags;
heading.text = heading_html.replace('METHOD', () => escapeHtml(select.value));  // no $-patterns
if (!idx || idx.length == 0) return;
const i = idx[idx.length - 1];
src.tags = [i];
const d = src.data, n = d.x.length;
const alpha = new Array(n).fill(0), pct = new Array(n).fill(""), tc = new Array(n), lw = new Array(n).fill(1);
let info = "Position " + i + " (prompt): <b>" + escapeHtml(JSON.stringify(d.token[i])) + "</b>";
if (i >= n_prompt) {
    const row = mats[select.value][i - n_prompt];
    const sink = sinks.includes(select.value) && i > 1;
    const mx = Math.max(...(sink ? row.slice(1, i) : row), 1e-12);
    for (let j = 0; j < i; j++) {
        alpha[j] = (sink && j == 0) ? 0 : 0.85 * row[j] / mx;
        pct[j] = shareLabel(row[j]);
    }
    info = "Position " + i + " (generated token " + (i - n_prompt + 1) + " of " + (n - n_prompt) + "): <b>" +
        escapeHtml(JSON.stringify(d.token[i])) + "</b>, p = " +
        probs[i - n_prompt].toFixed(3) + ". Top contributors (" + escapeHtml(select.value) + "): " +
        topShares(row, i, d.token) +
        (sink ? ". The first position (the attention sink, unpainted) holds " + (100 * row[0]).toFixed(1) +
         "%: colours scale over the others" : "") +
        (held.includes(select.value) ? ". The first position is held fixed along the path from the baseline " +
         "(the attention sink: interpolating it jumps), so it gets no attribution" : "");
}
lw[i] = 3;
for (let j = 0; j < n; j++) {
    const base = j < n_prompt ? input_rgb : output_rgb;
    tc[j] = textColor(blend(paint_rgb, base, alpha[j]));
}
details.text = info;
src.data = Object.assign({}, d, {alpha: alpha, pct: pct, text_color: tc, line_width: lw});
