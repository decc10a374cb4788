"""nbci's notebook driver: papermill's execution, with nbci's rules on top,
for one notebook after another.

`nbci` (Rust) starts this script once per job slot with the virtual
environment's Python and keeps it. It sends requests on stdin, one JSON object
per line, and reads events from stdout: one line per event, each `@nbci `
followed by a JSON object that names the request (`id`). The script never
decides the verdict: it executes, writes the executed notebook, and says how
execution ended; the Rust side reads the executed notebook and decides (one
place for that rule).

Why one process for many notebooks: starting Python and importing papermill
cost about half a second of CPU, more than the cells of many notebooks. Why it
can start the next notebook's kernel early (`prepare`): a kernel needs about
half a second to boot, which then overlaps with the end of the notebook before.
What does not change: every notebook gets a fresh kernel process that never ran
anything else, started in the notebook's own directory, talking over IPC
sockets in a private directory of its own. This process runs no notebook code.

What differs from `papermill.execute_notebook`, and why:
- an error in a cell tagged `raises-exception` is expected (nbclient and nbmake
  allow it; papermill 2.7 fails the notebook on it);
- cells tagged `skip-execution` are not run (nbclient's `skip_cells_with_tag`);
- the whole-notebook timeout is enforced between and inside cells by lowering
  each cell's timeout to what remains, so the kernel is stopped cleanly and the
  executed notebook is still written;
- kernels talk over IPC sockets in a private directory instead of TCP ports,
  so parallel runs cannot race for ports;
- a kernelspec named in the notebook but not installed falls back to
  `python3` for Python notebooks (with a warning) instead of failing;
- the executed notebook is kept in memory and written when the notebook ends
  (whatever the end: completed, failed, timed out, stopped), and while it runs
  at most every `autosave` seconds; papermill rewrites the whole notebook about
  twice per cell, which costs more than many cells;
- a notebook's outputs are capped (`max_output`, in characters): past the cap
  the kernel is stopped and the notebook fails, so that one notebook printing
  without end cannot exhaust memory or disk;
- with `--fork-kernels` (nbci passes it when a driver will run many
  notebooks), Python kernels are forked from a *zygote*: a process that
  imported what `python -m ipykernel_launcher` imports (about 1 s of CPU
  per kernel on a small machine, measured) and nothing else, ran no code of any notebook and
  has one thread. The child becomes the kernel exactly as the launcher would:
  new session, the notebook's directory, the kernel's environment, the
  launcher run as `__main__`. Kernels of other kernelspecs, other
  interpreters or extra environment start as before;
- every process the kernel starts inherits `NBCI_RUN=<token>` in its
  environment; when the notebook ends, the kernel is stopped and every process
  carrying the token is killed, wherever it went (`!sleep 90 &` runs in a
  session of its own, out of the kernel's process group).

Requests (fields of a run: input, output, cwd, parameters, kernel, language,
cell_timeout, timeout, start_timeout, max_output, autosave, token):
- {"op": "prepare", "id": ID, ...run}: start the kernel of a notebook that
  runs next; nothing is reported.
- {"op": "run", "id": ID, ...run}: run it, with its prepared kernel if any.
- {"op": "cancel", "id": ID}: forget a prepared notebook and stop its kernel.
- end of input, or SIGTERM: stop. The running notebook ends as `terminated`
  (its executed notebook written), every kernel is stopped, the script exits.
Events: warning, start, cell_start, cell_done, end (one per run); `missing`
(then exit 90) when papermill or a dependency cannot be imported.
"""

import asyncio
import collections
import enum
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

EVENT_PREFIX = "@nbci "
# Exit status when a module is missing: the Rust side turns it into a message
# that names the command installing the environment.
MISSING_MODULE_EXIT = 90
# The environment variable that marks every process of one notebook's kernel.
TOKEN_VARIABLE = "NBCI_RUN"
# How long a kernel whose notebook ended gets to exit after a shutdown request
# (half of it before SIGTERM, half before SIGKILL): enough for atexit handlers.
SHUTDOWN_WAIT = 2.0
# How long to wait for the first request before importing papermill, so that a
# request already on its way starts its kernel before that import.
FIRST_REQUEST_WAIT = 0.05
# Set once stdout is gone (nbci died): events are dropped, cleanup goes on.
stdout_broken = False


