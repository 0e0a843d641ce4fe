"""VTAB's label derivations (google-research/task_adaptation `data/*.py`), on one example's features.

Each function takes one example as a mapping of its features (TFDS names: `objects`, `label_x_position`, ...; a
`datasets` row with the same names works: a sequence of dicts arrives as a dict of lists) and returns the class.
Thresholds, caps and class counts are task_adaptation's; where its code differs from its own comments, the code
is followed (e.g. clevr `count_cylinders` counts shape id 2, which is "cylinder" in TFDS's clevr labels). Where
µ2Net departs from VTAB's usual protocol, µ2Net is followed (dSprites: no binning, see `DERIVATIONS`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np

Example = Mapping[str, Any]


def _objects(row: Example, field: str) -> np.ndarray:
    return np.asarray(row["objects"][field])


def _bin(value: float, thresholds: list[float]) -> int:
    """The largest i with thresholds[i] < value (task_adaptation's `reduce_max(where(thrs - x < 0))`)."""
    return int(np.flatnonzero(np.asarray(thresholds) < value).max())


def clevr_count_all(row: Example) -> int:
    return int(_objects(row, "size").shape[0]) - 3  # 3..10 objects -> 0..7


def clevr_count_cylinders(row: Example) -> int:
    return int((_objects(row, "shape") == 2).sum())


def clevr_closest_object_distance(row: Example) -> int:
    return _bin(float(_objects(row, "pixel_coords").reshape(-1, 3)[:, 2].min()), [0.0, 8.0, 8.5, 9.0, 9.5, 10.0, 100.0])


def _kitti_z(row: Example) -> np.ndarray:
    return _objects(row, "location").reshape(-1, 3)[:, 2]


def kitti_count_vehicles(row: Example) -> int:
    return min(int((_objects(row, "type") < 3).sum()), 3)  # Car, Van, Truck


def kitti_closest_object_distance(row: Example) -> int:
    return _bin(float(_kitti_z(row).min()), [-100.0, 5.6, 8.4, 13.4, 23.4])


def kitti_closest_vehicle_distance(row: Example) -> int:
    z = _kitti_z(row)[_objects(row, "type") < 3]
    return _bin(float(np.concatenate([z, [1000.0]]).min()), [-100.0, 8.0, 20.0, 999.0])


def feature(attribute: str) -> Callable[[Example], int]:
    """A factor used as the label unchanged (dSprites' position and orientation, smallNORB's four factors)."""

    def derive(row: Example) -> int:
        return int(np.asarray(row[attribute]))

    derive.__name__ = attribute
    return derive


def numbered(n: int) -> tuple[str, ...]:
    """TFDS's names for a `ClassLabel(num_classes=n)`: "0" … "n-1"."""
    return tuple(str(i) for i in range(n))


def _bins(thresholds: tuple[float, ...], unit: str, n: int, last: str | None = None) -> tuple[str, ...]:
    """The n classes of VTAB's `max(where(thrs - d < 0))`: class i holds d in (thrs[i], thrs[i+1]], the last
    threshold's class is open above; d never falls below thrs[0]."""
    t = [f"{x:g}" for x in thresholds]
    names = [f"<= {t[1]} {unit}"] + [f"({a}, {b}] {unit}" for a, b in zip(t[1:-1], t[2:])] + [last or f"> {t[-1]} {unit}"]
    return tuple(names[:n])


class Derivation(NamedTuple):
    """How a task's label is computed from an example, the class names, and what a class means."""

    label: Callable[[Example], int]
    names: tuple[str, ...]
    meaning: str


_SMALLNORB = ("four-legged animals", "human figures", "airplanes", "trucks", "cars")  # TFDS's ClassLabel names
_TFDS_NAMES = "TFDS ClassLabel names"

#: task -> its derivation. Counts are named by the count, distance bins by their range; factors used as they are
#: (dSprites, smallNORB) keep TFDS's ClassLabel names. dSprites keeps all 32 x positions and 40 orientations: the
#: µ2Net notebook looks the task up with no `num_classes`, so task_adaptation's `DSpritesData` keeps the factor's
#: own classes (VTAB's usual protocol bins both to 16; µ2Net does not).
DERIVATIONS: dict[str, Derivation] = {
    "clevr/count_all": Derivation(clevr_count_all, tuple(str(n) for n in range(3, 11)), "VTAB: number of objects"),
    "clevr/count_cylinders": Derivation(clevr_count_cylinders, numbered(11), "VTAB: number of cylinders"),
    "clevr/closest_object_distance": Derivation(
        clevr_closest_object_distance, _bins((0.0, 8.0, 8.5, 9.0, 9.5, 10.0, 100.0), "depth", 6),
        "VTAB: depth of the closest object, binned"),
    "kitti/count_vehicles": Derivation(kitti_count_vehicles, ("0", "1", "2", "3 or more"),
                                       "VTAB: number of vehicles, capped at 3"),
    "kitti/closest_object_distance": Derivation(
        kitti_closest_object_distance, _bins((-100.0, 5.6, 8.4, 13.4, 23.4), "m", 5),
        "VTAB: distance to the closest object, binned"),
    "kitti/closest_vehicle_distance": Derivation(
        kitti_closest_vehicle_distance, _bins((-100.0, 8.0, 20.0, 999.0), "m", 4, last="no vehicle"),
        "VTAB: distance to the closest vehicle, binned"),
    "dsprites/label_x_position": Derivation(feature("label_x_position"), numbered(32), _TFDS_NAMES),
    "dsprites/label_orientation": Derivation(feature("label_orientation"), numbered(40), _TFDS_NAMES),
    "smallnorb/label_category": Derivation(feature("label_category"), _SMALLNORB, _TFDS_NAMES),
    "smallnorb/label_lighting": Derivation(feature("label_lighting"), numbered(6), _TFDS_NAMES),
    "smallnorb/label_azimuth": Derivation(feature("label_azimuth"), numbered(18), _TFDS_NAMES),  # 0, 20, …, 340 deg
    "smallnorb/label_elevation": Derivation(feature("label_elevation"), numbered(9), _TFDS_NAMES),  # 30, 35, …, 70 deg
}
