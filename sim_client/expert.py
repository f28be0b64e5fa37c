"""A scripted LIBERO expert that plans from privileged simulator state (numpy only, no torch).

It reads the task's BDDL goal, turns each `(In obj region)` / `(On obj target)` into a
pick-and-place, and drives the robot closed loop from the MuJoCo state of the running env:
object and target poses (body and site positions, collision-geometry boxes), the gripper's
pose and finger opening. Each step it emits one of LIBERO's 7-dim OSC_POSE delta actions in
[-1, 1] (robosuite scales 1.0 to 0.05 m of position and 0.5 rad of axis-angle rotation, both
in the world frame; the gripper is -1 open, +1 closed).

A pick-and-place runs: approach above the grasp point (yaw turned to the object's narrow
side, or to the rim of an object too wide to span), descend, close, lift, carry above the
target, lower, open, retreat. Every phase has a step timeout; a grasp that did not lift the
object, an object that slips while carried, or a placement the goal predicate does not
accept sends it back to the approach, as often as the step budget allows (`attempt` counts
them). Goals with predicates other than In/On (open, close, turn on, ...) are refused by
`sim_client.expert_goals.plan_task` with an `ExpertUnsupported` naming the task.

In an evaluation the expert stands in for a policy server (`ExpertPolicy`): the episode loop
queries it once per step with the state-only request it declares, so no camera is rendered.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim_client.expert_goals import PickPlace, plan_task
from vla.libero import PROPRIO_KEYS
from vla.wire import protocol
from vla.wire.server_info import InputSpec, ServerInfo

POS_SCALE = 0.05          # m per unit of action (robosuite OSC_POSE output_max for position)
ROT_SCALE = 0.5           # rad per unit of action (OSC_POSE output_max for rotation)
KP_POS = 1.0 / 0.02       # action per metre of position error (saturates at 2 cm)
KP_ROT = 1.0 / 0.25       # action per radian of orientation error
OPEN, CLOSE = -1.0, 1.0

MAX_SPAN = 0.072          # widest part the Panda fingers close around (opening ~0.08 m)
RING_BAND = 0.01          # collision boxes this close below the highest one form a wide object's rim
FINGER_OFFSET = 0.045     # the open outer finger's distance from the grip site
FINGER_CLEARANCE = 0.02   # free space wanted around it when it comes down beside a wall
GRASP_DEPTH = 0.025       # how far below an object's top the grip site goes
TIP_CLEARANCE = 0.012     # grip site at least this far above an object's bottom (fingertips below it)
HOVER = 0.07              # approach height above the grasp point
GRIPPER_RADIUS = 0.05     # footprint of the open hand around the grip site
HAND_CLEARANCE = 0.04     # grip site above whatever the empty hand passes over
MIN_LIFT = 0.05           # an object is lifted at least this much before it is carried
CARRY_CLEARANCE = 0.04    # carried object's bottom above everything it passes over
RELEASE_GAP = {"in": 0.015, "on": 0.008}

# ----------------------------------------------------------------------------- scene geometry

def _axisangle(r: np.ndarray) -> np.ndarray:
    """Axis-angle vector of a rotation matrix."""
    cos = np.clip((np.trace(r) - 1.0) / 2.0, -1.0, 1.0)
    angle = math.acos(cos)
    if angle < 1e-6:
        return np.zeros(3)
    v = np.array([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]])
    if math.pi - angle < 1e-3:  # near 180°: the axis from the symmetric part
        axis = np.sqrt(np.maximum((np.diag(r) + 1.0) / 2.0, 0.0))
        i = int(np.argmax(axis))
        axis = r[:, i] + np.eye(3)[i]
        return axis / np.linalg.norm(axis) * angle
    return v / (2.0 * math.sin(angle)) * angle


def down_rotation(yaw: float) -> np.ndarray:
    """Grip-site orientation pointing down, fingers closing along world (cos yaw, sin yaw, 0)."""
    x = np.array([math.cos(yaw), math.sin(yaw), 0.0])
    z = np.array([0.0, 0.0, -1.0])
    return np.stack([x, np.cross(z, x), z], axis=1)


class Scene:
    """Read-only views of the MuJoCo state of a LIBERO problem env (robosuite's inner env)."""

    def __init__(self, problem):
        import mujoco  # noqa: F401  (the model/data below are mujoco's own structs)

        self.problem = problem
        self._geoms: dict[str, np.ndarray] = {}
        self._sim = None
        self.refresh()

    def refresh(self) -> None:
        """Follow the env's current MjSim: a hard reset (every env.reset) builds a new one."""
        sim = self.problem.sim
        if sim is not self._sim:
            self._sim = sim
            self.m, self.d = sim.model._model, sim.data._data
            robot = self.problem.robots[0]
            self.eef_site = robot.eef_site_id
            self.finger_qpos = [self.m.jnt_qposadr[self.m.joint(j).id] for j in robot.gripper.joints]
            self._geoms = {}

    # bodies and sites
    def body_id(self, name: str) -> int:
        return self.problem.obj_body_id[name]

    def is_site(self, name: str) -> bool:
        return name in self.problem.object_sites_dict

    def site_pos(self, name: str) -> np.ndarray:
        return self.d.site_xpos[self.m.site(name).id].copy()

    def site_parent(self, name: str) -> str:
        return self.problem.object_sites_dict[name].parent_name

    def obj_pos(self, name: str) -> np.ndarray:
        return self.d.xpos[self.body_id(name)].copy()

    def solids(self) -> list[str]:
        """Movable objects and fixtures (not the table or floor, which belong to the arena)."""
        return [*self.problem.objects_dict, *self.problem.fixtures_dict]

    def geoms(self, name: str) -> np.ndarray:
        """Collision geoms of an object's or fixture's body subtree."""
        if name not in self._geoms:
            root = self.body_id(name)
            parent = self.m.body_parentid

            def under(b: int) -> bool:
                while b > 0:
                    if b == root:
                        return True
                    b = parent[b]
                return False

            ids = [g for g in range(self.m.ngeom) if (self.m.geom_contype[g] or self.m.geom_conaffinity[g])
                   and under(int(self.m.geom_bodyid[g]))]
            self._geoms[name] = np.asarray(ids, dtype=int)
        return self._geoms[name]

    def corners(self, name: str) -> np.ndarray:
        """World corners of the boxes bounding each collision geom, [8 * geoms, 3]."""
        g = self.geoms(name)
        if len(g) == 0:
            p = self.obj_pos(name)
            return p[None, :]
        aabb = self.m.geom_aabb[g]                       # [G, 6]: centre, half-size in the geom frame
        signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], float)
        local = aabb[:, None, :3] + signs[None] * aabb[:, None, 3:]        # [G, 8, 3]
        rot = self.d.geom_xmat[g].reshape(-1, 3, 3)
        world = np.einsum("gij,gkj->gki", rot, local) + self.d.geom_xpos[g][:, None, :]
        return world.reshape(-1, 3)

    def _boxes(self, skip) -> np.ndarray:
        ids = [self.geoms(n) for n in self.solids() if n not in skip]
        return np.concatenate(ids) if ids else np.zeros(0, int)

    def _box_distance(self, g: np.ndarray, points: np.ndarray) -> np.ndarray:
        """[G, P] distance from each point to each geom's box, in the geom's own frame."""
        aabb = self.m.geom_aabb[g]
        rot = self.d.geom_xmat[g].reshape(-1, 3, 3)
        rel = points[None, :, :] - self.d.geom_xpos[g][:, None, :] if points.ndim == 2 else points
        local = np.einsum("gji,gpj->gpi", rot, rel) - aabb[:, None, :3]
        return np.linalg.norm(np.maximum(np.abs(local) - aabb[:, None, 3:], 0.0), axis=2)

    def top_over(self, path_xy: np.ndarray, margin: float, skip) -> float:
        """Highest top of the other solids' collision boxes whose footprint comes within `margin`
        of the points `path_xy` [P, 2]; -inf when none does."""
        g = self._boxes(skip)
        if len(g) == 0:
            return -np.inf
        centres = self.d.geom_xpos[g]
        # Each path point at each box's own height: the distance is then the footprint's.
        rel = np.concatenate([path_xy[None, :, :] - centres[:, None, :2],
                              np.zeros((len(g), len(path_xy), 1))], axis=2)
        near = self._box_distance(g, rel).min(1) < margin
        if not near.any():
            return -np.inf
        aabb = self.m.geom_aabb[g[near]]
        rot = self.d.geom_xmat[g[near]].reshape(-1, 3, 3)
        # Top of each box: its centre's height plus the vertical extent of its half-sizes.
        tops = centres[near, 2] + np.einsum("gj,gj->g", np.abs(rot[:, 2, :]), aabb[:, 3:]) \
            + np.einsum("gj,gj->g", rot[:, 2, :], aabb[:, :3])
        return float(tops.max())

    def clearance(self, points: np.ndarray, skip: str) -> float:
        """Distance from `points` [P, 3] to the nearest collision box of any other solid (each geom's
        box in its own frame, so a rotated wall is as thin as it is)."""
        g = self._boxes((skip,))
        return float(self._box_distance(g, points).min()) if len(g) else np.inf

    def geom_centres(self, name: str) -> np.ndarray:
        """World centres of an object's collision boxes, [G, 3]."""
        g = self.geoms(name)
        if len(g) == 0:
            return self.obj_pos(name)[None, :]
        aabb = self.m.geom_aabb[g]
        rot = self.d.geom_xmat[g].reshape(-1, 3, 3)
        return np.einsum("gij,gj->gi", rot, aabb[:, :3]) + self.d.geom_xpos[g]

    def top(self, name: str) -> float:
        return float(self.corners(name)[:, 2].max())

    def bottom(self, name: str) -> float:
        return float(self.corners(name)[:, 2].min())

    # robot
    def base_pos(self) -> np.ndarray:
        return self.d.xpos[self.m.body("robot0_base").id].copy()

    def eef_pos(self) -> np.ndarray:
        return self.d.site_xpos[self.eef_site].copy()

    def eef_rot(self) -> np.ndarray:
        return self.d.site_xmat[self.eef_site].reshape(3, 3).copy()

    def finger_gap(self) -> float:
        q = self.d.qpos[self.finger_qpos]
        return float(abs(q[0] - q[1]))

    def satisfied(self, goal: PickPlace) -> bool:
        return bool(self.problem._eval_predicate([goal.relation, goal.obj, goal.target]))


