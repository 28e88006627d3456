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
// A token's share of a row, as written under it: "12%", "<1%", or nothing for none.
function shareLabel(v) { const p = 100 * v; return p >= 0.5 ? p.toFixed(0) + "%" : (p > 0 ? "<1%" : ""); }
// The three largest shares among positions 0..upto-1, largest first, as escaped `"token" 12.3%` text.
function topShares(row, upto, tokens) {
    return Array.from(row.keys()).filter(j => j < upto).sort((a, b) => row[b] - row[a]).slice(0, 3)
        .map(j => escapeHtml(JSON.stringify(tokens[j])) + " " + (100 * row[j]).toFixed(1) + "%").join(", ");
}
function escapeHtml(s) {
    return String(s).replace(/[&<>"']/g, c => ({'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;'})[c]);
}
