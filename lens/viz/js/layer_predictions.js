// The layer-predictions menu: show another position's top candidates after every layer.
// args: src, data (one JSON string, parsed once in the page and kept in src.tags): tokens (labels),
// palette and text (fill and text colours), cells {position: [token indices, percentages (-1: "<1%"),
// palette indices]}, one entry per (layer, candidate)
if (!src.tags.length) src.tags = [JSON.parse(data)];
const d = src.tags[0];
const [t, pct, c] = d.cells[cb_obj.value];
src.data = Object.assign({}, src.data, {
  text: t.map((i) => d.tokens[i]),
  prob: pct.map((p) => (p < 0 ? "<1%" : p + "%")),
  fill: c.map((i) => d.palette[i]),
  color: c.map((i) => d.text[i]),
});
