"""The ``spikegrad`` command line: train, eval, export, conformance, traffic, forecast, verify, bench, report,
map, plan, hosts.

Bad input of any kind ends with one line ``spikegrad: error: ...`` on stderr and
exit status 2, never a traceback. Progress goes to stderr; ``--json`` prints one
JSON line of final metrics on stdout.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from cluster.errors import SpikeGradError
from cluster.events import ORDERS
from cluster.network import GRADIENT_MODES
from cluster.topology import PRESETS

from .data import DATASETS
from .run.config import BACKENDS, DTYPES, ENGINES, PLACEMENTS, SCHEDULES, TRANSPORTS, WIRES
from .run.supervise import supervise, supervised, tell


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad option in one line instead of usage + message, and takes no
    abbreviated option (a misspelled ``--chip-neuron`` is refused, not read as ``--chip-neurons``);
    its subcommands are parsers of the same class."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise SpikeGradError(f"{message} (see '{self.prog} --help')")


def _int_at_least(minimum: int):
    """An argparse type: an integer >= minimum."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if v < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {v}")
        return v
    return parse


_positive_int, _nonnegative_int = _int_at_least(1), _int_at_least(0)


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return v


def _add_train(sub: argparse._SubParsersAction) -> None:
    from .run.config import DATASET_DEFAULTS  # noqa: PLC0415  (a command loads only what it runs: --help and the light commands stay quick)

    def flags(d: dict) -> str:
        return ", ".join(f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}") for k, v in d.items())

    defaults = "\n".join(f"  {name}: {flags(d)}" for name, d in DATASET_DEFAULTS.items())
    p = sub.add_parser("train", help="train a network (default: digits, embedded, no download)",
                       description="Train a SpikeGrad network. Flags not given take the dataset's "
                                   "defaults (launch/run/config.py, README).",
                       epilog=f"per-dataset defaults:\n{defaults}",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=DATASETS, help="default: digits")
    p.add_argument("--data-dir", help="directory holding the dataset files (mnist, cifar10)")
    p.add_argument("--download", action="store_true", help="fetch missing dataset files first")
    p.add_argument("--topology", help=f"preset ({', '.join(PRESETS)}), string like 28x28-15C5-P2-10, or a NIR "
                                      f"graph FILE.nir (its topology, theta_ff and weights)")
    p.add_argument("--init-from", metavar="FILE.nir",
                   help="start from a NIR graph's weights (its topology unless --topology gives the same one)")
    p.add_argument("--epochs", type=_positive_int)
    p.add_argument("--batch-size", type=_positive_int)
    p.add_argument("--lr", type=_positive_float, help="learning rate on the batch sum; eta = lr/alpha")
    p.add_argument("--momentum", type=float, help="0 = plain SGD as in Algorithm 3")
    p.add_argument("--schedule", choices=SCHEDULES)
    p.add_argument("--alpha", type=_positive_float, help="error scale of the top layer")
    p.add_argument("--theta-ff", type=_positive_float, help="forward threshold")
    p.add_argument("--theta-bp", type=_positive_float, help="error threshold (default: theta-ff)")
    p.add_argument("--gradient", choices=GRADIENT_MODES)
    p.add_argument("--seed", type=_nonnegative_int)
    p.add_argument("--limit-train", type=_positive_int, help="use the first N training images")
    p.add_argument("--limit-test", type=_positive_int, help="use the first N test images")
    p.add_argument("--shift", type=_nonnegative_int, metavar="PIXELS",
                   help="augmentation: move each training image by a random whole number of pixels, "
                        "up to this many in each direction, every epoch (default 0: none)")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="augmentation: mirror each training image left-right with probability 1/2, every "
                        "epoch (with --shift P this is CIFAR's pad-P-and-crop plus flip)")
    p.add_argument("--validation", type=_nonnegative_int, metavar="N",
                   help="hold out the last N training images and score them after every epoch (default 0)")
    p.add_argument("--engine", choices=ENGINES,
                   help="'chips' (default): every layer a Ray actor; 'local': one process")
    p.add_argument("--chips", help="layer groups per chip, e.g. 0-1,2-3,4,5 (default: one layer per chip)")
    _add_capacity(p)
    p.add_argument("--replicas", type=_positive_int, help="data-parallel copies of the chip pipeline")
    p.add_argument("--placement", choices=PLACEMENTS, help="chips packed on few nodes or spread")
    p.add_argument("--micro-batch", type=_positive_int, help="samples per micro-batch on chips")
    p.add_argument("--wire", choices=WIRES,
                   help="chips exchange spike counts per micro-batch (default) or the spiking network's "
                        "address events, wave by wave")
    _add_transport(p)
    p.add_argument("--address", help="Ray cluster to join (default: RAY_ADDRESS, else a private local one)")
    p.add_argument("--allow-no-auth", action="store_true",
                   help="let the private Ray instance start with RAY_AUTH_MODE=disabled (no token gate: any "
                        "process reaching its ports can run code in it); refused without this flag")
    p.add_argument("--backend", choices=BACKENDS)
    p.add_argument("--cuda-graph", action=argparse.BooleanOptionalAction, default=None,
                   help="with --backend cupy and --engine local: replay each full batch's step as one CUDA "
                        "graph (default on; --no-cuda-graph runs every kernel from Python)")
    p.add_argument("--dtype", choices=DTYPES)
    p.add_argument("--weight-frac-bits", type=_positive_int,
                   help="keep weights and biases on a 2^-K grid (nearest rounding after each update)")
    p.add_argument("--checkpoint-every", type=_positive_int, metavar="N",
                   help="also checkpoint every N batches (default: at each epoch end only)")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue a stopped run from its last checkpoint, with its own config.json "
                        "(no other training options)")
    p.add_argument("--out", help="run directory: a path, or a URI on shared storage (s3://bucket/run, gs://, hdfs://, "
                                 "file://; default runs/<dataset>-<gradient>-s<seed>-<time>)")
    p.add_argument("--json", action="store_true", help="print the final metrics as one JSON line")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a run directory's checkpoint (or a NIR graph) on its test set")
    p.add_argument("--checkpoint", required=True, help="run directory, or a NIR graph FILE.nir")
    p.add_argument("--dataset", choices=DATASETS, help="with FILE.nir: the test set (default: the graph's metadata)")
    p.add_argument("--data-dir")
    p.add_argument("--limit-test", type=_positive_int)
    p.add_argument("--backend", choices=BACKENDS)
    p.add_argument("--json", action="store_true")


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a run's network as a NIR graph (HDF5) for other simulators")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--to", required=True, metavar="FILE.nir", help="the NIR file to write")
    p.add_argument("--json", action="store_true")


