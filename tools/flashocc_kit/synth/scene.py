"""A random street scene in its own frame, and its Occ3D voxelisation at each key frame.

The scene frame has the ego's first pose at the origin and the main road along +x. The world is
flat ground painted with ground classes (rectangles, later ones win) plus vertical boxes: scenery
(buildings, poles, trees, clutter) and road users, some moving at constant velocity. Voxelising it
around the ego pose of a key frame gives the semantics of one sample, in the ego frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..occ3d import DET_CLASSES, FREE, GRID_LO, GRID_SHAPE, GROUND_LAYER, OCC, SAMPLE_INTERVAL_US, THING_CLASSES, VOXEL

# Road users: occupancy/detection class -> (length, width, height) ranges in metres.
SIZES = {
    "car": ((3.9, 5.0), (1.7, 2.0), (1.45, 1.9)),
    "truck": ((6.0, 9.0), (2.3, 2.6), (2.6, 3.6)),
    "bus": ((10.5, 12.5), (2.6, 2.9), (3.1, 3.6)),
    "trailer": ((9.0, 12.0), (2.4, 2.6), (3.2, 3.8)),
    "construction_vehicle": ((5.0, 7.0), (2.4, 3.0), (2.8, 3.4)),
    "motorcycle": ((1.9, 2.3), (0.7, 0.9), (1.3, 1.5)),
    "bicycle": ((1.6, 1.9), (0.5, 0.7), (1.1, 1.3)),
    "pedestrian": ((0.5, 0.9), (0.5, 0.8), (1.5, 1.9)),
    "traffic_cone": ((0.35, 0.5), (0.35, 0.5), (0.6, 1.0)),
    "barrier": ((1.8, 2.6), (0.4, 0.6), (0.9, 1.1)),
}
TRAFFIC = {"car": 0.70, "truck": 0.09, "bus": 0.05, "trailer": 0.03, "construction_vehicle": 0.03,
           "motorcycle": 0.06, "bicycle": 0.04}
LANE_WIDTH = 3.5
THINGS = np.array([OCC[name] for name in THING_CLASSES], dtype=np.uint8)
MAX_INSTANCES = 255  # the panoptic labels' ids are uint8, as gen_instance_info.py writes them
# The ego's footprint around its origin (rear axle), with a margin: nothing may come closer.
EGO_FOOTPRINT = (-2.5, 5.5, 1.5)  # rear, front, half-width (m)


@dataclass
class World:
    ground: int  # class of ground no patch covers
    patches: list[tuple[int, float, float, float, float, float]] = field(default_factory=list)  # cls, x, y, yaw, l, w
    boxes: list[tuple] = field(default_factory=list)  # cls, x, y, yaw, l, w, z0, z1, vx, vy, det
    ego_speed: float = 0.0
    ego_y: float = 0.0
    wobble: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # lateral amplitude/phase, yaw amplitude/phase

    def box_array(self) -> np.ndarray:
        """(N, 11): cls, x, y, yaw, l, w, z0, z1, vx, vy, detection index (-1 for scenery)."""
        rows = [(*b[:10], DET_CLASSES.index(b[10]) if b[10] else -1) for b in self.boxes]
        return np.array(rows, dtype=float).reshape(-1, 11)

    def ego_pose(self, t: float) -> tuple[float, float, float]:
        """(x, y, yaw) of the ego in the scene frame at t seconds."""
        lat_amp, lat_phase, yaw_amp, yaw_phase = self.wobble
        return (self.ego_speed * t, self.ego_y + lat_amp * np.sin(0.7 * t + lat_phase),
                yaw_amp * np.sin(0.5 * t + yaw_phase))


def sample_time(k: int) -> float:
    return k * SAMPLE_INTERVAL_US / 1e6


def build_world(rng: np.random.Generator, samples: int) -> World:
    """One scene's world, covering the ego's path over `samples` key frames with 60 m to spare."""
    world = World(ground=OCC["terrain"] if rng.random() < 0.7 else OCC["other_flat"])
    lanes = int(rng.integers(1, 3))
    half = lanes * LANE_WIDTH
    right_hand = rng.random() < 0.6
    ego_side = -1 if right_hand else 1  # the ego drives in the lanes on this side of the centre line
    world.ego_y = ego_side * LANE_WIDTH * (int(rng.integers(lanes)) + 0.5)
    world.ego_speed = 0.0 if rng.random() < 0.15 else float(rng.uniform(3, 10))
    world.wobble = (float(rng.uniform(0, 0.25)), float(rng.uniform(0, 6.3)), float(rng.uniform(0, 0.025)),
                    float(rng.uniform(0, 6.3)))
    duration = sample_time(samples - 1)
    x_end = world.ego_speed * duration
    x0, x1 = -60.0, x_end + 60.0
    span = x1 - x0

    def patch(cls: str, xa: float, xb: float, ya: float, yb: float, yaw: float = 0.0) -> None:
        world.patches.append((OCC[cls], (xa + xb) / 2, (ya + yb) / 2, yaw, abs(xb - xa), abs(yb - ya)))

    def box(cls: str, x: float, y: float, yaw: float, length: float, width: float, z0: float, z1: float,
            vx: float = 0.0, vy: float = 0.0) -> None:
        det = cls if cls in DET_CLASSES else None
        world.boxes.append((OCC[cls], x, y, yaw, length, width, z0, z1, vx, vy, det))

    def road_user(cls: str, x: float, y: float, heading: float, speed: float = 0.0, yaw_noise: float = 0.0) -> float:
        """A box moving along `heading` (its lane or sidewalk), facing it give or take yaw_noise."""
        (l0, l1), (w0, w1), (h0, h1) = SIZES[cls]
        length, width, height = rng.uniform(l0, l1), rng.uniform(w0, w1), rng.uniform(h0, h1)
        box(cls, x, y, heading + rng.normal(0, yaw_noise) if yaw_noise else heading, length, width, 0.0, height,
            speed * np.cos(heading), speed * np.sin(heading))
        return length

    sidewalk = {s: float(rng.uniform(2.0, 4.5)) for s in (-1, 1)}
    # Beyond each sidewalk: a row of lots, each a building, a park, a car park, a hedge or open ground.
    for s in (-1, 1):
        edge = half + sidewalk[s]
        x = x0
        while x < x1:
            length = float(rng.uniform(8, 25))
            xa, xb = x, x + length
            kind = rng.choice(["building", "building", "park", "parking", "hedge", "open"])
            if kind == "building":
                setback = float(rng.uniform(0, 3))
                depth = float(rng.uniform(6, 15))
                patch("other_flat", xa, xb, s * edge, s * (edge + setback))
                box("manmade", (xa + xb) / 2, s * (edge + setback + depth / 2), 0.0, xb - xa - 1.0, depth,
                    0.0, float(rng.uniform(4, 14)))
            elif kind == "park":
                patch("terrain", xa, xb, s * edge, s * (edge + 25))
                for _ in range(int(rng.integers(1, 4))):
                    tx, ty = rng.uniform(xa + 2, xb - 2), s * (edge + rng.uniform(2, 15))
                    tree(box, rng, float(tx), float(ty))
            elif kind == "parking":
                depth = float(rng.uniform(6, 12))
                patch("other_flat", xa, xb, s * edge, s * (edge + depth))
                for px in np.arange(xa + 1.5, xb - 1.5, 2.8):
                    if rng.random() < 0.6:
                        road_user("car", float(px), s * (edge + depth / 2), np.pi / 2, yaw_noise=0.05)
            elif kind == "hedge":
                patch("terrain", xa, xb, s * edge, s * (edge + 6))
                box("vegetation", (xa + xb) / 2, s * (edge + rng.uniform(1, 4)), 0.0, xb - xa - 0.5,
                    float(rng.uniform(0.8, 1.5)), 0.0, float(rng.uniform(0.8, 1.8)))
            x += length
        patch("sidewalk", x0, x1, s * half, s * edge)
        # Street furniture along the sidewalk's outer edge.
        x = x0 + rng.uniform(0, 10)
        while x < x1:
            roll = rng.random()
            y = s * (edge - 0.5)
            if roll < 0.45:
                box("manmade", float(x), y, 0.0, 0.45, 0.45, 0.0, float(rng.uniform(4, 7)))
            elif roll < 0.75:
                tree(box, rng, float(x), y)
            else:
                box("others", float(x), y, float(rng.uniform(0, np.pi)), float(rng.uniform(0.5, 1.8)),
                    float(rng.uniform(0.4, 0.8)), 0.0, float(rng.uniform(0.6, 1.3)))
            x += rng.uniform(8, 22)
        # Pedestrians, walking along the sidewalk or standing.
        for _ in range(int(rng.poisson(span / 12))):
            speed = float(rng.uniform(0.8, 1.6)) if rng.random() < 0.7 else 0.0
            heading = 0.0 if rng.random() < 0.5 else np.pi
            road_user("pedestrian", float(rng.uniform(x0, x1)), s * (half + rng.uniform(0.5, sidewalk[s] - 0.5)),
                      heading, speed, yaw_noise=0.1)
    if rng.random() < 0.4:  # a cross street ahead, with its sidewalks
        xc, width = float(x_end / 2 + rng.uniform(12, 35)), float(2 * LANE_WIDTH * rng.integers(1, 3))
        walk = float(rng.uniform(2, 4))
        patch("sidewalk", xc - width / 2 - walk, xc + width / 2 + walk, -80, 80)
        patch("driveable_surface", xc - width / 2, xc + width / 2, -80, 80)
        keep = abs(np.array([b[1] for b in world.boxes]) - xc) > width / 2 + walk + 0.5
        world.boxes = [b for b, k in zip(world.boxes, keep) if k or abs(b[2]) < half]
        for _ in range(int(rng.integers(0, 4))):  # pedestrians on the crossing
            road_user("pedestrian", xc + rng.uniform(-width / 2, width / 2), float(rng.uniform(-half, half)),
                      np.pi / 2 * rng.choice([-1, 1]), float(rng.uniform(0.8, 1.5)))
    patch("driveable_surface", x0, x1, -half, half)  # last: the main road runs through the crossing

    works = None  # (lane centre y, x from, x to): road works closing part of a lane, with a digger
    if rng.random() < 0.35:
        lane = int(rng.integers(lanes))
        s = -ego_side if rng.random() < 0.6 or lanes == 1 else ego_side
        ly = s * LANE_WIDTH * (lane + 0.5)
        if abs(ly - world.ego_y) > 0.1:
            xa, length = float(rng.uniform(x0 + 10, x1 - 40)), float(rng.uniform(10, 30))
            works = (ly, xa - 20, xa + length + 8)
            for bx in np.arange(xa, xa + length, 2.4):
                road_user("barrier", float(bx), ly + s * 1.4, 0.0)
            for cx in np.arange(xa - 12, xa, 2.0):
                road_user("traffic_cone", float(cx), ly - s * (xa - cx) / 12 * 1.2, 0.0)
            if rng.random() < 0.6:
                road_user("construction_vehicle", xa + 6, ly, float(rng.uniform(-0.3, 0.3)))

    # Traffic: per lane one speed, so vehicles of a lane never run into each other.
    classes, weights = list(TRAFFIC), np.array(list(TRAFFIC.values()))
    for side in (-1, 1):
        heading = 0.0 if side == ego_side else np.pi
        for lane in range(lanes):
            ly = side * LANE_WIDTH * (lane + 0.5)
            ego_lane = side == ego_side and abs(ly - world.ego_y) < 0.1
            closed = works is not None and abs(works[0] - ly) < 0.1  # traffic queues at the works
            speed = world.ego_speed if ego_lane else (
                0.0 if closed or rng.random() < 0.25 else float(rng.uniform(2, 12)))
            x = x0 + rng.uniform(0, 15)
            while x < x1:
                cls = str(rng.choice(classes, p=weights / weights.sum()))
                if (ego_lane and -14 < x < 16) or (closed and works[1] < x < works[2]):
                    length = 4.0  # a gap: ahead of/behind the ego (those keep their distance) or the works
                else:
                    length = road_user(cls, float(x), ly + rng.normal(0, 0.2), heading, speed, yaw_noise=0.02)
                x += length + rng.uniform(4, 30)
    world.boxes = [b for b in world.boxes if not blocks_ego(world, b, samples)]
    return world


def tree(box, rng: np.random.Generator, x: float, y: float) -> None:
    """A trunk and a canopy, both vegetation (Occ3D files trunks under vegetation)."""
    top = float(rng.uniform(4.0, 7.0))
    crown = float(rng.uniform(2.0, 4.5))
    box("vegetation", x, y, 0.0, 0.45, 0.45, 0.0, 2.4)
    box("vegetation", x, y, float(rng.uniform(0, np.pi)), crown, crown, float(rng.uniform(1.8, 2.6)), top)


def blocks_ego(world: World, b: tuple, samples: int) -> bool:
    """Whether a box ever overlaps the ego's footprint (with margin) at a key frame."""
    _, x, y, yaw, length, width, _, _, vx, vy, _ = b
    along = 0.5 * (abs(length * np.cos(yaw)) + abs(width * np.sin(yaw)))
    across = 0.5 * (abs(length * np.sin(yaw)) + abs(width * np.cos(yaw)))
    rear, front, half_width = EGO_FOOTPRINT
    for k in range(samples):
        t = sample_time(k)
        ex, ey, _ = world.ego_pose(t)
        bx, by = x + vx * t, y + vy * t
        if abs(by - ey) < half_width + across and rear - along < bx - ex < front + along:
            return True
    return False