@dataclass
class Grasp:
    point: np.ndarray   # grip-site target (world)
    yaw: float          # fingers close along (cos yaw, sin yaw)


def plan_grasp(scene: Scene, name: str, yaw_now: float) -> Grasp:
    """Top-down grasp: across the object's narrowest horizontal width if it fits between the
    fingers, else on its rim (the clear side facing the robot), fingers radial."""
    pts = scene.corners(name)
    top, bottom = pts[:, 2].max(), pts[:, 2].min()
    xy = pts[:, :2]
    angles = np.deg2rad(np.arange(0.0, 180.0, 3.0))
    dirs = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    proj = xy @ dirs.T                                     # [N, A]
    widths = proj.max(0) - proj.min(0)
    i = int(np.argmin(widths))
    u = dirs[i]
    v = np.array([-u[1], u[0]])
    pu, pv = xy @ u, xy @ v
    centre = u * (pu.max() + pu.min()) / 2 + v * (pv.max() + pv.min()) / 2
    z = max(top - GRASP_DEPTH, bottom + TIP_CLEARANCE)
    if widths[i] <= MAX_SPAN:
        yaw = math.atan2(u[1], u[0])
        point = np.array([centre[0], centre[1], z])
    else:  # too wide to span (a bowl): pinch its wall, fingers closing radially
        # The wall: the highest ring of collision boxes; grip it at its centres' radius and height.
        walls = scene.geom_centres(name)
        ring = walls[walls[:, 2] >= walls[:, 2].max() - RING_BAND]
        z = max(float(ring[:, 2].mean()), bottom + TIP_CLEARANCE)
        # Of the sides where the outer finger comes down clear of everything else (a drawer's
        # wall, a neighbour), the one facing the robot: the hand then stays within easy reach
        # wherever the object is carried (a straight arm cannot lower the far side of a bowl).
        best = None
        toward = scene.base_pos()[:2] - centre
        toward = toward / (np.linalg.norm(toward) + 1e-9)
        heights = z + np.array([-0.012, 0.0, 0.02, 0.05])   # the finger's tip up to its knuckle
        for a in np.deg2rad(np.arange(0.0, 360.0, 15.0)):
            d = np.array([math.cos(a), math.sin(a)])
            reach = float(((ring[:, :2] - centre) @ d).max())
            finger = centre + d * (reach + FINGER_OFFSET)
            column = np.column_stack([np.repeat(finger[None], len(heights), 0), heights])
            clear = scene.clearance(column, skip=name)
            score = (min(clear, FINGER_CLEARANCE), float(d @ toward))
            if best is None or score > best[0]:
                best = (score, d, reach)
        _, d, reach = best
        rim = centre + d * reach
        yaw = math.atan2(d[1], d[0])
        point = np.array([rim[0], rim[1], z])
    return Grasp(point=point, yaw=_nearest_yaw(yaw, yaw_now))


