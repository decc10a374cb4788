#!/usr/bin/env python3
"""Register the nbci GitHub App from manifest.json (GitHub's manifest flow).

    python3 infra/github-app/register.py --org ORG [--name NAME]

1. Reads manifest.json and sets hook_attributes.url to the Terraform output
   `github_webhook_url` (or --webhook-url).
2. Serves a page on http://127.0.0.1:PORT/ that posts the manifest to GitHub
   (an organization's settings with --org, else your account's). You confirm
   the App's name there.
3. GitHub redirects back to http://127.0.0.1:PORT/callback with a code; this
   script exchanges it (POST /app-manifests/{code}/conversions) for the App's
   id, webhook secret and private key, and adds the two secrets as new
   versions of the Secret Manager secrets named by the Terraform output
   `secrets`, through `gcloud secrets versions add ... --data-file=-` (the
   values go through a pipe: never to disk, never to the terminal).
4. Prints the App id for terraform.tfvars (github_app_id) and the URL where
   you install the App on repositories.

With --out DIR the secrets are written to DIR (mode 0600) instead of Secret
Manager. Only the Python standard library, gcloud and terraform are used.
The whole flow must finish within an hour of step 2 (GitHub's limit).
"""

import argparse
import html
import http.server
import json
import os
import secrets
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
INFRA = HERE.parent


def terraform_output(name, terraform):
    """`terraform output -json NAME` of infra/, parsed."""
    result = subprocess.run(
        [terraform, f"-chdir={INFRA}", "output", "-json", name],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(result.stdout)


def build_manifest(args):
    manifest = json.loads((HERE / "manifest.json").read_text())
    webhook_url = args.webhook_url or terraform_output("github_webhook_url", args.terraform)
    if not webhook_url.startswith("https://"):
        sys.exit(f"the webhook URL must be https, got {webhook_url!r}")
    manifest["hook_attributes"]["url"] = webhook_url
    manifest["redirect_url"] = f"http://127.0.0.1:{args.port}/callback"
    if args.name:
        manifest["name"] = args.name
    return manifest


def new_app_url(args, state):
    base = args.github_url.rstrip("/")
    path = f"/organizations/{args.org}/settings/apps/new" if args.org else "/settings/apps/new"
    return f"{base}{path}?state={urllib.parse.quote(state)}"


def convert(args, code):
    """Exchanges the temporary code for the App's configuration."""
    url = f"{args.api_url.rstrip('/')}/app-manifests/{urllib.parse.quote(code)}/conversions"
    request = urllib.request.Request(
        url,
        method="POST",
        headers={"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def store(args, app):
    values = {"webhook_secret": app["webhook_secret"], "app_private_key": app["pem"]}
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for key, value in values.items():
            path = out / key
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as file:
                file.write(value)
            print(f"wrote {path}")
        return
    names = terraform_output("secrets", args.terraform)
    for key, value in values.items():
        command = [args.gcloud, "secrets", "versions", "add", names[key], "--data-file=-"]
        if args.project:
            command += ["--project", args.project]
        subprocess.run(command, input=value, text=True, check=True)
        print(f"added a version to secret {names[key]}")


def serve(args, manifest):
    state = secrets.token_urlsafe(24)
    outcome = {}
    form = f"""<!doctype html><meta charset="utf-8"><title>Register the nbci GitHub App</title>
<form id="f" method="post" action="{html.escape(new_app_url(args, state))}">
<input type="hidden" name="manifest" value="{html.escape(json.dumps(manifest))}">
<p>Registering <b>{html.escape(manifest['name'])}</b> with webhook
<code>{html.escape(manifest['hook_attributes']['url'])}</code>.</p>
<button type="submit">Continue to GitHub</button></form>
<script>document.getElementById("f").submit()</script>"""

    class Handler(http.server.BaseHTTPRequestHandler):
        def reply(self, status, body):
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):  # noqa: N802 (the standard library's name)
            url = urllib.parse.urlsplit(self.path)
            if url.path == "/":
                self.reply(200, form)
                return
            if url.path != "/callback":
                self.reply(404, "not found")
                return
            query = urllib.parse.parse_qs(url.query)
            if query.get("state", [""])[0] != state or "code" not in query:
                self.reply(400, "unexpected callback: start again from the script's page")
                return
            try:
                app = convert(args, query["code"][0])
                store(args, app)
            except Exception as error:  # reported to the operator, then the server stops
                outcome["error"] = error
                self.reply(500, f"failed: {html.escape(str(error))}; see the terminal")
                return
            outcome["app"] = app
            install = f"{app['html_url']}/installations/new"
            self.reply(
                200,
                f"<p>Registered <b>{html.escape(app['slug'])}</b> (App id {app['id']}).</p>"
                f'<p>Next: <a href="{html.escape(install)}">install it</a> on your repositories; '
                "the terminal says what else to do.</p>",
            )

        def log_message(self, *_):  # the query string holds the code: keep it off the terminal
            pass

    server = http.server.HTTPServer(("127.0.0.1", args.port), Handler)
    print(f"Open http://127.0.0.1:{args.port}/ in a browser on this machine to register the App.")
    while not outcome:
        server.handle_request()
    server.server_close()
    if "error" in outcome:
        sys.exit(f"registration failed: {outcome['error']}")
    app = outcome["app"]
    print(f"\nRegistered GitHub App {app['slug']}: id {app['id']}.")
    print(f"1. Set github_app_id = \"{app['id']}\" in infra/terraform.tfvars and run `make deploy`.")
    print(f"2. Install the App on your repositories: {app['html_url']}/installations/new")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--org", help="register the App in this organization (default: your personal account)")
    parser.add_argument("--name", help="the App's name (unique on GitHub; you can still edit it on GitHub's page)")
    parser.add_argument("--webhook-url", help="default: terraform output github_webhook_url")
    parser.add_argument("--port", type=int, default=8765, help="local port of the redirect page (default 8765)")
    parser.add_argument("--github-url", default="https://github.com", help="GitHub Enterprise Server: https://HOST")
    parser.add_argument("--api-url", default="https://api.github.com", help="GitHub Enterprise Server: https://HOST/api/v3")
    parser.add_argument("--project", help="the Google Cloud project of the secrets (default: gcloud's)")
    parser.add_argument("--out", help="write the secrets to files in this directory instead of Secret Manager")
    parser.add_argument("--print-manifest", action="store_true", help="print the manifest and exit")
    parser.add_argument("--terraform", default="terraform", help="the terraform command (default: terraform)")
    parser.add_argument("--gcloud", default="gcloud", help="the gcloud command (default: gcloud)")
    args = parser.parse_args()
    manifest = build_manifest(args)
    if args.print_manifest:
        print(json.dumps(manifest, indent=2))
        return
    serve(args, manifest)


if __name__ == "__main__":
    main()
