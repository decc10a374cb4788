// The baseline of the webhook benchmark (tests/benches/webhook.rs): a plain
// Node http server that hands each delivery to @octokit/webhooks'
// `verifyAndReceive`, the way an Octokit-based GitHub App receives webhooks.
//
//   POST /github   202 once the signature is verified and the handlers ran,
//                  401 when verification (or parsing) fails
//   GET  /healthz  200 "ok"
//
// Environment: PORT (default 8080), GITHUB_WEBHOOK_SECRET (required).
// It listens on 127.0.0.1 only: it exists to be measured, not to be exposed.

import http from "node:http";
import { Webhooks } from "@octokit/webhooks";

const secret = process.env.GITHUB_WEBHOOK_SECRET;
if (!secret) {
  console.error("GITHUB_WEBHOOK_SECRET is not set");
  process.exit(2);
}
const port = Number(process.env.PORT ?? "8080");

const webhooks = new Webhooks({ secret });
// A handler for the event the benchmark sends, so `receive` has work to hand
// on, as an App's would; it only counts (nbci's counterpart is its dedupe
// marker and background dispatch).
let received = 0;
webhooks.on("check_suite", () => {
  received += 1;
});

const server = http.createServer((request, response) => {
  if (request.method === "GET" && request.url === "/healthz") {
    response.writeHead(200, { "content-type": "text/plain" });
    response.end("ok");
    return;
  }
  if (request.method !== "POST" || request.url !== "/github") {
    response.writeHead(404);
    response.end();
    return;
  }
  const chunks = [];
  request.on("data", (chunk) => chunks.push(chunk));
  request.on("end", async () => {
    try {
      await webhooks.verifyAndReceive({
        id: request.headers["x-github-delivery"],
        name: request.headers["x-github-event"],
        signature: request.headers["x-hub-signature-256"],
        payload: Buffer.concat(chunks).toString("utf8"),
      });
      response.writeHead(202, { "content-type": "text/plain" });
      response.end("accepted");
    } catch {
      response.writeHead(401);
      response.end();
    }
  });
});

// Keep-alive connections from the load generator must outlive its pauses
// between rounds (Node's default is 5 s).
server.keepAliveTimeout = 120_000;
server.headersTimeout = 121_000;
server.listen(port, "127.0.0.1");

const stop = () => server.close(() => process.exit(0));
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
