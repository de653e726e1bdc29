"""A webhook receiver for the interop test: verifies every delivery with the
Standard Webhooks reference library (PyPI `standardwebhooks`) and appends
one JSON line per request to a file:

    {"ok": true, "id": "msg_...", "type": "license.created"}   verified
    {"ok": false, "error": "..."}                               refused (400)
    {"start": "msg_..."}                                         before --delay-first

Usage: webhook_receiver.py PORT SECRET OUT [--delay-first SECONDS]
"""

import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

port, secret, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
delay_first = float(sys.argv[5]) if len(sys.argv) > 5 and sys.argv[4] == "--delay-first" else 0.0
hook = Webhook(secret)
delayed = [False]


def log(entry):
    with open(out, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        if delay_first and not delayed[0]:
            delayed[0] = True
            log({"start": self.headers.get("webhook-id")})
            time.sleep(delay_first)
        try:
            payload = hook.verify(body, dict(self.headers.items()))
        except WebhookVerificationError as e:
            log({"ok": False, "error": str(e)})
            self.send_response(400)
            self.end_headers()
            return
        log({"ok": True, "id": self.headers.get("webhook-id"), "type": payload["type"]})
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
