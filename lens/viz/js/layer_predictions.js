// The layer-predictions menu: show another position's top candidates after every layer.
// args: src, data (one JSON string of {position: columns}, parsed once in the page and kept in src.tags)
if (!src.tags.length) src.tags = [JSON.parse(data)];
src.data = Object.assign({}, src.data, src.tags[0][cb_obj.value]);