def _approach_speed(dz: float) -> float:
    """Full speed while far above a contact, slower over the last few centimetres."""
    return 1.0 if abs(dz) > 0.04 else 0.6


def _nearest_yaw(yaw: float, ref: float) -> float:
    """The parallel-gripper-equivalent yaw (mod π) closest to `ref`."""
    k = round((ref - yaw) / math.pi)
    return yaw + k * math.pi


def _wrap(a: float) -> float:
    return (a + math.pi) % (2 * math.pi) - math.pi


# ---------------------------------------------------------------------------------- controller

class Expert:
    """Closed-loop pick-and-place controller for one episode: `act()` → one 7-dim action."""

    def __init__(self, problem, goals: list[PickPlace]):
        self.scene = Scene(problem)
        self.goals = list(goals)
        self.g = 0                     # current goal
        self.attempt = 0
        self.phase = "approach"
        self.t = 0                     # steps in this phase
        self.grasp: Grasp | None = None
        self.hold_offset: np.ndarray | None = None  # object position − grip site while carried
        self.hang = 0.0                # grip site height above the carried object's bottom
        self._lift_from = np.zeros(3)
        self._lift_z: float | None = None
        self._gap = 0.0
        self.gripper = OPEN
        self.steps = 0
        self.log: list[str] = []

    # targets
    def _goal(self) -> PickPlace:
        return self.goals[min(self.g, len(self.goals) - 1)]

    def _yaw_now(self) -> float:
        x = self.scene.eef_rot()[:, 0]
        return math.atan2(x[1], x[0])

    def _target_xy_top(self, goal: PickPlace) -> tuple[np.ndarray, float]:
        s = self.scene
        if s.is_site(goal.target):
            pos = s.site_pos(goal.target)
            parent = s.site_parent(goal.target)
            if goal.relation == "in" and parent in s.problem.obj_body_id:
                return pos[:2], s.top(parent)        # a container: drop in from above its rim
            return pos[:2], float(pos[2])
        return s.obj_pos(goal.target)[:2], s.top(goal.target)

    def _path_top(self, start_xy: np.ndarray, end_xy: np.ndarray, margin: float, skip: tuple[str, ...]) -> float:
        """Highest top of the collision boxes (of other objects and fixtures) that the straight path
        start → end passes over within `margin`; -inf when it passes over none."""
        n = max(2, int(np.linalg.norm(end_xy - start_xy) / 0.01) + 1)
        return self.scene.top_over(np.linspace(start_xy, end_xy, n), margin, skip)

    def _carry_z(self, goal: PickPlace, from_xy: np.ndarray, floor: float) -> float:
        """Grip-site height that carries the object's bottom (at least at `floor`) over everything
        between `from_xy` and the target."""
        s = self.scene
        place_xy, top = self._target_xy_top(goal)
        pts = s.corners(goal.obj)
        radius = float(np.max(np.linalg.norm(pts[:, :2] - s.obj_pos(goal.obj)[:2], axis=1)))
        over = self._path_top(from_xy, place_xy, radius, (goal.obj,))
        return max(over + CARRY_CLEARANCE, top + CARRY_CLEARANCE, floor) + self.hang

    def _move(self, target: np.ndarray, yaw: float | None = None, max_speed: float = 1.0) -> np.ndarray:
        s = self.scene
        err = target - s.eef_pos()
        a = np.zeros(7)
        a[:3] = np.clip(err * KP_POS, -max_speed, max_speed)
        if yaw is None:
            yaw = self._yaw_now()
        rerr = _axisangle(down_rotation(yaw) @ s.eef_rot().T)
        a[3:6] = np.clip(rerr * KP_ROT, -1.0, 1.0)
        a[6] = self.gripper
        return a

    def _to(self, phase: str, why: str = "") -> None:
        if why:
            self.log.append(f"step {self.steps}: {self.phase} → {phase}: {why}")
        self.phase, self.t = phase, 0

    def _retry(self, why: str) -> None:
        self.attempt += 1
        self.gripper = OPEN
        self.grasp = None
        self._to("backoff", why)

    def done(self) -> bool:
        return self.g >= len(self.goals)

    def act(self) -> np.ndarray:
        s = self.scene
        s.refresh()
        self.steps += 1
        self.t += 1
        if self.done():
            self.gripper = OPEN
            return self._move(s.eef_pos() + np.array([0.0, 0.0, 0.02]))
        goal = self._goal()
        eef = s.eef_pos()
        phase = self.phase

        if phase == "backoff":  # open and rise before a new attempt
            self.gripper = OPEN
            if self.t >= 6 and (eef[2] >= self._back_z - 0.01 or self.t > 30):
                self._to("approach")
            return self._move(np.array([eef[0], eef[1], self._back_z]))

        if phase == "approach":
            if self.grasp is None or self.t % 10 == 1:   # re-plan: the object may have been nudged
                self.grasp = plan_grasp(s, goal.obj, self._yaw_now() if self.grasp is None
                                        else self.grasp.yaw)
            hover = self.grasp.point + np.array([0.0, 0.0, HOVER])
            hover[2] = max(hover[2], self._path_top(eef[:2], hover[:2], GRIPPER_RADIUS, (goal.obj,)) + HAND_CLEARANCE)
            xy_err = np.linalg.norm(hover[:2] - eef[:2])
            target = hover
            yaw_err = abs(_wrap(self.grasp.yaw - self._yaw_now()))
            if (xy_err < 0.01 and abs(hover[2] - eef[2]) < 0.03 and yaw_err < 0.08) or self.t > 80:
                self._to("descend", "" if self.t <= 80 else "approach timeout")
            return self._move(target, self.grasp.yaw)

        if phase == "descend":
            target = self.grasp.point
            if np.linalg.norm(target - eef) < 0.006 or self.t > 60:
                self._to("close", "" if self.t <= 60 else "descend timeout")
            return self._move(target, self.grasp.yaw, max_speed=_approach_speed(target[2] - eef[2]))

        if phase == "close":
            self.gripper = CLOSE
            gap = s.finger_gap()
            settled = self.t >= 4 and abs(gap - self._gap) < 0.0005
            self._gap = gap
            if settled or self.t >= 20:
                self._lift_from = s.obj_pos(goal.obj)
                self._lift_z = None
                self.hang = eef[2] - s.bottom(goal.obj)
                self._to("lift")
            return self._move(self.grasp.point, self.grasp.yaw)

        if phase == "lift":
            if self._lift_z is None:  # what the whole way needs, seen from where the object is picked
                self._lift_z = self._carry_z(goal, self._lift_from[:2], s.bottom(goal.obj) + MIN_LIFT)
            carry_z = self._lift_z
            target = np.array([self.grasp.point[0], self.grasp.point[1], carry_z])
            risen = s.obj_pos(goal.obj)[2] - self._lift_from[2]
            if eef[2] - self.grasp.point[2] > 0.05 and risen < 0.025:
                self._back_z = eef[2] + 0.02
                self._retry(f"grasp missed {goal.obj} (rose {risen:.3f} m)")
                return self._move(eef)
            if abs(carry_z - eef[2]) < 0.015 or self.t > 50:
                self.hold_offset = s.obj_pos(goal.obj) - eef
                self._to("carry")
            return self._move(target, self.grasp.yaw)

        if phase in ("carry", "lower"):
            obj = s.obj_pos(goal.obj)
            if np.linalg.norm((obj - eef) - self.hold_offset) > 0.04:
                self._back_z = eef[2] + 0.03
                self._retry(f"{goal.obj} slipped")
                return self._move(eef)
            place_xy, top = self._target_xy_top(goal)
            xy = place_xy - self.hold_offset[:2]
            if phase == "carry":
                # What the rest of the way needs: it comes down as soon as the object is past the
                # last thing it must clear.
                carry_z = self._carry_z(goal, obj[:2], -np.inf)
                target = np.array([xy[0], xy[1], carry_z])
                if np.linalg.norm(target[:2] - eef[:2]) < 0.008 or self.t > 100:
                    self._to("lower")
                return self._move(target, self.grasp.yaw)
            release_z = top + RELEASE_GAP[goal.relation] + (eef[2] - s.bottom(goal.obj))
            target = np.array([xy[0], xy[1], release_z])
            if abs(release_z - eef[2]) < 0.006 or self.t > 80:
                self._to("release", "" if self.t <= 80 else "lower timeout")
            return self._move(target, self.grasp.yaw, max_speed=_approach_speed(release_z - eef[2]))

        if phase == "release":
            self.gripper = OPEN
            if self.t >= 6:
                self._retreat_z = eef[2] + 0.08
                self._to("retreat")
            return self._move(eef, self.grasp.yaw)

        if phase == "retreat":
            target = np.array([eef[0], eef[1], self._retreat_z])
            if eef[2] > self._retreat_z - 0.02 or self.t > 25:
                if s.satisfied(goal):
                    self.g += 1
                    self.attempt = 0
                    self.grasp = None
                    self._to("approach", f"{goal.relation} {goal.obj} {goal.target} holds")
                else:
                    self._back_z = eef[2]
                    self._retry(f"{goal.relation} {goal.obj} {goal.target} does not hold after release")
            return self._move(target)
        raise AssertionError(f"unknown phase {phase}")


