// The corpus report's unit menu: show the chosen neuron's or factor's top contexts.
// args: src, items {unit name: columns}
src.data = items[cb_obj.value];
