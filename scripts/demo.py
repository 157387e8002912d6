"""`make demo`: start the local platform, deploy the examples, send sample predictions, show `thrifty get`, stop.

Runs the real CLI, exactly as a user would type it, against a platform folder of its own
($THRIFTY_DEMO_HOME, default .thrifty/demo), so it never touches ~/.thrifty.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
THRIFTY = str(Path(sys.executable).parent / "thrifty")
EXAMPLES = ["echo", "iris", "embeddings", "translator", "textgen"]


def sh(*args: str, check: bool = True) -> int:
    print(f"\n$ thrifty {shlex.join(args)}", flush=True)
    return subprocess.run([THRIFTY, *args], cwd=ROOT, check=check).returncode


def main() -> int:
    home = os.environ.get("THRIFTY_DEMO_HOME", str(ROOT / ".thrifty" / "demo"))
    os.environ["THRIFTY_HOME"] = home
    port = os.environ.get("THRIFTY_DEMO_PORT", "8888")
    sh("down", check=False)
    shutil.rmtree(home, ignore_errors=True)  # the demo's own platform folder: start from nothing each time
    sh("up", "--port", port)
    try:
        for name in EXAMPLES:
            sh("deploy", f"examples/{name}")
        sh("predict", "echo", "examples/echo/sample.json")
        sh("predict", "iris", "examples/iris/sample.json")
        sh("predict", "iris-batch", "examples/iris/sample.json")
        print(f"\n$ curl -X POST localhost:{port}/embeddings -d @examples/embeddings/sample.json | head -c 200")
        out = subprocess.run(
            ["curl", "-s", "-X", "POST", f"localhost:{port}/embeddings", "-d", "@examples/embeddings/sample.json"],
            cwd=ROOT, capture_output=True, check=True,
        ).stdout  # fmt: skip
        print(out[:200].decode(errors="replace") + " ...")
        # A multi-model API: 57 models, 8 in memory per replica, loaded on demand.
        sh("predict", "translator", "-m", "en-fr", "examples/translator/sample.json")
        sh("predict", "translator", "-m", "en-fr", "-v", "1", "--data", '{"text": "hello"}')
        sh("predict", "translator", "-m", "fr-en", "--data", '{"text": "obxxw"}')
        for pair in ("de-en", "es-it", "it-sv", "nl-pt", "sv-fr", "pt-de", "fr-es", "en-nl", "it-de", "de-sv"):
            url = f"localhost:{port}/translator/{pair}"
            subprocess.run(["curl", "-s", "-o", "/dev/null", "-X", "POST", url, "-d", '{"text": "hi"}'], check=True)
        # A generator predictor: tokens stream one by one as they are produced.
        sh("predict", "textgen", "examples/textgen/sample.json", "--stream")
        time.sleep(1.5)  # the gateway asks replicas which models they hold once a second
        sh("get")
        sh("get", "iris")
        sh("get", "translator")
    finally:
        sh("down", check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