# ------------------------------------------------------------------------ as a policy "server"



class ExpertPolicy:
    """The expert behind the policy interface of the episode loop (`make_policy(ExpertPolicy)`).

    It declares a state-only input layout (so no camera is rendered for it) and a chunk of one
    action; `bind(env, task)` attaches it to the worker's env before each episode, after which
    every `infer` plans one step from the simulator state.
    """

    model = "scripted-expert"

    def __init__(self):
        self.expert: Expert | None = None
        self._bound = None

    def info(self) -> ServerInfo:
        return ServerInfo(model=self.model, chunk_length=1, action_dim=7, model_version="expert-1",
                          inputs=tuple(InputSpec(k) for k in PROPRIO_KEYS),
                          image_orientation=protocol.ORIENTATION_AS_RENDERED)

    def bind(self, env, task) -> None:
        """Attach to the env for the next episode (called before its reset; the expert starts at
        the first query, from the state the episode is then in)."""
        self._bound = (env, plan_task(task))
        self.expert = None

    def infer(self, request: dict[str, Any]) -> dict[str, Any]:
        if self.expert is None:
            if self._bound is None:
                raise RuntimeError("ExpertPolicy.infer before bind(env, task)")
            env, goals = self._bound
            self.expert = Expert(env.problem, goals)
        action = self.expert.act().astype(np.float32)
        return {"actions": action[None, :], "model_version": "expert-1", "server_timing": {"infer_ms": 0.0}}

    def close(self) -> None:
        self.expert, self._bound = None, None
