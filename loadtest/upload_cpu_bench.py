"""CPU per upload of the ingest service, against the raw cost of the work an upload needs.

Starts the real ingest app as ``kubemate up`` does (``uvicorn --factory
kubemate_ingest.main:create_app --no-access-log``, JSON logs to a file), on a SQLite metadata
database and a filesystem object store in a temporary directory and this machine's Redis (a
stream of its own, deleted at the end). It then uploads SciFact abstracts, each as the text file
a user would send (title, blank line, abstract; ~1.5 KB), one per ``POST /v1/documents``
(multipart, identity headers signed as the gateway signs them), from this process over
keep-alive ``http.client`` connections, and prints:

* the ingest server's CPU ms per upload (user + system of its process, all threads, from
  psutil), for new documents and for re-uploads of the same content (the idempotent path), per
  round and the median of the rounds;
* the raw cost of the parts in this process, on the same texts: SHA-256, a file written as the
  object store must write it (temp file, fsync, rename, directory fsync), one SQLite write
  transaction inserting a row (WAL, ``synchronous=NORMAL``, as the metadata store sets it) and
  one XADD; so the service's overhead over its essential work is visible.

The data directories go under ``--work-dir`` (default ``.kubemate/``, where ``kubemate up`` keeps
its data). Creating a file is most of the server's system time, and on this machine's disk it
costs 0.02 to 0.9 CPU ms depending on the directory and the moment (under ``/tmp`` never less
than ~0.3): compare trees in one run, and run ``--tree . --tree .`` to see the noise.

``--tree DIR`` (repeatable) runs the ingest code of another checkout side by side (e.g. one made by
``git worktree add /tmp/wt-up-old <commit>``): each tree gets its own server, and within a round
slices of ``--slice`` uploads alternate between the trees, so both see the same machine load.
``--profile`` records the last tree's server with py-spy during one more round and lists where its
time goes (by function, self and inclusive, and by package).

Run (2 busy cores: about a minute)::

    .venv/bin/python loadtest/upload_cpu_bench.py --docs 300 --rounds 3
    .venv/bin/python loadtest/upload_cpu_bench.py --tree /tmp/wt-up-old --tree . --profile
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from argparse import Namespace
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import redis

from kubemate.auth import Identity, Role
from kubemate.auth.internal import sign_identity
from kubemate.metadata.migrate import upgrade_to_head
from kubemate.settings import AuthConfig
from kubemate_cli.embedded.processes import free_port

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingest_bench import DEFAULT_CORPUS, load_corpus

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = "redis://127.0.0.1:6379/0"
TENANT = "upload-bench"
BOUNDARY = "kubemate-upload-bench-boundary"


def load_texts(path: Path, limit: int) -> list[bytes]:
    texts = [text.encode() for text in load_corpus(path, limit)]
    if len(texts) < limit:
        raise SystemExit(f"the corpus has {len(texts)} abstracts; the run needs {limit}")
    return texts


def multipart(filename: str, data: bytes) -> bytes:
    return b"".join(
        (
            f"--{BOUNDARY}\r\n".encode(),
            f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'.encode(),
            b"Content-Type: text/plain\r\n\r\n",
            data,
            f"\r\n--{BOUNDARY}--\r\n".encode(),
        )
    )


# ---- the server --------------------------------------------------------------------------------


@dataclass
class Server:
    tree: Path
    port: int
    process: subprocess.Popen[bytes]
    work_dir: Path
    stream: str
    # phase -> (user, system) CPU ms per upload, one pair per round
    cpu: dict[str, list[tuple[float, float]]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return str(self.tree)

    def cpu_seconds(self) -> tuple[float, float]:
        times = psutil.Process(self.process.pid).cpu_times()
        return times.user, times.system


def start_server(tree: Path, work_dir: Path, timeout_s: float = 60.0) -> Server:
    """The ingest app of ``tree`` (its ``libs`` and ``services/ingest`` first on the path)."""
    work_dir.mkdir(parents=True)
    db_url = f"sqlite:///{work_dir / 'kubemate.db'}"
    upgrade_to_head(db_url)
    stream = f"bench:upload:{uuid.uuid4().hex[:8]}"
    port = free_port("127.0.0.1")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join((str(tree / "libs"), str(tree / "services" / "ingest"))),
        "KUBEMATE_DATA_DIR": str(work_dir),
        "KUBEMATE_DATABASE__URL": db_url,
        "KUBEMATE_OBJECT_STORE__PROVIDER": "filesystem",
        "KUBEMATE_OBJECT_STORE__ROOT": str(work_dir / "objects"),
        "KUBEMATE_REDIS__URL": REDIS_URL,
        "KUBEMATE_REDIS__INGEST_STREAM": stream,
        "KUBEMATE_REDIS__CONSUMER_GROUP": f"{stream}:workers",
        "PYTHONUNBUFFERED": "1",
    }
    argv = [sys.executable, "-m", "uvicorn", "--factory", "kubemate_ingest.main:create_app"]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
    log = (work_dir / "ingest.log").open("wb")
    process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=work_dir)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the ingest server of {tree} exited; see {work_dir / 'ingest.log'}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                conn.close()
                return Server(tree, port, process, work_dir, stream)
        except OSError:
            time.sleep(0.2)
    process.terminate()
    raise SystemExit(f"the ingest server of {tree} did not start in {timeout_s:.0f} s")


def stop_server(server: Server) -> None:
    server.process.send_signal(signal.SIGINT)
    try:
        server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()
    client = redis.Redis.from_url(REDIS_URL)
    client.delete(server.stream)
    client.close()


# ---- the client --------------------------------------------------------------------------------


def upload_all(server: Server, texts: Sequence[bytes], first: int, clients: int) -> None:
    """POST each text as its own document; ``clients`` connections, one request at a time each."""
    headers = sign_identity(AuthConfig(), Identity(TENANT, "bench", frozenset({Role.EDITOR})))
    headers["Content-Type"] = f"multipart/form-data; boundary={BOUNDARY}"

    def send(share: Sequence[tuple[int, bytes]]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        try:
            for i, text in share:
                conn.request("POST", "/v1/documents", multipart(f"abstract-{i}.txt", text), headers)
                response = conn.getresponse()
                body = response.read()
                if response.status != 202:
                    raise SystemExit(f"upload {i}: {response.status} {body[:300]!r}")
        finally:
            conn.close()

    numbered = list(enumerate(texts, start=first))
    shares = [numbered[k::clients] for k in range(clients)]
    with ThreadPoolExecutor(clients) as pool:
        for done in [pool.submit(send, share) for share in shares if share]:
            done.result()


def measure(
    servers: Sequence[Server], phase: str, texts: Sequence[bytes], first: int, args: Namespace
) -> None:
    """One round of ``texts`` through every server, in slices that alternate between them, so
    a change in the machine's load (other processes) falls on every tree alike."""
    used = {id(server): [0.0, 0.0] for server in servers}
    for start in range(0, len(texts), args.slice):
        part = texts[start : start + args.slice]
        order = servers if (start // args.slice) % 2 == 0 else servers[::-1]
        for server in order:
            user, system = server.cpu_seconds()
            upload_all(server, part, first + start, args.clients)
            user_after, system_after = server.cpu_seconds()
            used[id(server)][0] += user_after - user
            used[id(server)][1] += system_after - system
    for server in servers:
        user, system = used[id(server)]
        per_upload = (1000 * user / len(texts), 1000 * system / len(texts))
        server.cpu.setdefault(phase, []).append(per_upload)


# ---- the raw parts -----------------------------------------------------------------------------


def _cpu_ms_each(texts: Sequence[bytes], work: Callable[[int, bytes], object]) -> float:
    started = time.process_time()
    for i, text in enumerate(texts):
        work(i, text)
    return 1000 * (time.process_time() - started) / len(texts)


def raw_parts(texts: Sequence[bytes], work_dir: Path) -> dict[str, float]:
    """CPU ms per text of each part an upload cannot do without, done plainly here."""
    objects = work_dir / "objects"
    objects.mkdir(parents=True)
    parts: dict[str, float] = {}
    parts["sha256"] = _cpu_ms_each(texts, lambda _i, t: hashlib.sha256(t).hexdigest())

    def write_file(i: int, text: bytes) -> None:
        directory = objects / f"d{i}"
        directory.mkdir()
        fd, tmp = tempfile.mkstemp(dir=directory)
        os.write(fd, text)
        os.fsync(fd)
        os.close(fd)
        os.replace(tmp, directory / "object")
        dir_fd = os.open(directory, os.O_RDONLY)
        os.fsync(dir_fd)
        os.close(dir_fd)

    parts["file write + fsyncs"] = _cpu_ms_each(texts, write_file)

    db = sqlite3.connect(work_dir / "raw.db", isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute("CREATE TABLE documents (id TEXT PRIMARY KEY, sha256 TEXT UNIQUE, size INTEGER)")

    def insert(i: int, text: bytes) -> None:
        db.execute("BEGIN IMMEDIATE")
        db.execute(
            "INSERT INTO documents VALUES (?, ?, ?)",
            (uuid.uuid4().hex, hashlib.sha256(text).hexdigest(), len(text)),
        )
        db.execute("COMMIT")

    parts["SQLite insert transaction"] = _cpu_ms_each(texts, insert)
    db.close()

    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    stream = f"bench:raw:{uuid.uuid4().hex[:8]}"

    def xadd(i: int, _text: bytes) -> None:
        fields = {
            "tenant_id": TENANT,
            "document_id": f"d{i}",
            "task_id": f"t{i}",
            "collection": "c",
        }
        client.xadd(stream, fields)  # type: ignore[arg-type]  # redis-py: invariant dict type

    parts["XADD"] = _cpu_ms_each(texts, xadd)
    client.delete(stream)
    client.close()
    parts["sum"] = sum(parts.values())
    return parts


# ---- profile -----------------------------------------------------------------------------------


@contextmanager
def py_spy(pid: int, out: Path) -> Iterator[None]:
    # --gil: only samples holding the GIL, so time blocked in fsync or on a socket (which py-spy
    # does not count as idle) stays out and the list shows Python's CPU.
    spy = [sys.executable.replace("python", "py-spy"), "record", "--nonblocking", "--gil"]
    spy += ["-r", "1000"]
    spy += ["-f", "raw", "-o", str(out), "--pid", str(pid)]
    process = subprocess.Popen(spy, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # attached before the first request
    try:
        yield
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)


def _frame(raw: str) -> str:
    """``name (path:line)`` -> ``name (path)`` with site-packages and the repo cut off."""
    name, _, where = raw.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/libs/", "/services/ingest/", "/lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})" if path else name


