// The factors view's colouring toggle: a generated token coloured by the position that produced it (the
// article's rule, 0) or by its own position (1). Swaps the token columns and the sparklines' lines, then
// paints the pinned factor, else each token's dominant one.
// args: src (token boxes; tags [pinned factor, mode]), lines (the sparklines' source), toggle, palette, k,
// excluded
const mode = toggle.active == 1 ? "own" : "article";
const d = Object.assign({}, src.data);
for (const key of ["dom_color", "dom_alpha", "dom_text", "factor", "ok"]) d[key] = d[key + "_" + mode];
for (let f = 0; f < k; f++) d["act_" + f] = d["act_" + f + "_" + mode];
src.tags = [src.tags[0], toggle.active];
src.data = Object.assign(d, factorColours(d, src.tags[0], palette, excluded));
lines.data = Object.assign({}, lines.data, {ys: lines.data["ys_" + mode]});
