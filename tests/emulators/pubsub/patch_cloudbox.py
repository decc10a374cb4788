"""Makes the pinned cloudbox importable on Python 3.13, and checks that it did.

cloudbox declares Python >= 3.14, where annotations are evaluated lazily
(PEP 649). Python 3.13 evaluates them when a `def` runs, and
`cloudbox/core/store.py` annotates `NamespacedStore.keys(...) -> list[str]`
in a class that defines a method named `list`: there `list` is that method,
so `list[str]` raises `TypeError: 'function' object is not subscriptable` at
import. `from __future__ import annotations` (PEP 563) keeps annotations as
strings, which is what 3.14 does in effect. Of the modules the Pub/Sub
service imports (see serve.py), that one is the only one that needs it.

The step refuses to guess: the installed cloudbox must be the pinned
version, and each file must be byte for byte the released one or the one this
script writes (sha256 below); anything else stops with an error naming the
file, so a different release is never patched blindly. Patching twice is a
no-op. Last, a fresh interpreter imports what serve.py runs, so an
incomplete patch fails here, at setup, and not in a test.

Run with the emulator's own interpreter: .emulators/pubsub/bin/python patch_cloudbox.py
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import pathlib
import subprocess
import sys

VERSION = "0.2.3"
FUTURE = "from __future__ import annotations\n"
# Where the future import goes: before the first import of the module, after
# its docstring (a __future__ import must come before any other statement).
ANCHOR = "import json\n"
# path in the package -> (sha256 as released, sha256 once patched)
FILES = {
    "core/store.py": (
        "4268f461ff74600dff21a33b2420b2ee901a317447fe4ff57cce2b1a4400e95f",
        "fa7da79f292645abe84d95f45f0b0c8e5083b8bad9933034e9e62cdaee72a0a4",
    ),
}
# What serve.py imports: it must import cleanly once patched.
MODULES = ["cloudbox.services.pubsub.app", "cloudbox.services.pubsub.grpc_server"]


def fail(message: str) -> None:
    sys.exit(f"patch_cloudbox: {message}")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def main() -> None:
    try:
        installed = importlib.metadata.version("cloudbox")
    except importlib.metadata.PackageNotFoundError:
        fail("cloudbox is not installed in this interpreter")
    if installed != VERSION:
        fail(f"cloudbox {installed} is installed; this patch is for {VERSION} only")
    spec = importlib.util.find_spec("cloudbox")
    if spec is None or spec.origin is None:
        fail("cannot locate the cloudbox package")
    package = pathlib.Path(spec.origin).parent

    for relative, (released, patched) in FILES.items():
        path = package / relative
        source = path.read_bytes()
        digest = sha256(source)
        if digest == patched:
            print(f"patch_cloudbox: {relative} already patched")
            continue
        if digest != released:
            fail(f"{relative} is not the file cloudbox {VERSION} released (sha256 {digest})")
        text = source.decode("utf-8")
        if text.count(ANCHOR) < 1:
            fail(f"{relative}: no line {ANCHOR.strip()!r} to put the import before")
        text = text.replace(ANCHOR, FUTURE + ANCHOR, 1)
        if sha256(text.encode("utf-8")) != patched:
            fail(f"{relative}: the patched file is not the expected one")
        path.write_text(text, encoding="utf-8")
        print(f"patch_cloudbox: {relative} patched")

    check = subprocess.run(
        [sys.executable, "-c", "import " + ", ".join(MODULES)],
        capture_output=True,
        text=True,
    )
    if check.returncode != 0:
        fail(f"the patched cloudbox still does not import:\n{check.stderr}")
    print(f"patch_cloudbox: cloudbox {VERSION} imports on Python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
