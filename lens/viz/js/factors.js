// Factor sparklines: hovering a factor's row paints that factor on the text; leaving restores (the
// pinned factor, else each token's dominant one); a tap pins the factor (a tap on the pinned one unpins).
// args: src (token boxes; tags[0] the pinned factor), palette, cells (the sparkline cells), action
// ("hover", "leave" or "tap"), excluded, input_rgb, output_rgb
let f = -1;
if (action == "hover") {
    const idx = cb_data.index.indices;
    if (!idx.length) return;
    f = cells.data.factor[idx[0]];
} else if (action == "tap") {
    const idx = cells.selected.indices;
    if (!idx.length) return;
    f = cells.data.factor[idx[0]];
    src.tags = [src.tags[0] == f ? -1 : f];
    cells.selected.indices = [];
}
const show = action == "hover" ? f : src.tags[0];
const d = src.data, n = d.x.length;
if (show < 0) {
    src.data = Object.assign({}, d, {color: d.dom_color, alpha: d.dom_alpha, text_color: d.dom_text});
    return;
}
const acts = d["act_" + show], color = new Array(n), alpha = new Array(n), tc = new Array(n);
for (let i = 0; i < n; i++) {
    color[i] = d.ok[i] ? palette[show] : excluded;
    alpha[i] = d.ok[i] ? 0.9 * acts[i] : 1.0;
    tc[i] = textColor(blend(hexrgb(color[i]), d.kind[i] == "input" ? input_rgb : output_rgb, alpha[i]));
}
src.data = Object.assign({}, d, {color: color, alpha: alpha, text_color: tc});
