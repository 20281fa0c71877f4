// An upstream in Node's `http` that answers every request with the paths Node apps route
// on: WHATWG `new URL(req.url)` (what fetch-style routers use) and the legacy `url.parse`
// (Express's parseurl), both of which drop a #fragment and read '\' as '/'.
// Usage: node echo_node.js PORT
"use strict";
const http = require("http");
const url = require("url");
const port = Number(process.argv[2]);
http.createServer((req, res) => {
  req.resume();
  req.on("end", () => {
    let whatwg = null;
    try { whatwg = new URL(req.url, "http://upstream").pathname; } catch (e) {}
    const legacy = url.parse(req.url).pathname;
    const routed = [whatwg, legacy].filter((p) => p !== null).map((p) => {
      try { return decodeURIComponent(p); } catch (e) { return p; }
    });
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ server: "node", routed,
                             authorization: req.headers["authorization"] || null }));
  });
}).listen(port, "127.0.0.1", () => console.log("listening " + port));
