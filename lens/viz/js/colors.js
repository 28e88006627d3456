// Readable text on any fill: WCAG relative luminance, black or white whichever contrasts more. The
// same rule as lens/viz/style.py's text_color (a browser test checks that the two agree), for colours
// that change on hover; and the one way this page's code writes untrusted text into HTML.
function channel(c) { c /= 255; return c <= 0.03928 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4); }
function luminance(rgb) { return 0.2126 * channel(rgb[0]) + 0.7152 * channel(rgb[1]) + 0.0722 * channel(rgb[2]); }
function hexrgb(h) { h = h.replace('#', ''); return [0, 2, 4].map(i => parseInt(h.substr(i, 2), 16)); }
function blend(top, bottom, a) { return top.map((t, i) => a * t + (1 - a) * bottom[i]); }
function textColor(fill) {
    const l = luminance(fill);
    return (l + 0.05) / 0.05 >= 1.05 / (l + 0.05) ? '#000000' : '#ffffff';
}
function escapeHtml(s) {
    return String(s).replace(/[&<>"']/g, c => ({'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;'})[c]);
}
