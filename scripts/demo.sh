#!/usr/bin/env bash
# Demo on a fresh machine (as root): set up, then run a busybox container under pymon the
# way an engine does (pymon starts `runc create`, the engine runs `runc start`), and show
# the container's log and the exit code pymon recorded.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

work=$(mktemp -d /tmp/pymon-demo.XXXXXX)
cid=pymon-demo-$$
.venv/bin/python - "$work" <<'PY'
import sys
from pathlib import Path
sys.path.insert(0, ".")
from tests.fakes.bundle import make_rootfs, runc_spec, write_bundle
work = Path(sys.argv[1])
write_bundle(work / "bundle", make_rootfs(work / "rootfs"), runc_spec(work / "spec"),
             ["sh", "-c", "echo hello from pymon; echo to stderr >&2; printf partial; exit 3"])
PY
mkdir -p "$work/exits"
.venv/bin/pymon --api-version 1 -c "$cid" -u "$cid" -r "$(command -v runc)" \
  -b "$work/bundle" -p "$work/pidfile" -n demo --exit-dir "$work/exits" --full-attach \
  -l "k8s-file:$work/ctr.log" --conmon-pidfile "$work/conmon.pid"
runc start "$cid"
monitor=$(cat "$work/conmon.pid")
while kill -0 "$monitor" 2>/dev/null; do sleep 0.05; done
runc delete "$cid"
echo "--- container log ($work/ctr.log)"
cat "$work/ctr.log"
echo "--- exit code recorded by pymon ($work/exits/$cid): $(cat "$work/exits/$cid")"
