// Factor sparklines: hovering a factor's row paints that factor on the text; leaving restores (the
// pinned factor, else each token's dominant one); a tap pins the factor (a tap on the pinned one unpins).
// args: src (token boxes; tags[0] the pinned factor), palette, cells (the sparkline cells), action
// ("hover", "leave" or "tap"), excluded
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
src.data = Object.assign({}, src.data, factorColours(src.data, show, palette, excluded));
