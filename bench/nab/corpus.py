"""The labelled NAB series in a NAB directory (``data/<group>/<file>.csv`` + ``labels/``).

Rows are read with ``replay.iter_nab`` (the importer's parser: file order kept, NAB's
quirks untouched) and windows with ``replay.importers.nab_windows``; both stamps are
naive ``YYYY-MM-DD HH:MM:SS`` taken as UTC ns, so a window edge matches its row exactly.
Every CSV under ``data/`` is scored, named ``<group>/<file>.csv`` as in NAB's labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from bench.nab.scorer import Series
from replay.importers import ImportLog, iter_nab, nab_windows

DEFAULT_ROOT: Final = Path("../shared/feeds/nab")
LABELS: Final = Path("labels/combined_windows.json")


@dataclass(frozen=True, slots=True)
class NabFile:
    """One series: its rows and labelled windows (``series``) and its values."""

    series: Series
    values: npt.NDArray[np.float64]

    @property
    def name(self) -> str:
        """``<group>/<file>.csv``, the key of NAB's label files."""
        return self.series.name

    @property
    def sensor(self) -> str:
        """The file stem: the key its readings carry in a weir feed."""
        return Path(self.series.name).stem

    def __len__(self) -> int:
        return int(self.values.shape[0])


def load(root: str | Path = DEFAULT_ROOT) -> list[NabFile]:
    """Every NAB CSV under ``root/data`` (sorted by name) with its windows.

    Raises ``FileNotFoundError`` when ``root`` holds no ``data/*/*.csv`` or no labels.
    """
    root = Path(root)
    labels = root / LABELS
    paths = sorted((root / "data").glob("*/*.csv"))
    if not paths:
        raise FileNotFoundError(f"no NAB series under {root / 'data'} (expected */*.csv)")
    if not labels.is_file():
        raise FileNotFoundError(f"no NAB labels at {labels}")
    out = []
    for path in paths:
        rows = list(iter_nab(path, log=ImportLog("fail")))
        ts = np.fromiter((t for t, _ in rows), dtype=np.int64, count=len(rows))
        values = np.fromiter((r.value for _, r in rows), dtype=np.float64, count=len(rows))
        windows = tuple((w.start_ns, w.end_ns) for w in nab_windows(path, labels))
        name = f"{path.parent.name}/{path.name}"
        out.append(NabFile(Series(name, ts, windows), values))
    return out