def _package(frame: str) -> str:
    path = frame.partition(" (")[2].rstrip(")")
    return path.split("/", 1)[0] if "/" in path else path or "?"


def summarise_profile(out: Path, top: int) -> None:
    self_counts: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    by_package: Counter[str] = Counter()
    total = 0
    for line in out.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame(f) for f in stack.split(";")[2:]]  # past the process and thread
        if not frames:
            continue
        total += count
        self_counts[frames[-1]] += count
        by_package[_package(frames[-1])] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        print("py-spy recorded no samples")
        return
    print(f"\nprofile: {total} samples of the busy threads ({out})")
    for title, counts in (
        ("self, by package", by_package),
        ("self, by function", self_counts),
        ("inclusive, by function", inclusive),
    ):
        print(f"\n  {title}:")
        for name, count in counts.most_common(top):
            print(f"    {100 * count / total:5.1f}%  {name}")


# ---- main --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--docs", type=int, default=300, help="uploads per round and tree")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=50, help="uploads before measuring")
    parser.add_argument("--dups", type=int, default=100, help="re-uploads per round and tree")
    parser.add_argument("--clients", type=int, default=1, help="concurrent connections")
    parser.add_argument("--slice", type=int, default=25, help="uploads per tree in a row")
    parser.add_argument(
        "--tree", type=Path, action="append", help="checkout whose ingest code to run (repeatable)"
    )
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=ROOT / ".kubemate",
        help="where the temporary data directories go (default: beside kubemate up's data)",
    )
    parser.add_argument("--profile", action="store_true", help="py-spy the last tree's server")
    parser.add_argument("--top", type=int, default=25, help="rows per profile list")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    trees = [t.resolve() for t in args.tree or [ROOT]]
    profiled = args.docs if args.profile else 0
    texts = load_texts(args.corpus, args.warmup + args.rounds * args.docs + profiled)
    mean = statistics.mean(len(t) for t in texts)
    print(f"load {os.getloadavg()[0]:.2f}; {len(texts)} texts of {mean:.0f} bytes on average")
    with ExitStack() as stack:
        args.work_dir.mkdir(parents=True, exist_ok=True)
        temporary = tempfile.TemporaryDirectory(prefix="upload-bench-", dir=args.work_dir)
        work = Path(stack.enter_context(temporary))
        servers = []
        for n, tree in enumerate(trees):
            server = start_server(tree, work / f"server-{n}")
            stack.callback(stop_server, server)
            servers.append(server)
        for server in servers:
            upload_all(server, texts[: args.warmup], 0, args.clients)
        for r in range(args.rounds):
            first = args.warmup + r * args.docs
            batch = texts[first : first + args.docs]
            measure(servers, "new", batch, first, args)
            measure(servers, "duplicate", batch[: args.dups], first, args)
        raw = raw_parts(texts[: args.docs], work / "raw")
        if args.profile:
            last = servers[-1]
            out = work / "py-spy.txt"
            first = args.warmup + args.rounds * args.docs
            with py_spy(last.process.pid, out):
                upload_all(last, texts[first : first + args.docs], first, args.clients)
            summarise_profile(out, args.top)
            kept = Path(tempfile.gettempdir()) / "upload-bench-py-spy.txt"
            kept.write_text(out.read_text())
            print(f"\n  raw py-spy stacks kept in {kept}")

    print("\ningest server, CPU ms per upload: median of the rounds (user + system), each round")
    for server in servers:
        for phase, pairs in server.cpu.items():
            totals = [u + s for u, s in pairs]
            user = statistics.median(u for u, _s in pairs)
            system = statistics.median(s for _u, s in pairs)
            rounds = " ".join(f"{t:.2f}" for t in totals)
            print(
                f"  {phase:9} {statistics.median(totals):6.2f} ({user:.2f} + {system:.2f})"
                f"  [{rounds}]  {server.label}"
            )
    print("\nraw parts in this process, CPU ms per upload:")
    for name, value in raw.items():
        print(f"  {name:28} {value:6.3f}")


if __name__ == "__main__":
    main()