@dataclass
class Frame:
    """One key frame: the ego pose in the scene frame, the semantics and the annotated boxes (ego frame)."""

    pose: tuple[float, float, float]
    semantics: np.ndarray  # (200, 200, 16) uint8
    boxes: np.ndarray  # (N, 9): x, y, z (centre), l, w, h, yaw, vx, vy -- ann_infos' layout
    labels: np.ndarray  # (N,) index into DET_CLASSES
    instances: np.ndarray  # (N,) row in World.box_array(): the same object in every frame (nuScenes' instance)
    # (200, 200, 16) uint8, the panoptic labels' `instances`: 0 on stuff and free voxels; the thing objects
    # (THING_CLASSES) in view numbered 1..n in the order of their rows in World.box_array()
    voxel_instances: np.ndarray


def column_centres() -> tuple[np.ndarray, np.ndarray]:
    xs = GRID_LO[0] + VOXEL * (np.arange(GRID_SHAPE[0]) + 0.5)
    ys = GRID_LO[1] + VOXEL * (np.arange(GRID_SHAPE[1]) + 0.5)
    return xs, ys


def voxelise(world: World, k: int) -> Frame:
    t = sample_time(k)
    ex, ey, eyaw = world.ego_pose(t)
    c, s = np.cos(eyaw), np.sin(eyaw)
    xs, ys = column_centres()
    gx, gy = np.meshgrid(xs, ys, indexing="ij")  # ego frame, (200, 200)
    wx, wy = ex + c * gx - s * gy, ey + s * gx + c * gy  # scene frame

    ground = np.full(GRID_SHAPE[:2], world.ground, dtype=np.uint8)
    for cls, px, py, pyaw, length, width in world.patches:
        pc, ps = np.cos(pyaw), np.sin(pyaw)
        dx, dy = wx - px, wy - py
        inside = (np.abs(pc * dx + ps * dy) <= length / 2) & (np.abs(-ps * dx + pc * dy) <= width / 2)
        ground[inside] = cls
    semantics = np.full(GRID_SHAPE, FREE, dtype=np.uint8)
    semantics[:, :, GROUND_LAYER] = ground

    boxes = world.box_array()
    owner = np.zeros(GRID_SHAPE, dtype=np.int64)  # 1 + the row of the box that painted each voxel last; 0: none
    centre_x = boxes[:, 1] + boxes[:, 8] * t - ex
    centre_y = boxes[:, 2] + boxes[:, 9] * t - ey
    bx, by = c * centre_x + s * centre_y, -s * centre_x + c * centre_y  # box centres, ego frame
    byaw = boxes[:, 3] - eyaw
    reach = 0.5 * np.hypot(boxes[:, 4], boxes[:, 5])
    for i in np.flatnonzero((np.abs(bx) < 40 + reach) & (np.abs(by) < 40 + reach)):
        paint_box(semantics, owner, i + 1, int(boxes[i, 0]), bx[i], by[i], byaw[i], boxes[i, 4], boxes[i, 5],
                  boxes[i, 6], boxes[i, 7], xs, ys, reach[i])

    det = (boxes[:, 10] >= 0) & (np.hypot(bx, by) < 55)
    vx, vy = boxes[:, 8], boxes[:, 9]
    ann = np.stack([bx, by, (boxes[:, 6] + boxes[:, 7]) / 2, boxes[:, 4], boxes[:, 5], boxes[:, 7] - boxes[:, 6],
                    (byaw + np.pi) % (2 * np.pi) - np.pi, c * vx + s * vy, -s * vx + c * vy], axis=1)[det]
    return Frame((ex, ey, eyaw), semantics, ann, boxes[det, 10].astype(int), np.flatnonzero(det),
                 number_instances(semantics, owner))