def emit(event, **fields):
    global stdout_broken
    if stdout_broken:
        return
    fields["event"] = event
    try:
        sys.stdout.write(EVENT_PREFIX + json.dumps(fields) + "\n")
        sys.stdout.flush()
    except (BrokenPipeError, OSError):
        stdout_broken = True


class MissingModule(Exception):
    """papermill or one of its dependencies cannot be imported."""


def missing(error):
    emit("missing", module=getattr(error, "name", None) or str(error), python=sys.executable)
    return MissingModule(str(error))


# Phase 1: only what starting a kernel needs. The first kernel boots (about
# half a second) while phase 2 imports papermill (about a third of a second).
try:
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager
    from jupyter_core.utils import ensure_async
    from traitlets.config import Config
except ImportError as error:  # pragma: no cover - exercised through the Rust side
    missing(error)
    sys.exit(MISSING_MODULE_EXIT)


# The zygote (`--fork-kernels`): a process that has imported what a Python
# kernel imports, forking one kernel per request. Requests on its stdin and
# answers on its stdout are JSON lines: {"id", "cwd", "env", "args"} ->
# {"forked": pid, "id"}; and {"exited": pid, "code"} when a kernel ends.
ZYGOTE_SOURCE = r"""
import atexit, json, os, runpy, select, sys, threading, time, traceback
import ipykernel.kernelapp, ipykernel_launcher  # what the kernel would import first

def answer(message):
    os.write(1, (json.dumps(message) + "\n").encode())

def become_kernel(request, started):
    code = 1
    try:
        os.setsid()  # as jupyter_client starts kernels: a session of their own
        os.write(started, b"s")  # the zygote answers once the session exists
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(2, 1)  # the driver's stdout carries its events: not the kernel's
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        os.environ["JPY_PARENT_PID"] = str(os.getppid())
        # `python -m` puts the working directory first on sys.path (`-c`: "").
        sys.path[0] = os.getcwd()
        # The kernel application read JPY_PARENT_PID when it was imported,
        # before there was one: say it on the command line instead.
        sys.argv = ["-m"] + request["args"] + [f"--IPKernelApp.parent_handle={os.getppid()}"]
        runpy._run_module_as_main("ipykernel_launcher")
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        # What interpreter exit does, which os._exit skips.
        try:
            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)

# Answers for every kernel that ended; False once no kernel is left.
def reap():
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False
        if pid == 0:
            return True
        answer({"exited": pid, "code": os.waitstatus_to_exitcode(status)})

def main():
    if threading.active_count() != 1:  # forking a threaded process is unsafe
        answer({"refused": "threads"})
        return
    answer({"ready": os.getpid()})
    pending = b""
    while True:
        readable, _, _ = select.select([0], [], [], 0.1)
        reap()
        if not readable:
            continue
        chunk = os.read(0, 65536)
        if not chunk:
            # The driver stopped its kernels before closing: wait for them
            # (briefly), so that none is left a zombie for init and their CPU
            # time counts, as a launched kernel's does, in the driver's.
            deadline = time.monotonic() + 3
            while reap() and time.monotonic() < deadline:
                time.sleep(0.02)
            return
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            request = json.loads(line)
            # The driver reads the kernel's process group as soon as it has the
            # pid: it must be the kernel's own by then, never the driver's.
            started_read, started_write = os.pipe()
            pid = os.fork()
            if pid == 0:
                become_kernel(request, started_write)
            os.close(started_write)
            os.read(started_read, 1)
            os.close(started_read)
            answer({"forked": pid, "id": request["id"]})

main()
"""
# Environment variables a forked kernel may have that the zygote has not: the
# ones jupyter_client and nbci set for every kernel.
KERNEL_ONLY_VARIABLES = {"JPY_PARENT_PID", "JPY_SESSION_NAME", TOKEN_VARIABLE}


