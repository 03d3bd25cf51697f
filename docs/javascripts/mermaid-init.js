// Renders ```mermaid blocks with the vendored mermaid.min.js (no CDN: the site must work offline).
// The fence is emitted as <pre class="mermaid-diagram"><code>…</code></pre>; mermaid wants the
// diagram's text alone, so each block is replaced by a div holding that text, then rendered.
document.addEventListener("DOMContentLoaded", function () {
  mermaid.initialize({ startOnLoad: false });
  var nodes = [];
  document.querySelectorAll("pre.mermaid-diagram").forEach(function (pre) {
    var div = document.createElement("div");
    div.className = "mermaid-diagram";
    div.textContent = pre.textContent;
    pre.replaceWith(div);
    nodes.push(div);
  });
  if (nodes.length) {
    mermaid.run({ nodes: nodes });
  }
});
