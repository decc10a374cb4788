"""Writes the fuzz targets' seed corpora (fuzz/corpus/<target>/) from the
test fixtures, so that `make fuzz` starts from real inputs: GitHub's webhook
payloads, the fixture and conformance notebooks, tarballs built from them
(GitHub's layout, with links in and out of the checkout), Google's storage
and Pub/Sub samples in each delivery shape, and the demo repository's
nbci.yaml. Run from the repository root: python3 fuzz/seed.py
"""

import base64
import glob
import io
import json
import os
import tarfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")
EVENTS = ["check_suite", "check_run", "pull_request", "push", "ping", "issues"]


def write(target, name, data):
    folder = os.path.join(CORPUS, target)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "seed-" + name), "wb") as handle:
        handle.write(data)


def read(path):
    with open(os.path.join(ROOT, path), "rb") as handle:
        return handle.read()


def webhook_payloads():
    for path in sorted(glob.glob(os.path.join(ROOT, "tests/fixtures/github/*.json"))):
        name = os.path.basename(path)
        event = name.split(".")[0]
        selector = EVENTS.index(event) if event in EVENTS else 0
        with open(path, "rb") as handle:
            write("webhook_payload", name, bytes([selector]) + handle.read())


def notebooks():
    paths = glob.glob(os.path.join(ROOT, "tests/notebooks/**/*.ipynb"), recursive=True)
    paths += glob.glob(os.path.join(ROOT, "tests/conformance/notebooks/**/*.ipynb"), recursive=True)
    for path in sorted(paths):
        with open(path, "rb") as handle:
            write("notebook", os.path.relpath(path, ROOT).replace("/", "_"), handle.read())


def tarballs():
    def build(entries, compressed):
        buffer = io.BytesIO()
        mode = "w:gz" if compressed else "w"
        with tarfile.open(fileobj=buffer, mode=mode, format=tarfile.PAX_FORMAT) as archive:
            top = tarfile.TarInfo("octo-org-hello-abc1234")
            top.type = tarfile.DIRTYPE
            archive.addfile(top)
            for name, kind, payload in entries:
                info = tarfile.TarInfo("octo-org-hello-abc1234/" + name)
                if kind == "file":
                    info.size = len(payload)
                    archive.addfile(info, io.BytesIO(payload))
                elif kind == "link":
                    info.type = tarfile.SYMTYPE
                    info.linkname = payload
                    archive.addfile(info)
                elif kind == "hard":
                    info.type = tarfile.LNKTYPE
                    info.linkname = "octo-org-hello-abc1234/" + payload
                    archive.addfile(info)
        return buffer.getvalue()

    notebook = read("tests/notebooks/pass.ipynb")
    entries = [
        ("a.ipynb", "file", notebook),
        ("nb/b.ipynb", "file", notebook),
        ("nb/alias.ipynb", "link", "b.ipynb"),
        ("evil.ipynb", "link", "/dev/zero"),
        ("up", "link", "../.."),
        ("copy.ipynb", "hard", "a.ipynb"),
    ]
    write("tarball", "github.tar.gz", build(entries, True))
    write("tarball", "git-archive.tar", build(entries, False))
    write("tarball", "one-file.tar.gz", build(entries[:1], True))


def google_events():
    simple = json.loads(read("tests/fixtures/google/storage/v1/StorageObjectDataWorkflows-simple.json"))
    complex_ = json.loads(read("tests/fixtures/google/storage/v1/StorageObjectData-complex.json"))
    push = json.loads(read("tests/fixtures/google/pubsub/v1/MessagePublishedData-duplicatedFields.json"))
    for label, obj in [("simple", simple), ("complex", complex_)]:
        bucket, name = obj.get("bucket", "b"), obj.get("name", "o")
        body = json.dumps(obj).encode()
        binary = (
            "ce-specversion: 1.0\nce-type: google.cloud.storage.object.v1.finalized\n"
            f"ce-source: //storage.googleapis.com/projects/_/buckets/{bucket}\n"
            f"ce-subject: objects/{name}\nce-id: 1\nce-time: 2021-11-25T21:04:32.279Z\n"
            "content-type: application/json\n\n"
        ).encode() + body
        write("gcs_event", label + "-binary", binary)
        structured = {
            "specversion": "1.0", "type": "google.cloud.storage.object.v1.finalized",
            "source": f"//storage.googleapis.com/projects/_/buckets/{bucket}",
            "subject": f"objects/{name}", "id": "1", "time": "2021-11-25T21:04:32.279Z",
            "datacontenttype": "application/json", "data": obj,
        }
        write("gcs_event", label + "-structured",
              b"content-type: application/cloudevents+json\n\n" + json.dumps(structured).encode())
        envelope = json.loads(json.dumps(push))
        envelope["message"]["data"] = base64.b64encode(body).decode()
        envelope["message"]["attributes"] = {
            "bucketId": bucket, "objectId": name, "objectGeneration": str(obj.get("generation", 1)),
            "eventType": "OBJECT_FINALIZE", "payloadFormat": "JSON_API_V1",
        }
        write("gcs_event", label + "-push", b"content-type: application/json\n\n" + json.dumps(envelope).encode())
    write("pushed_message", "upstream", json.dumps(push).encode())
    for label, message in [
        ("finalized", {"type": "finalized", "key": "ci/o/r/sha/nb.ipynb/result.json", "generation": 3}),
    ]:
        envelope = json.loads(json.dumps(push))
        envelope["message"]["data"] = base64.b64encode(json.dumps(message).encode()).decode()
        write("pushed_message", label, json.dumps(envelope).encode())


def pipeline_specs():
    for path in sorted(glob.glob(os.path.join(ROOT, "examples/**/nbci.yaml"), recursive=True)):
        with open(path, "rb") as handle:
            write("pipeline_spec", os.path.relpath(path, ROOT).replace("/", "_"), handle.read())


if __name__ == "__main__":
    webhook_payloads()
    notebooks()
    tarballs()
    google_events()
    pipeline_specs()
    for target in sorted(os.listdir(CORPUS)):
        print(f"{target}: {len(os.listdir(os.path.join(CORPUS, target)))} inputs")
