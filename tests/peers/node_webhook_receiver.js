// A webhook receiver on Node's own http server (llhttp, its keep-alive timer): prints each request as one JSON
// line {method, url, headers, body} and answers 204. argv: keepAliveTimeout in ms. Prints "port <n>" first.
const http = require("http");
const keepAlive = parseInt(process.argv[2] || "5000", 10);
const server = http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    const body = Buffer.concat(chunks).toString("utf8");
    process.stdout.write(JSON.stringify({ method: req.method, url: req.url, headers: req.headers, body }) + "\n");
    res.writeHead(204);
    res.end();
  });
});
server.keepAliveTimeout = keepAlive;
server.listen(0, "127.0.0.1", () => {
  process.stdout.write("port " + server.address().port + "\n");
});