class ForkedKernel:
    """A kernel the zygote forked, in the shape of the `subprocess.Popen`
    jupyter_client's provisioner keeps (poll, wait, signals)."""

    def __init__(self, pid):
        self.pid = pid
        self.returncode = None
        self.stdin = self.stdout = self.stderr = None
        self.exited = threading.Event()

    def ended(self, code):
        self.returncode = code
        self.exited.set()

    def poll(self):
        return self.returncode

    def wait(self, timeout=None):
        if not self.exited.wait(timeout):
            raise subprocess.TimeoutExpired(["kernel"], timeout)
        return self.returncode

    def send_signal(self, signum):
        if self.returncode is None:
            os.kill(self.pid, signum)

    def terminate(self):
        self.send_signal(signal.SIGTERM)

    def kill(self):
        self.send_signal(signal.SIGKILL)


class Zygote:
    """The zygote process and the kernels it forked."""

    def __init__(self):
        self.process = subprocess.Popen(
            [sys.executable, "-c", ZYGOTE_SOURCE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.usable = False
        self.kernels = {}
        self.forks = {}
        self.next_id = 0
        threading.Thread(target=self.read_answers, daemon=True).start()

    def read_answers(self):
        for line in self.process.stdout:
            try:
                answer = json.loads(line)
            except ValueError:
                continue
            if "ready" in answer:
                self.usable = True
                self.ready.set()
            elif "refused" in answer:
                self.ready.set()
            elif "forked" in answer:
                with self.lock:
                    waiting = self.forks.pop(answer["id"], None)
                if waiting is not None:
                    waiting.append(answer["forked"])
                    waiting_event = waiting[0]
                    waiting_event.set()
            elif "exited" in answer:
                with self.lock:
                    kernel = self.kernels.pop(answer["exited"], None)
                if kernel is not None:
                    kernel.ended(answer["code"])
        # The zygote is gone: so are its kernels (they exit with their parent).
        self.usable = False
        self.ready.set()
        with self.lock:
            kernels, self.kernels = list(self.kernels.values()), {}
            forks, self.forks = list(self.forks.values()), {}
        for kernel in kernels:
            kernel.ended(-signal.SIGKILL)
        for waiting in forks:
            waiting[0].set()

    def fork(self, cmd, env, cwd):
        """A forked kernel for `cmd`, or None when this one must be launched
        the usual way (not a Python kernel of this interpreter, an
        environment the zygote lacks, no zygote)."""
        if not (len(cmd) > 3 and cmd[0] == sys.executable and cmd[1:3] == ["-m", "ipykernel_launcher"]):
            return None
        env = dict(env if env is not None else os.environ)
        differing = {name for name in set(env) | set(os.environ) if env.get(name) != os.environ.get(name)}
        if differing - KERNEL_ONLY_VARIABLES:
            return None
        if not self.ready.wait(30) or not self.usable:
            return None
        waiting = [threading.Event()]
        with self.lock:
            self.next_id += 1
            request_id = self.next_id
            self.forks[request_id] = waiting
        request = {"id": request_id, "cwd": cwd or os.getcwd(), "env": env, "args": list(cmd[3:])}
        try:
            self.process.stdin.write((json.dumps(request) + "\n").encode())
            self.process.stdin.flush()
        except OSError:
            return None
        if not waiting[0].wait(30) or len(waiting) < 2:
            return None
        kernel = ForkedKernel(waiting[1])
        with self.lock:
            self.kernels[kernel.pid] = kernel
        return kernel

    def close(self):
        try:
            self.process.stdin.close()
            self.process.wait(5)
        except Exception:
            self.process.kill()


def use_zygote(zygote):
    """Makes jupyter_client launch Python kernels through `zygote`."""
    import jupyter_client.provisioning.local_provisioner as local_provisioner

    launch = local_provisioner.launch_kernel

    def launch_kernel(cmd, **kwargs):
        kernel = zygote.fork(cmd, kwargs.get("env"), kwargs.get("cwd"))
        return kernel if kernel is not None else launch(cmd, **kwargs)

    local_provisioner.launch_kernel = launch_kernel


def import_papermill():
    """Phase 2: papermill, nbclient and nbformat (once per process)."""
    global papermill, nbformat, CellExecutionComplete, CellExecutionError
    global CellTimeoutError, DeadKernelError, prepare_notebook_metadata
    global remove_error_markers, load_notebook_node, parameterize_notebook, logging
    if "papermill" in globals():
        return
    try:
        import logging

        import nbformat
        import papermill
        from nbclient.exceptions import (
            CellExecutionComplete,
            CellExecutionError,
            CellTimeoutError,
            DeadKernelError,
        )
        from papermill.execute import prepare_notebook_metadata, remove_error_markers
        from papermill.iorw import load_notebook_node
        from papermill.parameterize import parameterize_notebook
    except ImportError as error:  # pragma: no cover - exercised through the Rust side
        raise missing(error) from None
    logging.basicConfig(level=logging.ERROR)
    define_classes()


class NotebookDeadline(Exception):
    """The whole-notebook timeout ran out while a cell was executing."""


class OutputLimitExceeded(Exception):
    """A cell's outputs passed the notebook's cap (the kernel is stopped)."""


def output_size(msg):
    """The characters an output message adds to the notebook (what the cap counts)."""
    kind = msg.get("msg_type")
    content = msg.get("content") or {}
    if kind == "stream":
        return len(content.get("text") or "")
    if kind in ("display_data", "execute_result", "update_display_data"):
        return sum(
            len(value) if isinstance(value, str) else len(json.dumps(value))
            for value in (content.get("data") or {}).values()
        )
    if kind == "error":
        return len(content.get("evalue") or "") + sum(len(line) for line in content.get("traceback") or [])
    return 0


class NotebookWriteError(Exception):
    """The executed notebook could not be written (a full disk, a file-size
    limit, a vanished directory): the run's end reason is then
    `output_unwritable`, which nbci reports as a failure to write that file,
    not as the notebook's verdict."""


def write_notebook(nb, path):
    """Writes the notebook as papermill does (nbformat's JSON), atomically: a
    reader sees the previous version or this one, never half of one, and a
    failed write leaves no partial file behind."""
    text = nbformat.writes(nb)
    temporary = f"{path}.nbci-partial"
    try:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, path)
    except OSError as error:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise NotebookWriteError(error.strerror or str(error)) from error


def define_classes():
    """papermill's execution manager and client with nbci's additions (they
    subclass papermill, so they are defined once papermill is imported)."""
    global NbciExecutionManager, NbciNotebookClient
    from papermill.clientwrap import PapermillNotebookClient
    from papermill.engines import NotebookExecutionManager

    class NbciExecutionManager(NotebookExecutionManager):
        """papermill's bookkeeping (each cell's status, times and exception in
        its metadata), writing the notebook when it ends and at most every
        `autosave` seconds before that, instead of at every cell's start and end."""

        def __init__(self, nb, output_path, autosave):
            super().__init__(nb, output_path=output_path, progress_bar=False, autosave_cell_every=autosave)
            self.nbci_last_write = time.monotonic()
            self.nbci_completing = False

        def save(self, **kwargs):
            if self.nbci_completing or self.autosave_cell_every <= 0:
                return
            if time.monotonic() - self.nbci_last_write >= self.autosave_cell_every:
                self.write()

        def autosave_cell(self):
            self.save()

        def write(self):
            started = time.monotonic()
            write_notebook(self.nb, self.output_path)
            self.nbci_last_write = time.monotonic()
            # papermill's rule: a write taking over a quarter of the interval
            # makes the interval twice as long.
            if self.nbci_last_write - started > self.autosave_cell_every * 0.25:
                self.autosave_cell_every *= 2

        def notebook_complete(self, **kwargs):
            """papermill's final bookkeeping, then the one write that always happens."""
            self.nbci_completing = True
            try:
                super().notebook_complete(**kwargs)
            finally:
                self.write()

    class NbciNotebookClient(PapermillNotebookClient):
        """papermill's client, driven asynchronously on a kernel started
        beforehand, with progress events, a whole-notebook deadline and an
        output cap."""

        def __init__(self, nb_man, deadline=None, cell_timeout=None, max_output=None, **kw):
            super().__init__(nb_man, **kw)
            self.nbci_deadline = deadline
            self.nbci_cell_timeout = cell_timeout
            self.nbci_max_output = max_output
            self.nbci_output_size = 0
            self.nbci_output_limited = False
            self.nbci_running = None
            self.nbci_id = None

        async def nbci_execute(self):
            """papermill's `execute`, on the kernel `km` already launched."""
            self.reset_execution_trackers()
            self.kc = self.km.client()
            await ensure_async(self.kc.start_channels())
            await ensure_async(self.kc.wait_for_ready(timeout=self.startup_timeout))
            self.kc.allow_stdin = False
            await self.nbci_execute_cells()
            info_msg = await self.async_wait_for_reply(await ensure_async(self.kc.kernel_info()))
            if info_msg is not None and "language_info" in info_msg["content"]:
                self.nb.metadata["language_info"] = info_msg["content"]["language_info"]
            self.set_widgets_metadata()

        async def nbci_execute_cells(self):
            """papermill's `papermill_execute_cells`, with nbci's events and limits."""
            for index, cell in enumerate(self.nb.cells):
                self.nbci_running = index
                started = time.monotonic()
                emit("cell_start", id=self.nbci_id, index=index, cell_type=cell.cell_type)
                limited_by_deadline = self._limit_timeout()
                outcome = "ok"
                try:
                    self.nb_man.cell_start(cell, index)
                    await self.async_execute_cell(cell, index)
                    if self.nbci_output_limited:
                        # The cell may have ended before its kernel was stopped:
                        # no cell runs after the cap either way.
                        raise OutputLimitExceeded()
                except CellTimeoutError:
                    self.nb_man.cell_exception(self.nb.cells[index], cell_index=index)
                    outcome = "timeout"
                    if limited_by_deadline:
                        raise NotebookDeadline() from None
                    raise
                except CellExecutionError as error:
                    self.nb_man.cell_exception(self.nb.cells[index], cell_index=index, exception=error)
                    outcome = "error"
                    break
                except BaseException:
                    outcome = "error"
                    raise
                finally:
                    self.nb_man.cell_complete(self.nb.cells[index], cell_index=index)
                    emit(
                        "cell_done",
                        id=self.nbci_id,
                        index=index,
                        outcome=outcome,
                        seconds=time.monotonic() - started,
                    )
            self.nbci_running = None

        def _limit_timeout(self):
            """Sets this cell's timeout to the smaller of the cell limit and what remains
            of the notebook's; returns whether the notebook's deadline is the limit."""
            limit = self.nbci_cell_timeout
            by_deadline = False
            if self.nbci_deadline is not None:
                remaining = self.nbci_deadline - time.monotonic()
                if limit is None or remaining < limit:
                    limit, by_deadline = remaining, True
            # nbclient takes whole seconds; never round a limit up past the deadline.
            self.timeout = None if limit is None else max(1, int(limit))
            return by_deadline

        def process_message(self, msg, cell, cell_index):
            """Counts outputs against the cap; past it, the kernel is killed (the
            run then fails) and further outputs are dropped."""
            if self.nbci_output_limited:
                content = msg.get("content") or {}
                if msg.get("msg_type") == "status" and content.get("execution_state") == "idle":
                    raise CellExecutionComplete()
                return None
            if self.nbci_max_output is not None:
                self.nbci_output_size += output_size(msg)
                if self.nbci_output_size > self.nbci_max_output:
                    self.nbci_output_limited = True
                    kill_kernel_now(self.km)
                    return None
            return super().process_message(msg, cell, cell_index)


def kill_kernel_now(km):
    """SIGKILL to the kernel's process group, at once and without awaiting."""
    provisioner = getattr(km, "provisioner", None)
    pgid = getattr(provisioner, "pgid", None) or getattr(provisioner, "pid", None)
    if pgid:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except OSError:
            pass


def tagged_processes(token):
    """The processes whose environment carries `NBCI_RUN=token`. Without /proc
    (not Linux) there are none: the process-group kill is all there is."""
    needle = f"{TOKEN_VARIABLE}={token}".encode()
    found = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return found
    for name in names:
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as handle:
                environment = handle.read()
        except OSError:  # gone, or another user's
            continue
        if needle in environment.split(b"\0"):
            found.append(int(name))
    return found


async def kill_tagged(token):
    """Kills every process carrying the token, again until none is left (a
    process may fork while its siblings die)."""
    for _ in range(50):
        pids = tagged_processes(token)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        await asyncio.sleep(0.02)


def installed_kernels():
    try:
        return set(KernelSpecManager().find_kernel_specs())
    except Exception:  # a broken kernel directory must not hide the real error
        return set()


def choose_kernel(nb, requested, language, warnings):
    """The kernel to start: the request, else the notebook's, else python3."""
    if requested:
        return requested
    named = (nb.get("metadata", {}).get("kernelspec") or {}).get("name")
    if not named:
        return "python3"
    if named in installed_kernels():
        return named
    if language == "python":
        warnings.append(f"kernel {named!r} named by the notebook is not installed; using 'python3'")
        return "python3"
    return named


def notebook_language(nb, requested):
    if requested:
        return requested
    spec = nb.get("metadata", {}).get("kernelspec") or {}
    info = nb.get("metadata", {}).get("language_info") or {}
    return spec.get("language") or info.get("name") or "python"


def ipc_config(private_dir):
    """Kernel channels as Unix sockets in a directory of this run's own."""
    config = Config()
    config.KernelManager.transport = "ipc"
    config.KernelManager.ip = os.path.join(private_dir, "kernel")
    return config


class EndReason(str, enum.Enum):
    """Why a run stopped; the Rust side reads these names into its own
    `EndReason` enum (engine.rs), so both sides list the same eight."""

    COMPLETED = "completed"
    CELL_TIMEOUT = "cell_timeout"
    NOTEBOOK_TIMEOUT = "notebook_timeout"
    DEAD_KERNEL = "dead_kernel"
    OUTPUT_LIMIT = "output_limit"
    TERMINATED = "terminated"
    OUTPUT_UNWRITABLE = "output_unwritable"
    ENGINE_ERROR = "engine_error"


class Run:
    """One notebook: its request and, once launched, its kernel."""

    def __init__(self, request):
        self.request = request
        self.id = request.get("id")
        self.km = None
        self.kernel_name = None
        self.language = None
        self.private_dir = None
        self.warnings = []
        self.launch_error = None
        self.launching = None
        self.graceful_stop = True

    async def launch(self):
        """Launches the kernel without waiting for it to be ready."""
        request = self.request
        try:
            with open(request["input"], encoding="utf-8") as handle:
                raw = json.load(handle)
            self.language = notebook_language(raw, request.get("language"))
            self.kernel_name = choose_kernel(raw, request.get("kernel"), self.language, self.warnings)
            self.private_dir = tempfile.mkdtemp(prefix="nbci-k-")
            km = AsyncKernelManager(kernel_name=self.kernel_name, config=ipc_config(self.private_dir))
            environment = dict(os.environ)
            environment[TOKEN_VARIABLE] = request["token"]
            self.km = km
            # The same history setting nbclient passes to kernels it starts itself.
            await km.start_kernel(
                extra_arguments=["--HistoryManager.hist_file=:memory:"],
                cwd=request.get("cwd"),
                env=environment,
            )
        except Exception as error:  # reported when the notebook runs
            self.launch_error = error

    async def stop(self):
        """Stops the kernel (asking it first, unless the run ended badly) and
        kills every process of the run."""
        if self.launching is not None:
            try:
                await self.launching
            except BaseException:
                pass
        km = self.km
        if km is not None:
            try:
                if self.graceful_stop and await ensure_async(km.is_alive()):
                    km.shutdown_wait_time = SHUTDOWN_WAIT
                    await km.shutdown_kernel(now=False)
                else:
                    await km.shutdown_kernel(now=True)
            except Exception:
                kill_kernel_now(km)
        token = self.request.get("token")
        if token:
            await kill_tagged(token)
        if self.private_dir:
            shutil.rmtree(self.private_dir, ignore_errors=True)


async def execute(run, driver):
    """Runs one notebook to its end; emits start, cells and end."""
    request = run.request
    started = time.monotonic()
    timeout = request.get("timeout")
    deadline = started + timeout if timeout else None
    reason, detail, client = EndReason.COMPLETED, None, None
    for message in run.warnings:
        emit("warning", id=run.id, message=message)
    try:
        await run.launching
        if run.launch_error is not None:
            raise run.launch_error
        import_papermill()
        nb = load_notebook_node(request["input"])
        parameters = request.get("parameters") or {}
        if parameters:
            nb = parameterize_notebook(
                nb, parameters, report_mode=False, kernel_name=run.kernel_name, language=run.language
            )
        nb = prepare_notebook_metadata(nb, request["input"], request["output"])
        nb = remove_error_markers(nb)
        emit(
            "start",
            id=run.id,
            kernel=run.kernel_name,
            python=sys.version.split()[0],
            papermill=papermill.__version__,
            cells=[
                {"cell_type": cell.cell_type, "tags": list(cell.get("metadata", {}).get("tags", []))}
                for cell in nb.cells
            ],
        )
        nb_man = NbciExecutionManager(nb, request["output"], request.get("autosave") or 0)
        nb_man.notebook_start()
        client = NbciNotebookClient(
            nb_man,
            km=run.km,
            kernel_name=run.kernel_name,
            startup_timeout=request.get("start_timeout") or 60,
            log=logging.getLogger("papermill"),
            log_output=False,
            deadline=deadline,
            cell_timeout=request.get("cell_timeout"),
            max_output=request.get("max_output"),
            skip_cells_with_tag="skip-execution",
        )
        client.nbci_id = run.id
        driver.current_client = client
        try:
            await client.nbci_execute()
        finally:
            if client.nbci_output_limited:
                note_output_limit(client, request.get("max_output"))
            try:
                nb_man.notebook_complete()
            finally:
                if client.kc is not None:
                    client.kc.stop_channels()
    except MissingModule:
        raise
    except BaseException as error:
        run.graceful_stop = False
        reason, detail = classify(error, client, driver, request)
    if reason is EndReason.COMPLETED and client is not None and client.nbci_output_limited:
        run.graceful_stop = False
        reason, detail = EndReason.OUTPUT_LIMIT, output_limit_message(request.get("max_output"))
    running = client.nbci_running if client is not None else None
    emit("end", id=run.id, reason=reason.value, detail=detail, running=running)


def output_limit_message(limit):
    return (
        f"the notebook's output passed the limit of {limit:,} characters (NBCI_MAX_OUTPUT); "
        "the kernel was stopped"
    )


def note_output_limit(client, limit):
    """Puts the reason into the executed notebook, as an error output of the
    cell that passed the cap, for whoever opens it."""
    index = client.nbci_running
    if index is None or index >= len(client.nb.cells):
        return
    message = output_limit_message(limit)
    cell = client.nb.cells[index]
    cell.setdefault("outputs", []).append(
        nbformat.v4.new_output("error", ename="OutputLimitExceeded", evalue=message, traceback=[message])
    )


def classify(error, client, driver, request):
    """The end reason and detail for a run that raised `error`."""
    if driver.stopping:
        return EndReason.TERMINATED, "nbci was stopped (SIGTERM) while the notebook ran"
    if client is not None and client.nbci_output_limited:
        return EndReason.OUTPUT_LIMIT, output_limit_message(request.get("max_output"))
    if isinstance(error, NotebookWriteError) or isinstance(error.__context__, NotebookWriteError):
        cause = error if isinstance(error, NotebookWriteError) else error.__context__
        return EndReason.OUTPUT_UNWRITABLE, str(cause)
    if isinstance(error, NotebookDeadline):
        return EndReason.NOTEBOOK_TIMEOUT, f"the notebook ran longer than {request.get('timeout'):g} s"
    if "CellTimeoutError" in globals() and isinstance(error, CellTimeoutError):
        return EndReason.CELL_TIMEOUT, f"a cell ran longer than {request.get('cell_timeout'):g} s"
    if "DeadKernelError" in globals() and isinstance(error, DeadKernelError):
        return EndReason.DEAD_KERNEL, str(error) or "the kernel died"
    # the kernel could not start, and the like
    return EndReason.ENGINE_ERROR, f"{type(error).__name__}: {error}"


class Driver:
    """The requests received, the run in progress, and kernels being stopped."""

    def __init__(self):
        self.runs = {}
        self.queue = collections.deque()
        self.wakeup = asyncio.Event()
        self.stopping = False
        self.current = None
        self.current_client = None
        self.stops = set()

    def receive(self, message):
        """Handles one request (on the event loop); `None` is the end of input."""
        if message is None:
            self.stop()
            return
        op, run_id = message.get("op"), message.get("id")
        if op in ("prepare", "run"):
            run = self.runs.get(run_id)
            if run is None:
                run = Run(message)
                self.runs[run_id] = run
                run.launching = asyncio.ensure_future(run.launch())
            else:
                run.request = message
            if op == "run":
                self.queue.append(run_id)
                self.wakeup.set()
        elif op == "cancel":
            run = self.runs.pop(run_id, None)
            if run is not None:
                if run_id in self.queue:
                    self.queue.remove(run_id)
                self.stop_run(run)

    def stop(self):
        """End of input or SIGTERM: the running notebook is ended (its kernel
        killed, which ends its cell at once) and no other one starts."""
        if self.stopping:
            return
        self.stopping = True
        if self.current is not None and self.current.km is not None:
            kill_kernel_now(self.current.km)
        self.wakeup.set()

    def stop_run(self, run):
        task = asyncio.ensure_future(run.stop())
        self.stops.add(task)
        task.add_done_callback(self.stops.discard)

    async def serve(self):
        while True:
            while not self.queue and not self.stopping:
                self.wakeup.clear()
                await self.wakeup.wait()
            if self.stopping:
                break
            run = self.runs.pop(self.queue.popleft())
            self.current = run
            try:
                await execute(run, self)
            finally:
                self.current = None
                self.current_client = None
                self.stop_run(run)
        for run in list(self.runs.values()):
            self.stop_run(run)
        self.runs.clear()
        while self.stops:
            await asyncio.gather(*list(self.stops), return_exceptions=True)


def read_requests(loop, driver):
    """The stdin reader thread: hands each request line to the event loop."""
    for line in sys.stdin.buffer:
        line = line.strip()
        if not line:
            continue
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if isinstance(message, dict):
            loop.call_soon_threadsafe(driver.receive, message)
    loop.call_soon_threadsafe(driver.receive, None)


async def main():
    loop = asyncio.get_running_loop()
    driver = Driver()
    zygote = None
    if "--fork-kernels" in sys.argv[1:]:
        zygote = Zygote()
        use_zygote(zygote)
    loop.add_signal_handler(signal.SIGTERM, driver.stop)
    threading.Thread(target=read_requests, args=(loop, driver), daemon=True).start()
    # A request already on its way launches its kernel before papermill's import.
    await asyncio.sleep(FIRST_REQUEST_WAIT)
    try:
        import_papermill()
        await driver.serve()
    except MissingModule:
        driver.stop()
        for run in list(driver.runs.values()):
            driver.stop_run(run)
        while driver.stops:
            await asyncio.gather(*list(driver.stops), return_exceptions=True)
        return MISSING_MODULE_EXIT
    finally:
        if zygote is not None:
            zygote.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
