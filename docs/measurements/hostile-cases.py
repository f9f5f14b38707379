"""Hostile-input harness (issue 16): every case a separate `spikegrad` process.

    python docs/measurements/hostile-cases.py WORKDIR

WORKDIR is created (its old contents are removed). A base run is trained there
(`spikegrad train --engine local --epochs 2 --limit-train 64 --limit-test 32`, digits), its
checkpoint edited to epochs_done 1 (so that `--resume` reads everything), and each case works on
a copy of it, a copy of the MNIST files, a copy of a conformance case, or a fresh tiny run.

A case is "OK" when its process ends with exit status 2, its last stderr line starts with
`spikegrad: error:` and stderr holds no "Traceback" (and the case's own extra check holds: an
output that must not be written is not, a file that must not change does not). A few cases may
also end in exit 0 because the input is valid: "ACCEPTED" when that is harmless (the reason is in
the label). A traceback, a timeout, exit status 1, or a silently wrong result is "BAD".
The last line: `N tried, K refused cleanly, F failed (A accepted harmlessly)`.
Needs: Linux, /usr/bin/time (GNU, for peak memory), the project's venv, /work/shared/data/mnist
and /work/shared/conformance (override with SPIKEGRAD_SHARED). No Ray cluster is used.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np

if len(sys.argv) != 2:
    sys.exit("usage: python docs/measurements/hostile-cases.py WORKDIR")
W = Path(sys.argv[1]).resolve()
SHARED = Path(os.environ.get("SPIKEGRAD_SHARED", "/work/shared"))
MNIST = SHARED / "data" / "mnist"
CONFORMANCE = SHARED / "conformance"
_venv_sg = Path(sys.executable).with_name("spikegrad")
SG = str(_venv_sg) if _venv_sg.exists() else (shutil.which("spikegrad") or "spikegrad")
TIME = "/usr/bin/time" if Path("/usr/bin/time").exists() else None
ENV = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # never join a cluster by accident
TIMEOUT = 90
TINY = ["--engine", "local", "--limit-train", "64", "--limit-test", "32", "--epochs", "2", "--quiet"]

shutil.rmtree(W, ignore_errors=True)
W.mkdir(parents=True)
B = W / "base"
counts = {"OK": 0, "ACCEPTED": 0, "BAD": 0}


# -- running and reporting ---------------------------------------------------------------------
class Result:
    def __init__(self, rc, out, err, secs, timed_out, maxrss_kb):
        self.rc, self.out, self.err, self.secs, self.timed_out, self.maxrss_kb = rc, out, err, secs, timed_out, maxrss_kb
        lines = err.strip().splitlines()
        self.last = lines[-1] if lines else ""

    @property
    def refused(self) -> bool:
        return (not self.timed_out and self.rc == 2 and self.last.startswith("spikegrad: error:")
                and "Traceback" not in self.err)


def start(args, mem_file=None):
    cmd = [SG, *map(str, args)]
    if mem_file is not None and TIME:
        cmd = [TIME, "-v", "-o", str(mem_file), *cmd]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV, cwd=W,
                            start_new_session=True, text=True, errors="replace")


def finish(p, t0, timeout, mem_file=None) -> Result:
    timed_out = False
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        try:
            os.killpg(p.pid, signal.SIGKILL)  # the session this case's process leads, nothing else
        except ProcessLookupError:
            pass
        out, err = p.communicate()
    secs = time.monotonic() - t0
    rss = None
    if mem_file is not None and Path(mem_file).exists():
        for line in Path(mem_file).read_text().splitlines():
            if "Maximum resident set size" in line:
                rss = int(line.split(":")[1])
    return Result(-9 if timed_out else p.returncode, out, err, secs, timed_out, rss)


def spawn(args, timeout=TIMEOUT, mem=False) -> Result:
    mem_file = W / ".time.txt" if mem else None
    if mem_file is not None and mem_file.exists():
        mem_file.unlink()
    t0 = time.monotonic()
    return finish(start(args, mem_file), t0, timeout, mem_file)


def report(status, r: Result | None, label, last=None):
    counts[status] += 1
    rc = "-" if r is None else ("timeout" if r.timed_out else r.rc)
    last = (r.last if r is not None else "") if last is None else last
    print(f"{status:<3} rc={rc} {label}: {last[:150]}", flush=True)


def case(args, label, accept=None, check=None, timeout=TIMEOUT, mem=False, show_secs=False):
    """Run one case. ``check(r)`` -> (ok, note): an extra condition on a refusal (and on an
    acceptance). ``accept(r)`` -> (harmless, why): how an exit 0 is judged; without it exit 0 is BAD."""
    r = spawn(args, timeout, mem)
    if mem:
        label += f" [peak RSS {r.maxrss_kb / 1024:.0f} MiB]" if r.maxrss_kb else " [peak RSS unknown]"
    if show_secs or r.timed_out:
        label += f" [{r.secs:.1f} s{', timed out' if r.timed_out else ''}]"
    ok, note = check(r) if check is not None else (True, "")
    if note:
        label += f" [{note}]"
    if r.refused and ok:
        report("OK", r, label)
    elif not r.timed_out and r.rc == 0 and accept is not None and "Traceback" not in r.err:
        harmless, why = accept(r)
        report("ACCEPTED" if harmless and ok else "BAD", r, f"{label} (accepted: {why})")
    else:
        report("BAD", r, label)
    return r


def skip(label, why):
    print(f"SKIP {label}: {why}", flush=True)


# -- run directories ---------------------------------------------------------------------------
def clone(name):
    d = W / name
    shutil.rmtree(d, ignore_errors=True)
    shutil.copytree(B, d, symlinks=True)
    return d


def ckpt_edit(name, fn):
    d = clone(name)
    z = dict(np.load(d / "checkpoint.npz", allow_pickle=False))
    fn(z)
    np.savez(d / "checkpoint.npz", **z)
    return d


def cfg_edit(name, fn, raw=None):
    d = clone(name)
    if raw is not None:
        (d / "config.json").write_bytes(raw)
        return d
    c = json.loads((d / "config.json").read_text())
    fn(c)
    (d / "config.json").write_text(json.dumps(c))
    return d


def epochs_done(d):
    try:
        with np.load(Path(d) / "checkpoint.npz", allow_pickle=False) as z:
            return int(z["epochs_done"])
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return f"unreadable ({type(exc).__name__})"


def resumed_as_configured(d, epochs, why=""):
    def judge(r):
        got = epochs_done(d)
        return got == epochs, f"{why}resumed to epochs_done {got} (config epochs {epochs})"
    return judge


# -- the base run ------------------------------------------------------------------------------
r = spawn(["train", *TINY, "--out", B])
if r.rc != 0:
    sys.exit(f"base run failed (rc {r.rc}):\n{r.err}")
_z = dict(np.load(B / "checkpoint.npz", allow_pickle=False))
_z["epochs_done"] = np.asarray(1)
np.savez(B / "checkpoint.npz", **_z)
BASE_CFG = json.loads((B / "config.json").read_text())

# == the 27 cases of hostile-cases-2026-11-30.md ==============================================
# checkpoints
d = clone("trunc")
raw = (d / "checkpoint.npz").read_bytes()
(d / "checkpoint.npz").write_bytes(raw[:len(raw) // 2])
case(["eval", "--checkpoint", d], "truncated checkpoint eval")
case(["train", "--resume", d], "truncated checkpoint resume")
d = clone("flip")
raw = bytearray((d / "checkpoint.npz").read_bytes())
raw[len(raw) // 3] ^= 0xFF
(d / "checkpoint.npz").write_bytes(raw)
case(["eval", "--checkpoint", d], "flipped byte eval")
case(["eval", "--checkpoint", ckpt_edit("dtype", lambda z: z.update(W0=z["W0"].astype(np.int8)))], "int8 W0")
case(["eval", "--checkpoint", ckpt_edit("cplx", lambda z: z.update(b0=z["b0"].astype(np.complex64)))], "complex b0")
case(["eval", "--checkpoint", ckpt_edit("nanb", lambda z: z["b1"].__setitem__(0, np.nan))], "NaN bias")
case(["eval", "--checkpoint", ckpt_edit("bshape", lambda z: z.update(b0=np.zeros(3, np.float32)))], "wrong-shaped bias")
case(["eval", "--checkpoint", ckpt_edit("str", lambda z: z.update(W0=np.array(["a"])))], "string W0")
case(["train", "--resume", ckpt_edit("ep", lambda z: z.update(epochs_done=np.asarray(-5)))], "epochs_done -5")
case(["train", "--resume", ckpt_edit("pos", lambda z: z.update(position=np.asarray(10**9)))], "position 1e9")
case(["train", "--resume", ckpt_edit("prog", lambda z: z.update(progress=np.asarray("{\"rng\": 5}")))], "bad progress")
# config.json
case(["train", "--resume", cfg_edit("c1", lambda c: c.update(lr="fast"))], "lr string")
case(["train", "--resume", cfg_edit("c2", lambda c: c.update(lr=True))], "lr true")
case(["train", "--resume", cfg_edit("c3", lambda c: c.update(epochs=None))], "epochs null")
case(["train", "--resume", cfg_edit("c4", None, raw=b"{\"a\":" * 100000)], "deep nesting")
case(["train", "--resume", cfg_edit("c5", None, raw=b"\xff\xfe{}")], "invalid utf-8")
case(["train", "--resume", cfg_edit("c6", lambda c: c.update(topology=5))], "topology int")
case(["train", "--resume", cfg_edit("c7", lambda c: c.update(seed=-1))], "seed -1 in config")
case(["train", "--resume", cfg_edit("c8", lambda c: c.update(dataset=["x"]))], "dataset list")
# CLI
case(["train", "--topology", "8x8-99999999C3-10", "--engine", "local", "--out", W / "tb"], "terabyte topology")
case(["train", "--topology", "8x8-" + "9" * 5000 + "-10", "--engine", "local", "--out", W / "tk"], "5000-digit token")
case(["train", "--topology", "８x８-16C3p1-P2-64-10", "--engine", "local", "--out", W / "fw"], "full-width digits")
case(["train", "--topology", "8x8-١٦C3-10", "--engine", "local", "--out", W / "ar"], "arabic-indic digits")
case(["train", "--seed", "-1", "--engine", "local", "--out", W / "sd"], "--seed -1")
case(["train", "--address", "not a host:xx", "--out", W / "ad", "--epochs", "1"], "bad address")
# parquet
d = clone("pq")
(d / "metrics.parquet").write_bytes(b"PAR1garbage")
case(["report", d, "--out", W / "rep"], "corrupt parquet report")
d = clone("pq2")
(d / "traffic.parquet").write_bytes(b"PAR1garbage")
case(["traffic", d], "corrupt traffic parquet")

# == further cases of issue 16 (2026-12-01) ====================================================
# -- a checkpoint member whose .npy header claims 10^12 floats ---------------------------------
def npy_claiming(shape, descr="<f4", data=b"\0" * 16) -> bytes:
    header = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape!r}, }}"
    pad = 64 - (10 + len(header) + 1) % 64
    header = (header + " " * pad + "\n").encode("latin1")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + data


def replace_member(src: Path, dst: Path, member: str, payload: bytes) -> None:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst.with_suffix(".new"), "w") as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, payload if info.filename == member else zin.read(info.filename))
    os.replace(dst.with_suffix(".new"), dst)


HUGE = npy_claiming((1000000, 1000000))
d = clone("huge")
replace_member(d / "checkpoint.npz", d / "checkpoint.npz", "W1.npy", HUGE)
case(["eval", "--checkpoint", d], "npy header claims (10^6, 10^6) float32 (4 TB), eval", mem=True)
case(["train", "--resume", d], "npy header claims (10^6, 10^6) float32 (4 TB), resume", mem=True)


# -- MNIST IDX files: a copy of the data directory with one file replaced -----------------------
def data_copy(name, replace: str, write) -> Path:
    """A copy of the MNIST folder in which ``replace`` (a name without .gz) is removed and
    ``write(folder)`` puts its hostile version there."""
    d = W / "data" / name
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    for f in MNIST.iterdir():
        if not f.name.startswith(replace):
            shutil.copyfile(f, d / f.name)
    write(d)
    return d


def mnist_case(d, label, **kw):
    return case(["train", "--dataset", "mnist", "--data-dir", d, "--engine", "local", "--epochs", "1",
                 "--limit-train", "64", "--limit-test", "32", "--quiet", "--out", W / "runs" / d.name],
                label, mem=True, **kw)


IMG = "train-images-idx3-ubyte"
# 2^22 * 16385 * 268419073 = 2^64 + 2^22: a product in uint64 wraps to 4 MiB, which is what the
# file holds, so a reader that multiplies in 64 bits would accept it.
WRAP_DIMS = (1 << 22, 16385, 268419073)
assert math.prod(WRAP_DIMS) == (1 << 64) + (1 << 22)


def idx(dims, payload_len) -> bytes:
    return struct.pack(">I", 0x803) + b"".join(struct.pack(">I", n) for n in dims) + bytes(payload_len)


d = data_copy("idx-wrap", IMG, lambda d: (d / IMG).write_bytes(idx(WRAP_DIMS, 1 << 22)))
mnist_case(d, "IDX dims (2^22, 16385, 268419073): product 2^64+2^22 wraps to the 4 MiB payload")
d = data_copy("idx-short", IMG, lambda d: (d / IMG).write_bytes(idx((60000, 28, 28), 1000)))
mnist_case(d, "IDX dims (60000, 28, 28) but 1000 payload bytes")


def sparse(d):
    with open(d / IMG, "wb") as f:
        f.truncate(100 << 30)


d = data_copy("idx-sparse", IMG, sparse)
blocks = (d / IMG).stat().st_blocks
mnist_case(d, f"100 GiB sparse file as {IMG} ({blocks} blocks on disk)")
(d / IMG).unlink()

BOMB_GIB = 4


def bomb(d):
    comp, chunk = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS), bytes(1 << 20)
    with open(d / f"{IMG}.gz", "wb") as f:  # one gzip stream, zeros fed 1 MiB at a time
        for _ in range(BOMB_GIB << 10):
            f.write(comp.compress(chunk))
        f.write(comp.flush())


t0 = time.monotonic()
d = data_copy("gzip-bomb", IMG, bomb)
size = (d / f"{IMG}.gz").stat().st_size
mnist_case(d, f"gzip bomb: {size / 2**20:.1f} MiB .gz inflating to {BOMB_GIB} GiB of zeros as {IMG}.gz "
              f"(made in {time.monotonic() - t0:.0f} s)", show_secs=True)
(d / f"{IMG}.gz").unlink()

# -- conformance case files --------------------------------------------------------------------
BASE_CASE = dict(np.load(CONFORMANCE / "dense.npz", allow_pickle=False))


def conf_case(name, edit, label, raw: bytes | None = None):
    f = W / "conformance" / f"{name}.npz"
    f.parent.mkdir(exist_ok=True)
    if raw is not None:
        f.write_bytes(raw)
    else:
        c = {k: v.copy() for k, v in BASE_CASE.items()}
        edit(c)
        np.savez(f, **c)
    out = W / "conformance" / f"{name}.out.npz"

    def nothing_written(r):
        return (not out.exists(), "" if not out.exists() else f"{out.name} was written")
    return case(["conformance", f, "--out", out], label, check=nothing_written)


conf_case("str-x", lambda c: c.update(x=c["x"].astype(str)), "case file: x as strings")
conf_case("str-theta", lambda c: c.update(theta_ff=np.asarray("0.5")), "case file: theta_ff a string")
conf_case("str-W0", lambda c: c.update(W0=np.full(c["W0"].shape, "w")), "case file: W0 strings of W0's shape")
conf_case("str-topo", lambda c: c.update(topology=np.array(["1x12-9-7-4", "x"])), "case file: topology 2 strings")
conf_case("empty", lambda c: c.update(x=c["x"][:0], y=c["y"][:0]), "case file: empty batch (0 samples)")
conf_case("nan-x", lambda c: c["x"].__setitem__((0, 0, 0, 0), np.nan), "case file: NaN input")
conf_case("inf-W0", lambda c: c["W0"].__setitem__((0, 0), np.inf), "case file: inf weight")


(W / "conformance").mkdir(exist_ok=True)
replace_member(CONFORMANCE / "dense.npz", W / "conformance" / "huge-src.npz", "x.npy",
               npy_claiming((1000000, 1000000), "<f8"))
conf_case("huge", None, "case file: x header claims (10^6, 10^6) float64 (8 TB)",
          raw=(W / "conformance" / "huge-src.npz").read_bytes())

# -- truncated Parquet for traffic and report --------------------------------------------------
d = clone("pq-trunc")
metrics = (d / "metrics.parquet").read_bytes()
for extra in ("chips", "traffic"):  # so that traffic gets past "no chips.parquet" and reads them
    (d / f"{extra}.parquet").write_bytes(metrics)
for f in d.glob("*.parquet"):
    f.write_bytes(f.read_bytes()[:f.stat().st_size // 2])
case(["traffic", d], "traffic: every .parquet truncated to half (chips/traffic.parquet planted)")
case(["report", d, "--out", W / "rep-trunc"], "report: every .parquet truncated to half")
d = clone("pq-trunc1")
(d / "metrics.parquet").write_bytes(metrics[:-1])
case(["report", d, "--out", W / "rep-trunc1"], "report: metrics.parquet missing its last byte")
d = clone("pq-trunc2")
for extra in ("chips", "traffic"):
    (d / f"{extra}.parquet").write_bytes(metrics[:-1])
case(["traffic", d], "traffic: chips/traffic.parquet missing their last byte")

# -- eval --checkpoint on what is not a checkpoint ---------------------------------------------
(W / "empty-dir").mkdir()
case(["eval", "--checkpoint", W / "empty-dir"], "eval: empty directory")
d = clone("no-ckpt")
(d / "checkpoint.npz").unlink()
case(["eval", "--checkpoint", d], "eval: run directory without checkpoint.npz")
case(["eval", "--checkpoint", B / "checkpoint.npz"], "eval: --checkpoint is a file, not a directory")
d = clone("devzero")
(d / "checkpoint.npz").unlink()
(d / "checkpoint.npz").symlink_to("/dev/zero")
case(["eval", "--checkpoint", d], "eval: checkpoint.npz a symlink to /dev/zero", timeout=60, show_secs=True)
d = clone("ckpt-link")
(d / "checkpoint.npz").unlink()
(d / "checkpoint.npz").symlink_to(B / "checkpoint.npz")
case(["eval", "--checkpoint", d], "eval: checkpoint.npz a symlink to a valid checkpoint elsewhere",
     accept=lambda r: (True, "the symlink is followed for reading only (is_file() follows links); nothing is written"))

# -- an address where no cluster answers -------------------------------------------------------
def within_20s(r):
    return r.secs <= 20, "" if r.secs <= 20 else "took more than 20 s"


case(["train", "--address", "127.0.0.1:1", "--epochs", "1", "--limit-train", "64", "--limit-test", "32",
      "--quiet", "--out", W / "addr"], "--address 127.0.0.1:1 (nothing listens)", check=within_20s,
     timeout=120, show_secs=True)

# -- config.json before --resume (base config: epochs 2; the checkpoint: epochs_done 1) --------
cfg_text = (B / "config.json").read_text()
assert '"lr": 0.0001,' in cfg_text and cfg_text.startswith("{")
case(["train", "--resume", cfg_edit("j-list", None, raw=b"[1, 2, 3]")], "config.json a JSON list")
case(["train", "--resume", cfg_edit("j-str", None, raw=b'"digits"')], "config.json a JSON string")
case(["train", "--resume", cfg_edit("j-ws", None, raw=b" " * (10 << 20))], "config.json 10 MB of whitespace")
d = cfg_edit("j-ws-pad", None, raw=b" " * (5 << 20) + cfg_text.encode() + b"\n" * (5 << 20))
case(["train", "--resume", d], "config.json valid but padded to 10 MB with whitespace",
     accept=resumed_as_configured(d, 2, "whitespace around an object is valid JSON; "))
d = cfg_edit("j-dup", None, raw=("{\"epochs\": 3, " + cfg_text.strip()[1:]).encode())
case(["train", "--resume", d], "config.json keys duplicated (\"epochs\": 3 first, then \"epochs\": 2)",
     accept=lambda r, d=d: (epochs_done(d) == 2, "JSON leaves duplicate names undefined; the last one wins, as in "
                           f"json.loads: resumed to epochs_done {epochs_done(d)}"))
d = cfg_edit("j-unknown", lambda c: c.update(colour="blue"))
case(["train", "--resume", d], "config.json unknown key \"colour\"", accept=resumed_as_configured(d, 2))
case(["train", "--resume", cfg_edit("j-huge", lambda c: c.update(epochs=10**30))], "config.json epochs 10**30",
     timeout=60)
case(["train", "--resume", cfg_edit("j-ep0", lambda c: c.update(epochs=0))], "config.json epochs 0")
case(["train", "--resume", cfg_edit("j-bs0", lambda c: c.update(batch_size=0))], "config.json batch_size 0")
case(["train", "--resume", cfg_edit("j-neglr", lambda c: c.update(lr=-0.1))], "config.json lr -0.1")
case(["train", "--resume", cfg_edit("j-nanlr", None, raw=cfg_text.replace('"lr": 0.0001', '"lr": NaN').encode())],
     "config.json lr NaN (literal)")
case(["train", "--resume", cfg_edit("j-f16", lambda c: c.update(dtype="float16"))], "config.json dtype float16")

# -- flags of a fresh run ----------------------------------------------------------------------
def flags(name, **over):
    opts = {"--engine": "local", "--limit-train": "64", "--limit-test": "32", "--epochs": "2",
            "--out": str(W / "cli" / name), **over}
    return ["train", "--quiet", *[x for kv in opts.items() for x in kv]]


def no_run_left(name):
    def judge(r):
        p = W / "cli" / name
        left = p.exists() and any(p.iterdir())
        return not left, f"{p.name} left with {sorted(x.name for x in p.iterdir())}" if left else ""
    return judge


case(flags("ep0", **{"--epochs": "0"}), "--epochs 0", check=no_run_left("ep0"))
case(flags("ep1e3", **{"--epochs": "1e3"}), "--epochs 1e3")
case(flags("ep1e30", **{"--epochs": str(10**30)}), "--epochs 10**30 (as digits)", timeout=60)
case(flags("bsm1", **{"--batch-size": "-1"}), "--batch-size -1", check=no_run_left("bsm1"))
case(flags("lrnan", **{"--lr": "nan"}), "--lr nan", check=no_run_left("lrnan"))
case(flags("lrinf", **{"--lr": "inf"}), "--lr inf", check=no_run_left("lrinf"))
case(flags("topo-empty", **{"--topology": ""}), "--topology ''", check=no_run_left("topo-empty"))
case(flags("topo-0c", **{"--topology": "8x8-0C3-10"}), "--topology 8x8-0C3-10", check=no_run_left("topo-0c"))
victim = W / "cli" / "a-file.txt"
victim.parent.mkdir(exist_ok=True)
victim.write_text("not a run directory\n")


def victim_kept(r):
    same = victim.is_file() and victim.read_text() == "not a run directory\n"
    return same, "" if same else "the file was changed or removed"


case(flags("x", **{"--out": str(victim)}), "--out an existing regular file", check=victim_kept)
if os.geteuid() == 0:
    skip("--out inside a read-only (555) directory", "running as root: permissions are not enforced")
else:
    ro = W / "cli" / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    case(flags("x", **{"--out": str(ro / "run")}), "--out inside a read-only (555) directory")
    ro.chmod(0o755)
case(flags("nodata", **{"--dataset": "mnist", "--data-dir": str(W / "no-such-dir")}),
     "--dataset mnist --data-dir that does not exist", check=no_run_left("nodata"))
case(flags("lt0", **{"--limit-train": "0"}), "--limit-train 0", check=no_run_left("lt0"))

# -- two runs with the same --out ----------------------------------------------------------------
out = W / "concurrent"
first_args = ["train", "--engine", "local", "--limit-train", "256", "--limit-test", "32", "--epochs", "40",
              "--batch-size", "8", "--quiet", "--out", out]
t0 = time.monotonic()
first = start(first_args)
lock = out / ".lock"
while time.monotonic() - t0 < 60 and first.poll() is None:
    if lock.exists() and lock.read_text().strip() == str(first.pid):
        break
    time.sleep(0.05)
second = spawn(["train", *TINY, "--out", out])
still_running = first.poll() is None
first_r = finish(first, t0, TIMEOUT)
named = f"PID {first.pid}" in second.last
ok = second.refused and named and still_running and first_r.rc == 0 and epochs_done(out) == 40
why = [] if ok else [w for w, bad in (
    (f"second rc {second.rc}", not second.refused), ("second's error does not name the first's PID", not named),
    ("the first had ended before the second was refused", not still_running),
    (f"first rc {first_r.rc}", first_r.rc != 0), (f"first's epochs_done {epochs_done(out)}", epochs_done(out) != 40)) if bad]
report("OK" if ok else "BAD", second, f"two runs, same --out (first PID {first.pid}, 40 epochs, ended rc "
       f"{first_r.rc} after {first_r.secs:.1f} s{'; ' + '; '.join(why) if why else ''})")
# the same, but the second is `--resume` of the directory the first is still writing
t0 = time.monotonic()
out2 = W / "concurrent2"
first = start([*first_args[:-1], out2])
while time.monotonic() - t0 < 60 and first.poll() is None:
    if (out2 / "config.json").exists() and (out2 / "checkpoint.npz").exists():
        break
    time.sleep(0.05)
second = spawn(["train", "--resume", out2])
still_running = first.poll() is None
first_r = finish(first, t0, TIMEOUT)
named = f"PID {first.pid}" in second.last
ok = second.refused and named and still_running and first_r.rc == 0 and epochs_done(out2) == 40
report("OK" if ok else "BAD", second, f"--resume of a run still training (first PID {first.pid}, ended rc "
       f"{first_r.rc}{'' if still_running else '; the first had ended before the second was refused'})")

# -- a symlink planted at the temporary names ---------------------------------------------------
PRECIOUS = "precious, do not overwrite\n"


def planted(d):
    target = W / f"victim-{d.name}.txt"
    target.write_text(PRECIOUS)
    for name in ("checkpoint.npz.tmp", ".checkpoint.npz.tmp", "config.json.tmp"):
        if (d / name).exists() or (d / name).is_symlink():
            (d / name).unlink()
        (d / name).symlink_to(target)
    return target


def symlink_case(args, d, target, label):
    r = spawn(args)
    kept = target.read_text() == PRECIOUS
    ck = d / "checkpoint.npz"
    real = ck.is_file() and not ck.is_symlink()
    ok = r.rc == 0 and "Traceback" not in r.err and kept and real
    note = "target unchanged" if kept else "TARGET OVERWRITTEN"
    report("OK" if ok else "BAD", r, f"{label} ({note}; checkpoint.npz {'a regular file' if real else 'missing or a link'})",
           r.last or "(no stderr)")


d = W / "symlink-fresh"
d.mkdir()
target = planted(d)
symlink_case(["train", *TINY, "--out", d], d, target,
             "symlinks at checkpoint.npz.tmp etc. in an empty --out, fresh run (rc 0 expected)")
d = clone("symlink-resume")
target = planted(d)
symlink_case(["train", "--resume", d], d, target, "symlinks at checkpoint.npz.tmp etc., --resume (rc 0 expected)")

# == issue 27: every command that reads a run, on every checkpoint and config case; every file a flag names ==
def readers(d, tag, checkpoint=True, config=True):
    """The same damaged run directory through every command that reads it."""
    cmds = []
    if checkpoint or config:
        cmds += [(["eval", "--checkpoint", d], "eval"), (["verify", "--checkpoint", d, "--samples", "4", "--workers", "1"],
                                                          "verify"),
                 (["export", d, "--to", W / f"{Path(d).name}.nir"], "export"), (["train", "--resume", d], "resume")]
    if config:
        cmds += [(["report", d, "--out", W / f"rep-{Path(d).name}"], "report"), (["traffic", d], "traffic"),
                 (["forecast", d], "forecast"), (["plan", d, "--nodes", "2"], "plan")]
    for args, what in cmds:
        if what == "export" and tag == "checkpoint, position 1e9":  # the position needs the data to check
            case(args, f"{tag}: {what}", accept=lambda r: (True, "export writes the weights only; whether a "
                                                           "position fits the data is checked by the commands "
                                                           "that load it (resume, eval, verify)"))
            continue
        case(args, f"{tag}: {what}")


def bomb_member(z):
    import io  # noqa: PLC0415 (the harness's own helper)
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.zeros(2, np.float32))
    return buf.getvalue() + bytes(64 << 20)


d = clone("c-bomb")
with zipfile.ZipFile(d / "checkpoint.npz", "a", zipfile.ZIP_DEFLATED) as zf:
    zf.writestr("zz.npy", bomb_member(None))
CKPT_CASES = {
    "truncated checkpoint": "trunc", "flipped byte": "flip", "int8 W0": "dtype", "complex b0": "cplx",
    "NaN bias": "nanb", "wrong-shaped bias": "bshape", "string W0": "str", "epochs_done -5": "ep",
    "position 1e9": "pos", "bad progress record": "prog", "a member inflating to 64 MiB beyond its header": "c-bomb",
    "a header claiming 4 TB": "huge", "a symlink to /dev/zero": "devzero", "no checkpoint.npz": "no-ckpt",
}
for label, name in CKPT_CASES.items():
    if (W / name).exists():
        readers(W / name, f"checkpoint, {label}", config=False)
readers(ckpt_edit("c-fmt", lambda z: z.update(format=np.asarray(99))), "checkpoint of format 99", config=False)
readers(ckpt_edit("c-fmtstr", lambda z: z.update(format=np.asarray("2"))), "checkpoint format a string", config=False)
for label, name, fn, raw in [
        ("config.json format 99", "j-fmt", lambda c: c.update(format=99), None),
        ("config.json format a string", "j-fmts", lambda c: c.update(format="2"), None),
        ("config.json lr a string", "j-lrs", lambda c: c.update(lr="fast"), None),
        ("config.json a JSON list", "j-list2", None, b"[1, 2, 3]"),
        ("config.json invalid UTF-8", "j-utf", None, b"\xff\xfe{}"),
        ("config.json chip_neurons 0", "j-cn0", lambda c: c.update(engine="chips", chip_neurons=0, chip_synapses=5),
         None)]:
    readers(cfg_edit(name, fn, raw=raw), label, checkpoint=False)
d = clone("t-fmt")  # a table stamped with a newer format
import pyarrow.parquet as pq  # noqa: E402 (the harness's own import, after its setup)
tbl = pq.read_table(d / "layers.parquet")
pq.write_table(tbl.replace_schema_metadata({b"spikegrad.format": b"99"}), d / "layers.parquet")
for args, what in [(["traffic", d], "traffic"), (["report", d, "--out", W / "rep-tfmt"], "report"),
                   (["forecast", d], "forecast")]:
    case(args, f"layers.parquet of format 99: {what}")

# files that flags name
big = W / "big.json"
big.write_text("{\"synop\": 1" + " " * (2 << 20) + "}")
for label, content in [("not JSON", "{synop: 1"), ("a list", "[1]"), ("NaN", '{"synop": NaN}'),
                       ("negative", '{"synop": -1}'), ("unknown key", '{"synopz": 1}'),
                       ("low above value", '{"synop": {"value": 1, "low": 2}}'), ("a boolean", '{"synop": true}')]:
    f = W / f"energy-{label.replace(' ', '-')}.json"
    f.write_text(content)
    case(["traffic", B, "--energy", f], f"traffic --energy FILE: {label}")
case(["traffic", B, "--energy", big], "traffic --energy FILE: over 1 MiB")
case(["traffic", B, "--energy", W], "traffic --energy a directory")
case(["traffic", B, "--energy", W / "none.json"], "traffic --energy a file that does not exist")
case(["traffic", B, "--placement", "0.0.0.0,0.0.0.0"], "traffic --placement: two chips on one place")
case(["traffic", B, "--placement", "a.b.c.d"], "traffic --placement not integers")
case(["traffic", B, "--board", "0x4"], "traffic --board 0x4")
case(["map", "--topology", "mnist", "--chip", "loihi", "--figure", W], "map --figure a directory")
case(["map", "--topology", "mnist", "--chip", "loihi", "--figure", W / "no-dir" / "f.png"],
     "map --figure in a folder that does not exist")
case(["export", B, "--to", W], "export --to a directory")
case(["export", B, "--to", W / "no-dir" / "m.nir"], "export --to a folder that does not exist")
for f, content in [("t.nir", b"\x89HDF\r\n\x1a\n" + bytes(100)), ("e.nir", b"")]:
    (W / f).write_bytes(content)
    case(["train", "--topology", W / f, "--engine", "local", "--epochs", "1", "--out", W / f"from-{f}"],
         f"train --topology {f} (damaged HDF5)", check=no_run_left(f"from-{f}"))
    case(["eval", "--checkpoint", W / f], f"eval --checkpoint {f} (damaged HDF5)")
case_file = next((f for f in sorted(CONFORMANCE.glob("*.npz")) if not f.name.endswith(".expected.npz")), None)
if case_file is not None:
    bad_exp = W / "bad.expected.npz"
    bad_exp.write_bytes(b"PK\x03\x04" + bytes(40))
    case(["conformance", case_file, "--out", W / "conf-out.npz", "--expected", bad_exp],
         "conformance --expected a damaged .npz")
    case(["conformance", case_file, "--out", W / "conf-out2.npz", "--expected", W],
         "conformance --expected a directory")
    case(["conformance", case_file, "--out", W], "conformance --out a directory")
    case(["conformance", case_file, "--out", W / "no-dir" / "o.npz"], "conformance --out in a missing folder",
         accept=lambda r: ((W / "no-dir" / "o.npz").is_file(), "the folder is made, as a run's --out is"))
else:
    skip("conformance --expected / --out cases", f"no conformance cases at {CONFORMANCE}")

# ------------------------------------------------------------------------------------------------
n = sum(counts.values())
print(f"{n} tried, {counts['OK']} refused cleanly, {counts['BAD']} failed ({counts['ACCEPTED']} accepted harmlessly)")
