"""The demo behind scripts/demo.sh: run a busybox container under pymon exactly as podman
does (sync and start socketpairs, `runc start` once the pid has arrived), then show what
pymon recorded."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fakes.bundle import RUNC, make_rootfs, runc_spec, write_bundle
from tests.fakes.engine import Session

work = Path(tempfile.mkdtemp(prefix="pymon-demo-"))
bundle = write_bundle(work / "bundle", make_rootfs(work / "rootfs"), runc_spec(work / "spec"),
                      ["sh", "-c", ("echo hello from pymon; echo to stderr >&2; "
                                    "printf 'no newline'; exit 3")])
(work / "exits").mkdir()
cid = "pymon-demo-" + uuid.uuid4().hex[:8]
argv = ["--api-version", "1", "-c", cid, "-u", cid, "-r", RUNC, "-b", str(bundle),
        "-p", str(work / "pidfile"), "-n", "demo", "--exit-dir", str(work / "exits"),
        "--full-attach", "-l", f"k8s-file:{work}/ctr.log", "--conmon-pidfile",
        str(work / "conmon.pid")]
print("$ pymon " + " ".join(argv))
session = Session(argv, conmon_pidfile=str(work / "conmon.pid"))
print(f"first process exited {session.wait_p0()}; sync pipe: {session.read_sync()!r}")
subprocess.run([RUNC, "start", cid], check=True)
session.wait_monitor()
subprocess.run([RUNC, "delete", cid], check=True)
session.close()
print(f"--- container log ({work}/ctr.log)")
sys.stdout.write((work / "ctr.log").read_text())
print(f"--- exit code recorded by pymon ({work}/exits/{cid}): {(work / 'exits' / cid).read_text()}")
