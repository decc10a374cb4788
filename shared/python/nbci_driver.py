"""nbci's notebook driver: papermill's execution, with nbci's rules on top.

`nbci` (Rust) starts this script with the virtual environment's Python, sends
one JSON request on stdin, and reads events from stdout: one line per event,
each `@nbci ` followed by a JSON object. The script never decides the verdict:
it executes, writes the executed notebook, and says how execution ended; the
Rust side reads the executed notebook and decides (one place for that rule).

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
  `python3` for Python notebooks (with a warning) instead of failing.

Request fields: input, output, cwd, parameters, kernel, language,
cell_timeout, timeout, start_timeout (seconds or null).
Events: start, warning, cell_start, cell_done, end.
"""

import enum
import json
import os
import shutil
import sys
import tempfile
import time

EVENT_PREFIX = "@nbci "
# Exit status when a module is missing: the Rust side turns it into a message
# that names the command installing the environment.
MISSING_MODULE_EXIT = 90


def emit(event, **fields):
    fields["event"] = event
    sys.stdout.write(EVENT_PREFIX + json.dumps(fields) + "\n")
    sys.stdout.flush()


def missing(error):
    emit("missing", module=getattr(error, "name", None) or str(error), python=sys.executable)
    sys.exit(MISSING_MODULE_EXIT)


# Phase 1: only what starting a kernel needs. The kernel boots (about half a
# second) while phase 2 imports papermill (about a third of a second).
try:
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager
    from jupyter_core.utils import run_sync
    from traitlets.config import Config
except ImportError as error:  # pragma: no cover - exercised through the Rust side
    missing(error)


def import_papermill():
    """Phase 2: papermill and nbclient, imported while the kernel starts."""
    global papermill, CellExecutionError, CellTimeoutError, DeadKernelError
    global PapermillNotebookClient, NBClientEngine, papermill_engines
    global prepare_notebook_metadata, remove_error_markers, load_notebook_node
    global parameterize_notebook, chdir, logging
    try:
        import logging

        import papermill
        from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
        from papermill.clientwrap import PapermillNotebookClient
        from papermill.engines import NBClientEngine, papermill_engines
        from papermill.execute import prepare_notebook_metadata, remove_error_markers
        from papermill.iorw import load_notebook_node
        from papermill.parameterize import parameterize_notebook
        from papermill.utils import chdir
    except ImportError as error:  # pragma: no cover - exercised through the Rust side
        missing(error)
    define_classes()


class NotebookDeadline(Exception):
    """The whole-notebook timeout ran out while a cell was executing."""


def define_classes():
    """Papermill's client and engine with nbci's additions (they subclass
    papermill, so they are defined once papermill is imported)."""
    global NbciNotebookClient, NbciEngine

    class NbciNotebookClient(PapermillNotebookClient):
        """Papermill's client with progress events and a whole-notebook deadline."""

        def __init__(self, nb_man, deadline=None, cell_timeout=None, **kw):
            super().__init__(nb_man, **kw)
            self.nbci_deadline = deadline
            self.nbci_cell_timeout = cell_timeout
            self.nbci_running = None

        def papermill_execute_cells(self):
            for index, cell in enumerate(self.nb.cells):
                self.nbci_running = index
                started = time.monotonic()
                emit("cell_start", index=index, cell_type=cell.cell_type)
                limited_by_deadline = self._limit_timeout()
                outcome = "ok"
                try:
                    self.nb_man.cell_start(cell, index)
                    self.execute_cell(cell, index)
                except CellTimeoutError:
                    # nbclient leaves a timed-out kernel busy; do not wait politely for it.
                    self.shutdown_kernel = "immediate"
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
                    self.shutdown_kernel = "immediate"
                    outcome = "error"
                    raise
                finally:
                    self.nb_man.cell_complete(self.nb.cells[index], cell_index=index)
                    emit("cell_done", index=index, outcome=outcome, seconds=time.monotonic() - started)
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


    class NbciEngine(NBClientEngine):
        """Papermill's nbclient engine, building our client instead of its own."""

        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, **kwargs):
            kwargs.pop("input_path", None)
            client_kwargs = {
                "kernel_name": kernel_name,
                "startup_timeout": kwargs.pop("start_timeout", 60),
                "log": logging.getLogger("papermill"),
                "log_output": False,
                "deadline": kwargs.pop("deadline", None),
                "cell_timeout": kwargs.pop("cell_timeout", None),
                    "skip_cells_with_tag": "skip-execution",
            }
            # The kernel started before papermill was imported; the client still
            # shuts it down at the end, as one it started itself.
            cls.nbci_client = NbciNotebookClient(nb_man, km=kwargs.pop("km", None), **client_kwargs)
            return cls.nbci_client.execute(cleanup_kc=True)


