"""Writing reports: markdown pages with generated parts, the command line that made them,
the machine they ran on, and matplotlib (optional: only plots need it)."""
import os
import os.path as osp
import platform
import shlex
import sys
from typing import Optional, Sequence

__all__ = ['write_markdown', 'command_line', 'machine', 'pyplot', 'save_figure']


def write_markdown(path: str, text: str, tag: str = 'benchmark') -> None:
    """Write ``text`` to ``path``; if ``path`` exists with ``<!-- {tag}:begin -->`` /
    ``<!-- {tag}:end -->`` markers, replace only what lies between them (docs keep their
    prose, the tables are regenerated)."""
    begin, end = f'<!-- {tag}:begin -->', f'<!-- {tag}:end -->'
    old = open(path).read() if osp.exists(path) else ''
    if begin in old and end in old.split(begin, 1)[1]:
        head, rest = old.split(begin, 1)
        text = f'{head}{begin}\n{text}\n{end}{rest.split(end, 1)[1]}'
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with open(path, 'w') as f:
        f.write(text if text.endswith('\n') else text + '\n')


def command_line(argv: Optional[Sequence[str]] = None, root: Optional[str] = None) -> str:
    """``python`` and the command as typed (``sys.argv`` by default), the script path
    relative to ``root`` (e.g. the repository) when it lies inside it."""
    argv = list(sys.argv if argv is None else argv)
    script = osp.abspath(argv[0])
    if root is not None and script.startswith(osp.abspath(root) + os.sep):
        argv[0] = osp.relpath(script, root)
    return 'python ' + shlex.join(argv)


def machine() -> str:
    """'CPU model (N cores, torch threads T)', for the header of a report."""
    import torch
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
    except (OSError, StopIteration):
        pass
    return f'{cpu} ({os.cpu_count()} cores, torch threads {torch.get_num_threads()})'


def pyplot():
    """``matplotlib.pyplot`` on the file-only Agg backend; one error line without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        from mmcondattn.engine.launch import UserError
        raise UserError('plots need matplotlib: pip install matplotlib '
                        "(or pip install -e '.[analysis]')") from None
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, path: str, dpi: int = 100) -> str:
    """Lay out ``fig``, write it to ``path`` and close it; returns ``path``."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path
