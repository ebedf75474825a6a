"""Re-execute the analyst notebooks and save them with their outputs, after an edit to a notebook's ``.py``.

    python notebooks/refresh.py --corpus songcorpus-demo --eval eval/samuel

Reads ``notebooks/NAME.py`` (the source reviewers read: the percent format, paired with ``NAME.ipynb`` through
jupytext), runs it top to bottom in a fresh ipykernel on this Python, and writes ``NAME.ipynb`` with its outputs
(and ``NAME.py`` again in jupytext's own layout, which leaves an unchanged file as it was). ``--corpus`` and
``--eval`` are injected for the run as a cell after the one tagged ``parameters`` (as papermill does) and dropped
before saving, so the saved notebook keeps its defaults and stays equal to its ``.py``; without them the defaults
are read from this folder (``../songcorpus-demo``, ``../eval/samuel``). Cell ids are derived from the cells'
content, so a re-run rewrites only what changed.

The kernel is this Python's ipykernel, described by a kernelspec in a temporary folder (with IPython's folder and
Jupyter's runtime files there too): nothing in the user's Jupyter or IPython folders is read or written, and no
network is used. Needs the dev extra (jupytext, nbclient, nbformat, ipykernel). A cell that fails stops it with one
line naming the notebook and the cell's error (exit 2), and the saved notebook is left as it was; an unknown
notebook name is refused the same way.
"""

import argparse
import copy
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import jupytext
import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

NOTEBOOKS = Path(__file__).resolve().parent
NAMES = ("catalog_overview", "eval_overview")
FORMATS = "ipynb,py:percent"
KERNEL = "python3"  # an ipykernel name, so nbclient keeps the kernel's IPython history in memory
INJECTED = "injected-parameters"


def kernel_manager(workdir: Path) -> KernelManager:
    """A manager for this Python's ipykernel; its kernelspec, sockets, connection file and IPython folder in
    ``workdir``."""
    spec_dir = workdir / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3 (ipykernel)", "language": "python",
            "env": {"IPYTHONDIR": str(workdir / "ipython"), "JUPYTER_RUNTIME_DIR": str(workdir / "runtime"),
                    "MPLBACKEND": "module://matplotlib_inline.backend_inline"}}
    (spec_dir / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")
    specs = KernelSpecManager(kernel_dirs=[str(workdir / "kernels")], ensure_native_kernel=False)
    # IPC sockets in workdir: no TCP port is opened, so nothing else on the machine can reach the kernel
    return KernelManager(kernel_name=KERNEL, kernel_spec_manager=specs, transport="ipc",
                         ip=str(workdir / "kernel"), connection_file=str(workdir / "connection.json"))


def with_parameters(nb: nbformat.NotebookNode, parameters: dict) -> nbformat.NotebookNode:
    """A copy of ``nb`` with a cell setting ``parameters`` right after its cell tagged ``parameters``."""
    nb = copy.deepcopy(nb)
    if not parameters:
        return nb
    at = next((i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])), None)
    if at is None:
        raise ValueError("the notebook has no cell tagged 'parameters' to inject its inputs after")
    source = "\n".join(f"{name} = {value!r}" for name, value in parameters.items())
    nb.cells.insert(at + 1, nbformat.v4.new_code_cell(source, metadata={"tags": [INJECTED]}))
    return nb


def execute(nb: nbformat.NotebookNode, parameters: dict | None = None, timeout: int = 300) -> nbformat.NotebookNode:
    """``nb`` run top to bottom from this folder with ``parameters`` injected; raises CellExecutionError on a
    failing cell. The injected cell stays in the returned notebook."""
    nb = with_parameters(nb, parameters or {})
    with tempfile.TemporaryDirectory(prefix="songcorpus-kernel-") as tmp:
        km = kernel_manager(Path(tmp))
        try:
            # cleanup_kc: nbclient leaves a kernel it was handed running unless told to stop it
            NotebookClient(nb, km=km, timeout=timeout, record_timing=False,
                           resources={"metadata": {"path": str(NOTEBOOKS)}}).execute(cleanup_kc=True)
        finally:  # stopped in any case before its folder goes (a kernel that failed to start, an interrupt)
            if km.has_kernel:
                km.shutdown_kernel()
    return nb


def for_saving(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """``nb`` without its injected cell (execution counts renumbered as a run with the defaults numbers them), with
    content-derived cell ids, its kernel and its jupytext pairing recorded."""
    nb = copy.deepcopy(nb)
    nb.cells = [c for c in nb.cells if INJECTED not in c.metadata.get("tags", [])]
    count = 0
    for cell in nb.cells:
        if cell.cell_type == "code" and cell.get("execution_count"):
            count += 1
            cell.execution_count = count
            for output in cell.outputs:
                if "execution_count" in output:
                    output.execution_count = count
    seen: dict[str, int] = {}
    for cell in nb.cells:
        digest = hashlib.sha256(f"{cell.cell_type}\n{cell.source}".encode()).hexdigest()[:12]
        seen[digest] = seen.get(digest, 0) + 1
        cell.id = digest if seen[digest] == 1 else f"{digest}-{seen[digest]}"
    nb.metadata.kernelspec = {"name": KERNEL, "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.metadata.setdefault("jupytext", {})["formats"] = FORMATS
    return nb


def refresh(name: str, parameters: dict) -> Path:
    """Run notebook ``name`` from its .py and save its .ipynb (and its .py in jupytext's layout)."""
    source = NOTEBOOKS / f"{name}.py"
    nb = for_saving(execute(jupytext.read(source), parameters))
    jupytext.write(nb, NOTEBOOKS / f"{name}.ipynb")
    jupytext.write(nb, source, fmt="py:percent")
    return NOTEBOOKS / f"{name}.ipynb"


def failed_cell(error: CellExecutionError) -> str:
    """The last line of a failing cell's error: its exception and message."""
    return f"{error.ename}: {error.evalue}".splitlines()[0] if error.ename else str(error).strip().splitlines()[-1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Re-execute the analyst notebooks from their .py and save the .ipynb.")
    p.add_argument("names", nargs="*", metavar="NAME", help=f"which notebooks ({', '.join(NAMES)}; default all)")
    p.add_argument("--corpus", help="a curated corpus folder (default ../songcorpus-demo from notebooks/)")
    p.add_argument("--eval", action="append", help="an EVAL folder for eval_overview (repeatable)")
    args = p.parse_args(argv)
    unknown = sorted(set(args.names) - set(NAMES))
    if unknown:
        p.error(f"no notebook {', '.join(unknown)}: choose from {', '.join(NAMES)}")
    args.names = args.names or list(NAMES)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    corpus = str(Path(args.corpus).resolve()) if args.corpus else None
    evals = [str(Path(e).resolve()) for e in args.eval or []]
    given = {"catalog_overview": {"OUT": corpus}, "eval_overview": {"CORPUS": corpus,
                                                                    "EVAL": evals[0] if len(evals) == 1 else evals}}
    for name in args.names:
        parameters = {k: v for k, v in given[name].items() if v}
        try:
            path = refresh(name, parameters)
        except CellExecutionError as e:
            print(f"refresh: {name}.py failed, {name}.ipynb left as it was: {failed_cell(e)}", file=sys.stderr)
            return 2
        print(f"{path.relative_to(NOTEBOOKS.parent)}: {path.stat().st_size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