def installed_kernels():
    try:
        return set(KernelSpecManager().find_kernel_specs())
    except Exception:  # a broken kernel directory must not hide the real error
        return set()


def choose_kernel(nb, requested, language):
    """The kernel to start: the request, else the notebook's, else python3."""
    if requested:
        return requested
    named = (nb.get("metadata", {}).get("kernelspec") or {}).get("name")
    if not named:
        return "python3"
    if named in installed_kernels():
        return named
    if language == "python":
        emit(
            "warning",
            message=f"kernel {named!r} named by the notebook is not installed; using 'python3'",
        )
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


def start_kernel(kernel_name, cwd, private_dir):
    """Launches the kernel without waiting for it to be ready."""
    km = AsyncKernelManager(kernel_name=kernel_name, config=ipc_config(private_dir))
    # The same history setting nbclient passes to kernels it starts itself.
    run_sync(km.start_kernel)(extra_arguments=["--HistoryManager.hist_file=:memory:"], cwd=cwd)
    return km


def stop_kernel(km):
    """Kills the kernel if it still runs (the client normally shut it down)."""
    try:
        if run_sync(km.is_alive)():
            run_sync(km.shutdown_kernel)(now=True)
    except Exception:
        pass


class EndReason(str, enum.Enum):
    """Why the driver stopped; the Rust side reads these names into its own
    `EndReason` enum (engine.rs), so both sides list the same five."""

    COMPLETED = "completed"
    CELL_TIMEOUT = "cell_timeout"
    NOTEBOOK_TIMEOUT = "notebook_timeout"
    DEAD_KERNEL = "dead_kernel"
    ENGINE_ERROR = "engine_error"


def main():
    request = json.load(sys.stdin)
    started = time.monotonic()
    timeout = request.get("timeout")
    deadline = started + timeout if timeout else None
    with open(request["input"], encoding="utf-8") as handle:
        raw = json.load(handle)
    language = notebook_language(raw, request.get("language"))
    kernel_name = choose_kernel(raw, request.get("kernel"), language)

    private_dir = tempfile.mkdtemp(prefix="nbci-k-")
    reason, detail, km = EndReason.COMPLETED, None, None
    try:
        km = start_kernel(kernel_name, request.get("cwd"), private_dir)
        import_papermill()
        logging.basicConfig(level=logging.ERROR)
        nb = load_notebook_node(request["input"])
        parameters = request.get("parameters") or {}
        if parameters:
            nb = parameterize_notebook(
                nb, parameters, report_mode=False, kernel_name=kernel_name, language=language
            )
        nb = prepare_notebook_metadata(nb, request["input"], request["output"])
        nb = remove_error_markers(nb)
        emit(
            "start",
            kernel=kernel_name,
            python=sys.version.split()[0],
            papermill=papermill.__version__,
            cells=[
                {
                    "cell_type": cell.cell_type,
                    "tags": list(cell.get("metadata", {}).get("tags", [])),
                }
                for cell in nb.cells
            ],
        )
        with chdir(request.get("cwd")):
            papermill_engines.register("nbci", NbciEngine)
            papermill_engines.execute_notebook_with_engine(
                "nbci",
                nb,
                kernel_name=kernel_name,
                input_path=request["input"],
                output_path=request["output"],
                progress_bar=False,
                log_output=False,
                start_timeout=request.get("start_timeout") or 60,
                deadline=deadline,
                cell_timeout=request.get("cell_timeout"),
                km=km,
            )
    except NotebookDeadline:
        reason, detail = EndReason.NOTEBOOK_TIMEOUT, f"the notebook ran longer than {timeout:g} s"
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as error:
        if "CellTimeoutError" in globals() and isinstance(error, CellTimeoutError):
            reason = EndReason.CELL_TIMEOUT
            detail = f"a cell ran longer than {request.get('cell_timeout'):g} s"
        elif "DeadKernelError" in globals() and isinstance(error, DeadKernelError):
            reason, detail = EndReason.DEAD_KERNEL, str(error) or "the kernel died"
        else:  # the kernel could not start, and the like
            reason, detail = EndReason.ENGINE_ERROR, f"{type(error).__name__}: {error}"
    finally:
        if km is not None:
            stop_kernel(km)
        shutil.rmtree(private_dir, ignore_errors=True)
    client = getattr(globals().get("NbciEngine"), "nbci_client", None)
    running = client.nbci_running if client is not None else None
    emit("end", reason=reason.value, detail=detail, running=running)


if __name__ == "__main__":
    main()