def number_instances(semantics: np.ndarray, owner: np.ndarray) -> np.ndarray:
    """The panoptic instance of each voxel: the object that painted a thing voxel, numbered 1..n by its row
    (each voxel's class is its painter's, so every id is one class); 0 elsewhere."""
    thing = np.isin(semantics, THINGS)
    rows = np.unique(owner[thing])  # the objects still visible after later boxes painted over theirs
    if len(rows) > MAX_INSTANCES:
        raise RuntimeError(f"{len(rows)} objects in one sample's grid; the panoptic labels number at most "
                           f"{MAX_INSTANCES}")
    instances = np.zeros(GRID_SHAPE, dtype=np.uint8)
    instances[thing] = np.searchsorted(rows, owner[thing]) + 1
    return instances


def paint_box(semantics: np.ndarray, owner: np.ndarray, painter: int, cls: int, x: float, y: float, yaw: float,
              length: float, width: float, z0: float, z1: float, xs: np.ndarray, ys: np.ndarray,
              reach: float) -> None:
    """Voxels whose column centre lies in the footprint and whose height range overlaps [z0, z1] become cls,
    painted by `painter` (owner)."""
    i0, i1 = np.searchsorted(xs, x - reach), np.searchsorted(xs, x + reach)
    j0, j1 = np.searchsorted(ys, y - reach), np.searchsorted(ys, y + reach)
    if i0 >= i1 or j0 >= j1:
        return
    dx = xs[i0:i1, None] - x
    dy = ys[None, j0:j1] - y
    c, s = np.cos(yaw), np.sin(yaw)
    inside = (np.abs(c * dx + s * dy) <= length / 2) & (np.abs(-s * dx + c * dy) <= width / 2)
    k0 = max(int(np.floor((z0 - GRID_LO[2]) / VOXEL)), 0)
    k1 = min(int(np.ceil((z1 - GRID_LO[2]) / VOXEL)), GRID_SHAPE[2])
    if k0 < k1:
        semantics[i0:i1, j0:j1, k0:k1][inside] = cls
        owner[i0:i1, j0:j1, k0:k1][inside] = painter
