"""The HTML shell every page shares: inline styles and the table-sorting script (no network).

Clicking a header sorts by it; ``#sort=<table id>:<column>:<asc|desc>`` in the URL sorts on load.
"""

from __future__ import annotations

import html

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1400px}
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}
caption{text-align:left;font-weight:bold;padding:0.3em 0}
th,td{border:1px solid #ccc;padding:0.25em 0.6em;text-align:right;white-space:nowrap}
th{background:#f0f0f0;cursor:pointer;user-select:none}
th[aria-sort=ascending]::after{content:" \\25B2"} th[aria-sort=descending]::after{content:" \\25BC"}
td:first-child,th:first-child{text-align:left}
tbody.aggregates{border-top:3px solid #888;font-weight:600}
td.sig{background:#e4f5e4} td.ns{color:#888}
ul.notes{font-size:0.85em;color:#555}
img{max-width:100%;border:1px solid #ddd;margin:0.5em 0}
"""

_SCRIPT = """
function cellKey(cell){
  if(!cell) return null;
  const v = cell.getAttribute('data-value');
  if(v !== null) return parseFloat(v);
  const t = cell.textContent.trim();
  return (t === '' || t === '-') ? null : t;
}
function sortTable(table, col, descending){
  for(const body of table.tBodies){
    const rows = Array.from(body.rows);
    rows.sort(function(a, b){
      const x = cellKey(a.cells[col]), y = cellKey(b.cells[col]);
      if(x === null && y === null) return 0;
      if(x === null) return 1;
      if(y === null) return -1;
      const order = (typeof x === 'number' && typeof y === 'number') ? x - y
                    : String(x).localeCompare(String(y));
      return descending ? -order : order;
    });
    rows.forEach(function(r){ body.appendChild(r); });
  }
  table.querySelectorAll('th').forEach(function(th){ th.removeAttribute('aria-sort'); });
  table.tHead.rows[0].cells[col].setAttribute('aria-sort', descending ? 'descending' : 'ascending');
}
document.querySelectorAll('table.sortable').forEach(function(table){
  table.tHead.querySelectorAll('th').forEach(function(th, col){
    th.addEventListener('click', function(){
      sortTable(table, col, th.getAttribute('aria-sort') !== 'descending');
    });
  });
});
const wanted = /^#sort=([^:]+):(\\d+):(asc|desc)$/.exec(decodeURIComponent(location.hash));
if(wanted){
  const table = document.getElementById(wanted[1]);
  if(table) sortTable(table, parseInt(wanted[2], 10), wanted[3] === 'desc');
}
"""


def page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>\n<body>"
            f"<h1>{html.escape(title)}</h1>\n{body}\n<script>{_SCRIPT}</script></body></html>\n")
