"""VTAB's label derivations (google-research/task_adaptation `data/*.py`), on one example's features.

Each function takes one example as a mapping of its features (TFDS names: `objects`, `label_x_position`, ...; a
`datasets` row with the same names works: a sequence of dicts arrives as a dict of lists) and returns the class.
Thresholds, caps and class counts are task_adaptation's; where its code differs from its own comments, the code
is followed (e.g. clevr `count_cylinders` counts shape id 2, which is "cylinder" in TFDS's clevr labels).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

Row = Mapping[str, Any]


def _objects(row: Row, field: str) -> np.ndarray:
    return np.asarray(row["objects"][field])


def _bin(value: float, thresholds: list[float]) -> int:
    """The largest i with thresholds[i] < value (task_adaptation's `reduce_max(where(thrs - x < 0))`)."""
    return int(np.flatnonzero(np.asarray(thresholds) < value).max())


def clevr_count_all(row: Row) -> int:
    return int(_objects(row, "size").shape[0]) - 3  # 3..10 objects -> 0..7


def clevr_count_cylinders(row: Row) -> int:
    return int((_objects(row, "shape") == 2).sum())


def clevr_closest_object_distance(row: Row) -> int:
    return _bin(float(_objects(row, "pixel_coords").reshape(-1, 3)[:, 2].min()), [0.0, 8.0, 8.5, 9.0, 9.5, 10.0, 100.0])


def _kitti_z(row: Row) -> np.ndarray:
    return _objects(row, "location").reshape(-1, 3)[:, 2]


def kitti_count_vehicles(row: Row) -> int:
    return min(int((_objects(row, "type") < 3).sum()), 3)  # Car, Van, Truck


def kitti_closest_object_distance(row: Row) -> int:
    return _bin(float(_kitti_z(row).min()), [-100.0, 5.6, 8.4, 13.4, 23.4])


def kitti_closest_vehicle_distance(row: Row) -> int:
    z = _kitti_z(row)[_objects(row, "type") < 3]
    return _bin(float(np.concatenate([z, [1000.0]]).min()), [-100.0, 8.0, 20.0, 999.0])


def factor_bins(attribute: str, num_original: int, num_classes: int) -> Callable[[Row], int]:
    """dSprites: floor(value / (original classes / classes)), e.g. 32 x positions into 16 bins."""
    factor = num_original / num_classes

    def derive(row: Row) -> int:
        return int(np.floor(float(np.asarray(row[attribute])) / factor))

    derive.__name__ = f"{attribute}_bins{num_classes}"
    return derive


def feature(attribute: str) -> Callable[[Row], int]:
    """A factor used as the label unchanged (smallNORB's category, lighting, azimuth, elevation; dmlab's label)."""

    def derive(row: Row) -> int:
        return int(np.asarray(row[attribute]))

    derive.__name__ = attribute
    return derive


def _range_names(edges: list[float]) -> list[str]:
    return [f"({lo:g}, {hi:g}]" for lo, hi in zip(edges[:-1], edges[1:])] + [f"> {edges[-1]:g}"]


#: task -> (derivation, label names). Names for counts are the counts; for bins the distance ranges.
DERIVATIONS: dict[str, tuple[Callable[[Row], int], list[str]]] = {
    "clevr/count_all": (clevr_count_all, [str(n) for n in range(3, 11)]),
    "clevr/count_cylinders": (clevr_count_cylinders, [str(n) for n in range(11)]),
    "clevr/closest_object_distance": (clevr_closest_object_distance, _range_names([0.0, 8.0, 8.5, 9.0, 9.5, 10.0])),
    "kitti/count_vehicles": (kitti_count_vehicles, ["0", "1", "2", ">=3"]),
    "kitti/closest_object_distance": (kitti_closest_object_distance, _range_names([-100.0, 5.6, 8.4, 13.4, 23.4])[:5]),
    "kitti/closest_vehicle_distance": (kitti_closest_vehicle_distance, _range_names([-100.0, 8.0, 20.0])[:2] + ["> 20", "none"]),
    "dsprites/label_x_position": (factor_bins("label_x_position", 32, 16), [f"x{i}" for i in range(16)]),
    "dsprites/label_orientation": (factor_bins("label_orientation", 40, 16), [f"orientation{i}" for i in range(16)]),
    "smallnorb/label_category": (feature("label_category"), ["four-legged animal", "human figure", "airplane", "truck", "car"]),
    "smallnorb/label_lighting": (feature("label_lighting"), [f"lighting{i}" for i in range(6)]),
    "smallnorb/label_azimuth": (feature("label_azimuth"), [f"{20 * i} deg" for i in range(18)]),
    "smallnorb/label_elevation": (feature("label_elevation"), [f"{30 + 5 * i} deg" for i in range(9)]),
}