def _add_conformance(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("conformance", help="one training step of a case file, all docs/design.md §4 arrays")
    p.add_argument("case", help="CASE.npz")
    p.add_argument("--out", required=True, help="OUT.npz to write")
    p.add_argument("--backend", choices=BACKENDS, default="numpy")
    p.add_argument("--expected", help="compare with this .npz and fail on any difference > 1e-9")


def _add_verify(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help="event-driven SNN vs equivalent ANN on real test images")
    p.add_argument("--checkpoint", required=True, help="run directory")
    p.add_argument("--samples", type=_positive_int, default=1000)
    p.add_argument("--data-dir")
    p.add_argument("--no-residual", action="store_true", help="leave out the residual phases (Eqs. 16, 19)")
    p.add_argument("--order", choices=tuple(ORDERS), default="waves",
                   help="event order of the simulation (README: The spiking network, event by event)")
    p.add_argument("--seed", type=_nonnegative_int, default=0, help="seed of the random order")
    p.add_argument("--input", choices=("whole", "continuous"), default="whole",
                   help="layer 0's input current all at t = 0 (default), or spread over --input-steps steps")
    p.add_argument("--input-steps", type=_positive_int, default=8,
                   help="time steps of the continuous input, a power of two (default 8)")
    p.add_argument("--workers", type=_positive_int,
                   help="processes simulating chunks of 100 images side by side (default: one per core)")
    p.add_argument("--forward-only", action="store_true",
                   help="simulate the forward pass alone: S and the spike counts n, n_min (no E, no ω)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", action="store_true")


def _add_transport(p: argparse.ArgumentParser, default: str | None = None) -> None:
    p.add_argument("--transport", choices=TRANSPORTS, default=default,
                   help="how chips pass messages: shm (through /dev/shm between chips on one node, through Ray "
                        "across nodes), ray (Ray's object store only), auto (shm where a node has a writable "
                        "/dev/shm; the default)")


def _add_capacity(p: argparse.ArgumentParser) -> None:
    from cluster.mapping import PROFILES  # noqa: PLC0415  (a command loads only what it runs: --help and the light commands stay quick)

    p.add_argument("--chip", choices=tuple(PROFILES),
                   help="a chip profile with its published per-core and per-chip limits (cluster/hardware.py); "
                        "the network is mapped onto such chips")
    p.add_argument("--chip-cores", type=_positive_int, help="cores per chip of the --chip profile (a smaller chip "
                   "of that kind)")
    p.add_argument("--chip-neurons", type=_positive_int, help="a chip of your own: its neurons (with "
                   "--chip-synapses)")
    p.add_argument("--chip-synapses", type=_positive_int, help="a chip of your own: its synapses, i.e. stored "
                   "weights, copies included")


def _add_map(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("map", help="map a network onto chips with a capacity and print the table (no training)")
    p.add_argument("--topology", default="mnist", help=f"preset ({', '.join(PRESETS)}) or topology string")
    _add_capacity(p)
    p.add_argument("--compartments", type=int, choices=(1, 2), default=2,
                   help="compartments per neuron: 2 for learning (V and U, the default), 1 for inference")
    p.add_argument("--figure", metavar="PNG", help="also draw each chip's fill per limit into this PNG file")
    p.add_argument("--json", action="store_true")


def _board(text: str) -> tuple[int, int]:
    try:
        cols, rows = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected COLUMNSxROWS of chips, e.g. 8x4, got {text!r}") from None
    if not (1 <= cols <= 1024 and 1 <= rows <= 1024):
        raise argparse.ArgumentTypeError(f"expected 1-1024 columns and rows, got {text!r}")
    return cols, rows


def _add_system(p: argparse.ArgumentParser) -> None:
    """The options of the system model (launch/tools/system.py), shared by traffic and forecast."""
    from cluster.hardware import PROFILES as HARDWARE  # noqa: PLC0415  (a command loads only what it runs: --help and the light commands stay quick)

    _add_capacity(p)
    p.add_argument("--energy", metavar="NAME|FILE", help=f"energy figures: a profile ({', '.join(HARDWARE)}) or a "
                   "JSON file of figures with sources (default: the chip's profile, else loihi)")
    p.add_argument("--multicast", action=argparse.BooleanOptionalAction, default=None,
                   help="routers copy a spike where its paths part (default: as the profile's routers do)")
    p.add_argument("--placement", default="snake", help="chips on the mesh: snake, auto (fewest spike-hops), or "
                   "node.board.x.y per chip, comma-separated")
    p.add_argument("--board", type=_board, help="chips per board, COLUMNSxROWS (default: the profile's)")
    p.add_argument("--boards-per-node", type=_positive_int, default=1)
    p.add_argument("--ann-bits", type=int, choices=(8, 16), default=16,
                   help="bits per activation and error of the equivalent ANN's traffic (default 16)")
    p.add_argument("--steps", type=_positive_int, help="time steps per sample for the forecast (default: 2 per "
                   "layer)")


def _add_traffic(sub: argparse._SubParsersAction) -> None:
    from .tools.system import PACKETS  # noqa: PLC0415  (a command loads only what it runs: --help and the light commands stay quick)

    p = sub.add_parser("traffic", help="a run's traffic as measured (chip runs) and as a neuromorphic system would "
                                       "carry it: routed links, multicast, energy per sample per epoch")
    p.add_argument("run_dir")
    p.add_argument("--epoch", type=_positive_int, help="default: the last epoch")
    p.add_argument("--rate", type=_positive_float, default=1000.0,
                   help="samples/s to size each link's bandwidth for (default 1000)")
    p.add_argument("--packet", choices=PACKETS, default="spinnaker",
                   help="spike packet format (launch/tools/system.py)")
    p.add_argument("--json", action="store_true", help="one JSON object: \"traffic\", the measured links per "
                   "training sample (busiest link, totals forward and backward, chips); \"cost\", their packets and "
                   "Mbit/s (null for a one-process run); \"system\", the system model")
    _add_system(p)


def _add_forecast(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("forecast", help="forecast on-chip learning's samples/s and latency on a neuromorphic "
                                        "chip profile, from a run's counts (launch/tools/system.py)")
    p.add_argument("run_dir")
    p.add_argument("--json", action="store_true")
    _add_system(p)


def _nonnegative_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not v >= 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return v


def _add_plan(sub: argparse._SubParsersAction) -> None:
    from .tools.plan import CALL_US, LATENCY_US, RANGES  # noqa: PLC0415  (a command loads only what it runs: --help and the light commands stay quick)
    from .tools.plan import PLACEMENTS as PLAN_PLACEMENTS  # noqa: PLC0415  (a command loads only what it runs: --help and the light commands stay quick)

    text = ("forecast how fast this emulator (the Python/Ray program, one process per chip) would train a chip run's "
            "mapping on N CPU nodes, from what the run measured, with a range and what the model was checked against "
            "(launch/tools/plan.py); not a neuromorphic chip's time: see `spikegrad forecast`")
    p = sub.add_parser("plan", help=text, description=text)
    p.add_argument("run_dir")
    p.add_argument("--nodes", type=_positive_int, required=True,
                   help="CPU nodes; chips go to them in balanced contiguous blocks, every node used")
    p.add_argument("--link-gbps", type=_positive_float, default=10.0, help="each node's network, Gbit/s (default 10)")
    p.add_argument("--latency-us", type=_nonnegative_float,
                   help=f"µs each message that crosses nodes waits (default {LATENCY_US:g}, "
                        f"range {RANGES['latency_us'][0]:g}-{RANGES['latency_us'][1]:g} in the forecast)")
    p.add_argument("--cores", type=_positive_int, help="cores per node (default: one per chip)")
    p.add_argument("--shared-cores", type=_positive_int, help="the nodes are emulated hosts sharing this many "
                   "cores of one machine (spikegrad hosts)")
    p.add_argument("--placement", choices=PLAN_PLACEMENTS, help="where Ray puts the chips (default: the run's "
                   "--placement; blocks: balanced contiguous blocks)")
    p.add_argument("--call-us", type=_nonnegative_float,
                   help=f"µs of a core per call a chip receives: all that Ray's calls and object-store messages "
                        f"cost outside the chips (default: split into per-call, per-object and per-sample parts "
                        f"from the run where it measured its machine's CPU, else {CALL_US:g}, measured here; range "
                        f"{RANGES['call_us'][0]:g}-{RANGES['call_us'][1]:g}; 0: the chips' work alone, an optimistic "
                        f"bound)")
    p.add_argument("--micro-batch", type=_positive_int, help="samples per micro-batch on the target (default: "
                   "the chip engine's choice there)")
    p.add_argument("--calls-from", metavar="RUN_DIR", help="a second run of the same mapping at another "
                   "--micro-batch, on one node: the chips' and Ray's cost per call are taken from the two runs' "
                   "difference (default: the figures measured on the project's 2-core machine)")
    p.add_argument("--epoch", type=_positive_int, help="default: the last epoch")
    p.add_argument("--json", action="store_true")


def _add_hosts(sub: argparse._SubParsersAction) -> None:
    text = ("emulated hosts on this machine: network namespaces joined by links of a set rate (tc tbf), one "
            "token-gated Ray node in each, for multi-node runs over real TCP (needs root; launch/tools/hosts.py)")
    p = sub.add_parser("hosts", help=text, description=text)
    hsub = p.add_subparsers(dest="hosts", required=True, parser_class=_Parser)
    u = hsub.add_parser("up", help="make the hosts, start Ray in each, print the address")
    u.add_argument("--hosts", dest="hosts_n", type=_positive_int, default=3, help="how many hosts (default 3)")
    u.add_argument("--link-mbit", type=_positive_float, default=1000.0,
                   help="each host's link, Mbit/s each way (default 1000)")
    u.add_argument("--cpus", type=_positive_float, default=1.0, help="CPUs each host's Ray node offers (default 1); "
                   "the hosts share this machine's cores")
    u.add_argument("--object-store-mb", type=_positive_int, default=256, help="each node's object store (default 256)")
    u.add_argument("--subnet", type=_nonnegative_int, default=0, help="hosts get 10.213.SUBNET.1.. (default 0)")
    for name, h in (("down", "stop Ray in the hosts and remove everything `up` made"),
                    ("restart", "after a fault: stop every process in the hosts, put every link up, start Ray again"),
                    ("status", "the hosts, their Ray nodes and what each link carried"),
                    ("exec", "run a command in host 0 (the head) with the cluster's token: "
                             "spikegrad hosts exec -- spikegrad train --address ADDRESS ...")):
        q = hsub.add_parser(name, help=h)
        if name == "exec":
            q.add_argument("--host", type=_nonnegative_int, default=0, help="which host (default 0, the head)")
            q.add_argument("argv", nargs=argparse.REMAINDER, help="the command, after --")
    for name, q in hsub.choices.items():
        q.add_argument("--name", default="sg", help="which set of hosts (default sg): several can be up at once")
        if name in ("up", "status"):
            q.add_argument("--json", action="store_true")


def _cmd_hosts(a: argparse.Namespace) -> int:
    from .tools import hosts  # noqa: PLC0415  (a command loads only what it runs: --help and the light commands stay quick)

    def log(s: str) -> None:
        print(f"spikegrad: {s}", file=sys.stderr, flush=True)

    if a.hosts == "up":
        h = hosts.up(a.hosts_n, a.link_mbit, a.name, a.cpus, a.object_store_mb, a.subnet, log=log)
        if a.json:
            print(json.dumps({"name": h.name, "address": h.address, "token_path": str(h.token_path),
                              "hosts": [x.ip for x in h.hosts]}), flush=True)
        else:
            print(f"{h.describe()}\naddress: {h.address}\n"
                  f"run:     spikegrad hosts exec{'' if a.name == 'sg' else ' --name ' + a.name} -- spikegrad train "
                  f"--engine chips --placement spread --address {h.address}\n"
                  f"remove:  spikegrad hosts down{'' if a.name == 'sg' else ' --name ' + a.name}", flush=True)
        return 0
    if a.hosts == "down":
        hosts.down(a.name, log=log)
        return 0
    if a.hosts == "restart":
        hosts.load(a.name).restart(log=log)
        return 0
    if a.hosts == "status":
        s = hosts.status(a.name)
        print(json.dumps(s) if a.json else hosts.format_status(s), flush=True)
        return 0
    argv = a.argv[1:] if a.argv[:1] == ["--"] else a.argv
    if not argv:
        raise SpikeGradError("hosts exec needs a command after --, e.g. spikegrad hosts exec -- spikegrad train ...")
    h = hosts.load(a.name)
    if a.host >= len(h.hosts):
        raise SpikeGradError(f"hosts {a.name}: --host expected 0..{len(h.hosts) - 1}, got {a.host}")
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvpe("ip", h.command(a.host, argv), h.env())
    except OSError as exc:
        raise SpikeGradError(f"hosts exec: cannot run ip ({exc.strerror or exc})") from None


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="the paper's figures (PNG) and a Markdown summary from run directories")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", required=True, help="directory for the PNGs, summary.md and table1.json")


def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmarks (numbers for the README)")
    bsub = p.add_subparsers(dest="bench", required=True, parser_class=_Parser)
    t = bsub.add_parser("train", help="forward + backward + update images/s of a topology")
    t.add_argument("--topology", default="mnist")
    t.add_argument("--batch-sizes", type=_positive_int, nargs="+", default=[64, 256])
    t.add_argument("--seconds", type=_positive_float, default=5.0, help="time per measurement")
    t.add_argument("--repeats", type=_positive_int, default=3, help="median of this many measurements")
    t.add_argument("--backend", choices=BACKENDS, default="numpy")
    t.add_argument("--dtype", choices=DTYPES, default="float32")
    t.add_argument("--torch", action="store_true", help="also time the same network in PyTorch, if installed")
    t.add_argument("--dataset", choices=DATASETS,
                   help="time on this dataset's first training images (initial weights) instead of synthetic "
                        "batches")
    t.add_argument("--data-dir", help="the dataset's folder (with --dataset)")
    t.add_argument("--images", type=_positive_int, default=8192,
                   help="with --dataset: step through this many of its first training images, batch by batch")
    t.add_argument("--rounds", type=_positive_int, default=1,
                   help="with --torch: take turns this many times (PyTorch in a process of its own, then "
                        "ours); the ratio is the median of the rounds' ratios")
    t.add_argument("--profile", action="store_true", help="break the step down by layer and phase")
    t.add_argument("--micro-batch", type=_positive_int,
                   help="samples per CPU micro-batch (default: the local engine's)")
    t.add_argument("--checkpoint", help="time a trained run on its own test images (sparse errors) "
                                        "instead of synthetic batches on initial weights")
    t.add_argument("--json", action="store_true")
    c = bsub.add_parser("chips", help="images/s on chips vs one process, chip time shares, wire size")
    c.add_argument("--topology", default="mnist")
    c.add_argument("--batch-size", type=_positive_int, default=256)
    c.add_argument("--batches", type=_positive_int, default=20)
    c.add_argument("--chips", help="layer groups per chip (default: one layer per chip)")
    _add_capacity(c)
    c.add_argument("--micro-batch", type=_positive_int)
    _add_transport(c, "auto")
    c.add_argument("--replicas", type=_positive_int, default=1,
                   help="data-parallel copies of the chip pipeline (increments combined once per batch)")
    c.add_argument("--rounds", type=_positive_int, default=3,
                   help="local and chips take turns this many times on the same batches (median reported)")
    c.add_argument("--profile", action="store_true",
                   help="split a micro-batch's wall time: driver submission, Ray calls alone (empty calls on the "
                        "same chips), Arrow encode/decode, chip compute, waiting; per chip and in total")
    c.add_argument("--json", action="store_true")
    e = bsub.add_parser("events", help="event simulator: synaptic events/s, and the ANN's speedup on the same steps")
    e.add_argument("--checkpoint", help="a run directory: its own test images (default: synthetic batches, "
                                        "initial weights of --topology)")
    e.add_argument("--data-dir")
    e.add_argument("--topology", default="mnist")
    e.add_argument("--samples", type=_positive_int, default=500)
    e.add_argument("--batch-size", type=_positive_int, default=100)
    e.add_argument("--order", choices=tuple(ORDERS), default="waves")
    e.add_argument("--seed", type=_nonnegative_int, default=0)
    e.add_argument("--json", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="spikegrad", description="SpikeGrad: backpropagation with spikes, "
                     "trained through its equivalent ANN.")
    sub = parser.add_subparsers(dest="command", required=False, parser_class=_Parser)
    _add_train(sub)
    _add_eval(sub)
    _add_export(sub)
    _add_conformance(sub)
    _add_traffic(sub)
    _add_forecast(sub)
    _add_verify(sub)
    _add_bench(sub)
    _add_map(sub)
    _add_plan(sub)
    _add_hosts(sub)
    _add_report(sub)
    return parser


_RESUME_OK = {"resume", "address", "allow_no_auth", "json", "quiet", "command", "download", "data_dir"}


def _joins_cluster(a: argparse.Namespace) -> bool:
    """A run that joins a Ray cluster (chips engine, --address or RAY_ADDRESS); a resumed run's engine
    is in its config.json, read later: it is watched whenever an address is given."""
    return bool(a.address or os.environ.get("RAY_ADDRESS")) and (a.resume or a.engine != "local")


def _cmd_train(a: argparse.Namespace) -> int:
    from .run.config import check_address  # noqa: PLC0415  (a command loads only what it runs: --help and the light commands stay quick)
    from .run.runs import resume, train  # noqa: PLC0415  (a command loads only what it runs: --help and the light commands stay quick)

    if a.address:
        check_address(a.address)
    if a.allow_no_auth:
        from .run.ray_session import ALLOW_NO_AUTH  # noqa: PLC0415  (a command loads only what it runs: --help and the light commands stay quick)

        os.environ[ALLOW_NO_AUTH] = "1"
    if a.resume:
        given = sorted(k for k, v in vars(a).items() if k not in _RESUME_OK and v not in (None, False))
        if given:
            raise SpikeGradError(f"--resume continues the run with its own config.json; got also "
                                 f"{', '.join('--' + k.replace('_', '-') for k in given)}")
        summary = resume(a.resume, data_dir=a.data_dir, progress=not a.quiet, address=a.address)
    else:
        out_ok = a.out and ("://" in a.out or Path(a.out).expanduser().is_absolute())
        if os.environ.get(RAY_JOB_ENV) and not out_ok:
            raise SpikeGradError(f"under 'ray job submit' the run directory must be an absolute path on storage "
                                 f"that outlives the job (got {a.out or 'the default runs/...'!r}, which would land "
                                 f"in the job's temporary copy of its working directory); pass --out /PATH/RUN")
        overrides, imported = _from_nir(a)
        cfg = _train_config(a, overrides)
        initial = None
        if imported is not None:
            from .tools.nir_import import initial_weights  # noqa: PLC0415  (a command loads only what it runs: --help and the light commands stay quick)

            initial = initial_weights(imported, cfg.dtype, cfg.weight_frac_bits)
        summary = train(cfg, progress=not a.quiet, address=a.address, initial=initial)
    if a.json:
        print(json.dumps(summary), flush=True)
    else:
        print(f"test accuracy {summary['test_accuracy']:.2f}% after {summary['epochs']} epochs, "
              f"{summary['train_seconds']:.1f} s training ({summary['images_per_second']:.0f} img/s); "
              f"run directory {summary['run_dir']}")
    return 0


def _from_nir(a: argparse.Namespace) -> tuple[dict[str, Any], Any]:
    """``--topology FILE.nir`` or ``--init-from FILE.nir``: the config values the graph gives (topology,
    theta_ff, theta_bp and dataset where our export wrote them, the file as ``init_from``) and the
    imported graph; ({}, None) without one. A flag that contradicts the graph is refused."""
    from cluster.topology import parse_topology  # noqa: PLC0415  (a command loads only what it runs: --help and the light commands stay quick)

    from .tools.nir import is_nir_path  # noqa: PLC0415  (a command loads only what it runs: --help and the light commands stay quick)
    from .tools.nir_import import load_nir  # noqa: PLC0415  (a command loads only what it runs: --help and the light commands stay quick)

    if a.init_from and not is_nir_path(a.init_from):
        raise SpikeGradError(f"--init-from expected a NIR graph FILE.nir, got {a.init_from[:100]!r}")
    topo_file = a.topology if is_nir_path(a.topology) else None
    if topo_file and a.init_from and Path(topo_file).resolve() != Path(a.init_from).resolve():
        raise SpikeGradError(f"--topology {topo_file} and --init-from {a.init_from} name two NIR files; give one")
    path = a.init_from or topo_file
    if path is None:
        return {}, None
    imp = load_nir(path)
    for note in imp.notes:  # what the import assumed (a foreign graph's sum pooling, its output neuron)
        print(f"spikegrad: {path}: {note}", file=sys.stderr)
    if a.topology and not topo_file and parse_topology(a.topology).text != imp.topology.text:
        raise SpikeGradError(f"--topology {a.topology!r} differs from the topology of {path}, "
                             f"{imp.topology.text!r}; leave --topology out to take the graph's")
    over: dict[str, Any] = {"topology": imp.topology.text, "init_from": str(Path(path).resolve())}
    if imp.theta_ff is not None:
        if a.theta_ff is not None and a.theta_ff != imp.theta_ff:
            raise SpikeGradError(f"--theta-ff {a.theta_ff:g} differs from the IF threshold of {path}, "
                                 f"{imp.theta_ff:g}; its weights are scaled to that threshold")
        over["theta_ff"] = imp.theta_ff
    if a.theta_bp is None and imp.theta_bp() is not None:
        over["theta_bp"] = imp.theta_bp()
    if not a.dataset and imp.dataset():
        over["dataset"] = imp.dataset()
    return over, imp


def _train_config(a: argparse.Namespace, nir: dict[str, Any] | None = None) -> Any:
    from .run.config import make_config  # noqa: PLC0415  (a command loads only what it runs: --help and the light commands stay quick)

    nir = nir or {}
    return make_config(
        a.dataset or nir.get("dataset", "digits"),
        data_dir=str(Path(a.data_dir).expanduser().resolve()) if a.data_dir else None,
        topology=nir.get("topology", a.topology), init_from=nir.get("init_from"),
        theta_bp=nir.get("theta_bp", a.theta_bp), epochs=a.epochs, batch_size=a.batch_size,
        lr=a.lr, momentum=a.momentum, schedule=a.schedule, alpha=a.alpha, theta_ff=nir.get("theta_ff", a.theta_ff),
        gradient=a.gradient, seed=a.seed, limit_train=a.limit_train,
        limit_test=a.limit_test, engine=a.engine, backend=a.backend, dtype=a.dtype, out=a.out,
        download=a.download or None, chips=a.chips, replicas=a.replicas, placement=a.placement,
        micro_batch=a.micro_batch, weight_frac_bits=a.weight_frac_bits, wire=a.wire, transport=a.transport,
        checkpoint_every=a.checkpoint_every, shift=a.shift, flip=a.flip, validation=a.validation,
        cuda_graph=a.cuda_graph, chip=a.chip, chip_neurons=a.chip_neurons, chip_synapses=a.chip_synapses,
        chip_cores=a.chip_cores)


def _cmd_eval(a: argparse.Namespace) -> int:
    from .run.runs import evaluate_run  # noqa: PLC0415  (a command loads only what it runs: --help and the light commands stay quick)
    from .tools.nir import is_nir_path  # noqa: PLC0415  (a command loads only what it runs: --help and the light commands stay quick)
    from .tools.nir_import import evaluate_graph  # noqa: PLC0415  (a command loads only what it runs: --help and the light commands stay quick)

    if is_nir_path(a.checkpoint):
        res = evaluate_graph(a.checkpoint, a.dataset, a.data_dir, a.limit_test, a.backend)
    elif a.dataset:
        raise SpikeGradError("eval --dataset is for a NIR file; a run directory evaluates on its own dataset")
    else:
        res = evaluate_run(a.checkpoint, data_dir=a.data_dir, limit_test=a.limit_test, backend=a.backend)
    res["run_dir"] = a.checkpoint
    if a.json:
        print(json.dumps(res), flush=True)
    else:
        print(f"test accuracy {res['test_accuracy']:.2f}% on {res['images']} {res['dataset']} test images "
              f"({res['run_dir']}, {res['epochs_done']} epochs trained)")
    return 0


def _cmd_export(a: argparse.Namespace) -> int:
    from .tools.nir import export_run, is_nir_path  # noqa: PLC0415  (a command loads only what it runs: --help and the light commands stay quick)

    if not is_nir_path(a.to):
        raise SpikeGradError(f"--to expected a file name ending in .nir, got {a.to[:100]!r}")
    res = export_run(a.run_dir, a.to)
    if a.json:
        print(json.dumps(res), flush=True)
    else:
        caveat = "" if res["exact_arithmetic"] else (" if its sums are exact (they may not be: the run has no "
                                                     "--weight-frac-bits or theta_ff is not a power of two)")
        print(f"exported {res['topology']} ({res['nodes']} NIR nodes, theta_ff {res['theta_ff']:g}) from "
              f"{res['run_dir']} to {res['file']}: exact for one time step with the whole input on an IF neuron "
              f"with subtractive reset and several spikes per step{caveat} (the graph's metadata says what else)")
    return 0


def _cmd_conformance(a: argparse.Namespace) -> int:
    from .tools.conformance import compare, load_case, run_case, write_npz_atomic  # noqa: PLC0415  (a command loads only what it runs: --help and the light commands stay quick)

    got = run_case(load_case(a.case), backend=a.backend, name=str(a.case))
    write_npz_atomic(a.out, got)
    if a.expected:
        problems = compare(got, load_case(a.expected))
        if problems:
            raise SpikeGradError(f"{a.case} differs from {a.expected}: {'; '.join(problems)}")
        print(f"{a.case}: {len(got)} arrays written to {a.out}, all equal to {a.expected}")
    else:
        print(f"{a.case}: {len(got)} arrays written to {a.out}")
    return 0


def _cmd_verify(a: argparse.Namespace) -> int:
    from .tools.verify import format_verify, verify  # noqa: PLC0415  (a command loads only what it runs: --help and the light commands stay quick)

    steps = a.input_steps if a.input == "continuous" else 1
    if steps & (steps - 1):
        raise SpikeGradError(f"--input-steps expected a power of two (exact sums on a dyadic grid), got {steps}")
    res = verify(a.checkpoint, samples=a.samples, data_dir=a.data_dir, residual=not a.no_residual,
                 order=a.order, seed=a.seed, progress=not a.quiet, input_steps=steps, workers=a.workers,
                 backward=not a.forward_only)
    print(format_verify(res), file=sys.stderr if a.json else sys.stdout)
    if a.json:
        print(json.dumps({k: v for k, v in res.items() if k != "layers"}), flush=True)
    return 0


def _cmd_report(a: argparse.Namespace) -> int:
    from .run.rundir import RunDir  # noqa: PLC0415  (a command loads only what it runs: --help and the light commands stay quick)
    from .tools.report import report  # noqa: PLC0415  (a command loads only what it runs: --help and the light commands stay quick)

    res = report([RunDir.fetch(d) for d in a.run_dirs], a.out)
    print(f"report: {len(res['files'])} files in {res['out']}: {', '.join(res['files'])}")
    return 0


def _finite(x: Any) -> Any:
    """x with every NaN or infinity as None, so that --json prints strict JSON."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def _system(a: argparse.Namespace, run: Any, measured: list[dict] | None = None) -> dict:
    from cluster.mapping import resolve_spec  # noqa: PLC0415  (a command loads only what it runs: --help and the light commands stay quick)

    from .tools.system import system_model  # noqa: PLC0415  (a command loads only what it runs: --help and the light commands stay quick)

    spec = resolve_spec(a.chip, a.chip_neurons, a.chip_synapses, a.chip_cores)
    return system_model(run.read_config(), run.read_table("metrics"), run.read_table("layers"), spec, a.energy,
                        getattr(a, "packet", "spinnaker"), a.multicast, a.placement, a.board, a.boards_per_node,
                        getattr(a, "rate", 1000.0), a.ann_bits, a.steps, measured)


def _cmd_traffic(a: argparse.Namespace) -> int:
    from .run.rundir import RunDir  # noqa: PLC0415  (a command loads only what it runs: --help and the light commands stay quick)
    from .run.traffic import format_traffic, traffic_json  # noqa: PLC0415  (a command loads only what it runs: --help and the light commands stay quick)
    from .tools.cost import format_cost, run_cost  # noqa: PLC0415  (a command loads only what it runs: --help and the light commands stay quick)
    from .tools.system import format_system, run_plan  # noqa: PLC0415  (a command loads only what it runs: --help and the light commands stay quick)

    run = RunDir.fetch(a.run_dir)
    cfg = run.read_config()
    metrics = run.read_table("metrics")
    links, chips = run.read_table("traffic"), run.read_table("chips")
    epochs = sorted({r["epoch"] for r in metrics})
    if not epochs:
        raise SpikeGradError(f"{run} has no finished epoch yet")
    if a.epoch is not None and a.epoch not in epochs:
        raise SpikeGradError(f"{run} has epochs {epochs}, not {a.epoch}")
    epoch = a.epoch or epochs[-1]
    images = {r["epoch"]: r["images"] for r in metrics}
    measured = traffic_json(links, chips, epoch, images[epoch])  # checks the epoch's image count
    cost = run_cost(metrics, links, run_plan(cfg, None)[0], epoch, a.packet, a.rate) if chips else None
    system = _system(a, run, links)
    if a.json:
        print(json.dumps(_finite(dict(traffic=measured, cost=cost, system=system))))
        return 0
    if chips and cost is not None:
        print("as measured on the emulator's chips:")
        print(format_traffic(links, chips, images, epoch))
        print()
        print(format_cost(cost["links"], epoch, a.packet, a.rate))
        print()
    else:
        print(f"{run}: a one-process run (--engine local): no chips measured; the system below lays its counts on "
              f"the chips named")
    print(format_system(system))
    return 0


def _cmd_forecast(a: argparse.Namespace) -> int:
    from .run.rundir import RunDir  # noqa: PLC0415  (a command loads only what it runs: --help and the light commands stay quick)
    from .tools.system import format_forecast  # noqa: PLC0415  (a command loads only what it runs: --help and the light commands stay quick)

    s = _system(a, RunDir.fetch(a.run_dir))
    print(json.dumps(s["forecast"], default=float) if a.json else format_forecast(s), flush=True)
    return 0


def _cmd_plan(a: argparse.Namespace) -> int:
    from .run.rundir import RunDir  # noqa: PLC0415  (a command loads only what it runs: --help and the light commands stay quick)
    from .tools.plan import format_plan, plan  # noqa: PLC0415  (a command loads only what it runs: --help and the light commands stay quick)
    from .tools.report import Run  # noqa: PLC0415  (a command loads only what it runs: --help and the light commands stay quick)

    p = plan(Run(RunDir.fetch(a.run_dir)), a.nodes, a.link_gbps, a.latency_us, a.cores, a.epoch, a.micro_batch,
             a.call_us, a.shared_cores, a.placement,
             calls_from=Run(RunDir.fetch(a.calls_from)) if a.calls_from else None)
    print(json.dumps(_finite(p)) if a.json else format_plan(p), flush=True)
    return 0


def _cmd_map(a: argparse.Namespace) -> int:
    from cluster.mapping import PROFILES, map_network, resolve_spec  # noqa: PLC0415  (a command loads only what it runs: --help and the light commands stay quick)
    from cluster.topology import parse_topology  # noqa: PLC0415  (a command loads only what it runs: --help and the light commands stay quick)

    from .tools.chipmap import format_mapping, mapping_json  # noqa: PLC0415  (a command loads only what it runs: --help and the light commands stay quick)

    spec = resolve_spec(a.chip, a.chip_neurons, a.chip_synapses, a.chip_cores, a.compartments)
    if spec is None:
        raise SpikeGradError(f"map needs a chip: --chip NAME ({', '.join(PROFILES)}) or both --chip-neurons and "
                             f"--chip-synapses")
    mapping = map_network(parse_topology(a.topology), spec)
    if a.figure:
        from .tools.chipmap import fill_figure  # noqa: PLC0415  (matplotlib only when a figure is asked)

        fill_figure(mapping, a.figure)
    if a.json:
        print(json.dumps(mapping_json(mapping)), flush=True)
    else:
        print(format_mapping(mapping))
    return 0


def _cmd_bench(a: argparse.Namespace) -> int:
    from .tools.bench import bench_chips, bench_events, bench_train  # noqa: PLC0415  (a command loads only what it runs: --help and the light commands stay quick)

    return {"chips": bench_chips, "events": bench_events, "train": bench_train}[a.bench](a)


RAY_JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # set by Ray's job manager for a job's entrypoint


class Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an exception so that a run closes its chips and says how to resume."""

    signal_name = "terminated"


def _on_sigterm(signum: int, frame: Any) -> None:
    # Once: the run is stopping; the same signal again (sent to the process group and relayed by a
    # watching parent as well, launch.run.supervise) must not cut its cleanup short.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated("terminated")


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status: 0 done, 2 refused input (one ``spikegrad: error:`` line), 3 the private Ray
    instance lost its GCS or raylet (launch.run.ray_session.watch_ray), or a joined cluster ended
    the run's process (launch.run.supervise), 130 Ctrl-C, 143
    SIGTERM (both print the run directory and the ``--resume`` command), 1 other OS errors."""
    argv = list(sys.argv[1:] if argv is None else argv)
    on_main = threading.current_thread() is threading.main_thread()
    before = signal.signal(signal.SIGTERM, _on_sigterm) if on_main else None
    try:
        status = _main(argv)
        tell("exit", status)  # to a watching parent: everything has been said (launch.run.supervise)
        return status
    finally:
        if on_main:
            signal.signal(signal.SIGTERM, before)


def _main(argv: list[str]) -> int:
    try:
        args = build_parser().parse_args(argv or ["train"])
        if args.command is None:
            args = build_parser().parse_args(["train", *argv])
        if args.command == "train" and _joins_cluster(args) and not supervised():
            if args.address:  # refused here, before a child process is started for it
                from .run.config import check_address  # noqa: PLC0415  (a command loads only what it runs: --help and the light commands stay quick)

                check_address(args.address)
            return supervise(argv)  # Ray may end the run's process from C++: a parent watches it
        handler = {"train": _cmd_train, "eval": _cmd_eval, "export": _cmd_export, "conformance": _cmd_conformance,
                   "traffic": _cmd_traffic, "verify": _cmd_verify, "bench": _cmd_bench,
                   "report": _cmd_report, "map": _cmd_map, "plan": _cmd_plan, "forecast": _cmd_forecast,
                   "hosts": _cmd_hosts}[args.command]
        return handler(args)
    except SpikeGradError as exc:
        print(f"spikegrad: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `spikegrad traffic RUN | head`: the reader has gone
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt as exc:
        print(f"spikegrad: {str(exc) or 'interrupted'}", file=sys.stderr)
        return 143 if getattr(exc, "signal_name", "") == "terminated" else 130
    except OSError as exc:
        print(f"spikegrad: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
