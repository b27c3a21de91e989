"""Videos of a policy in the simulator, headless: MP4 through imageio (GIF without ffmpeg).

Why a separate single-env loop rather than frames from the evaluation's vector env: rendering
costs far more than a simulator step (pybullet's TinyRenderer: about 0.1-0.25 s a frame on a
shared CPU core, against about 1.5 ms a step), so the scores come from the fast batched
rollout and only the episodes asked for are rendered. Video episode ``i`` is reset with
``seed + i`` (reproducible), but it is not the evaluation's episode on vector env ``i``:
bullet-safety-gym draws noise from numpy's global RNG, which the vector env's sub-envs share,
so the same seed plays out differently alone. Each file's name carries its own episode's
reward and cost, and ``eval.json`` lists them.

Headless rendering, as measured on these machines (``stack.md``):

* bullet-safety-gym (the DSRL Bullet tasks): ``gym.make`` takes no ``render_mode``;
  ``env.unwrapped.render(mode="rgb_array")`` draws with pybullet's TinyRenderer (no display,
  no GL). Its size is the task camera's ``render_width`` x ``render_height`` (480 x 360).
* MuJoCo (safety-gymnasium, gymnasium's ``-v4`` tasks): offscreen through EGL, so
  ``MUJOCO_GL=egl`` must be set before ``mujoco`` is imported (``corl eval --video`` sets it
  first thing); dsrl's ``Offline*Gymnasium`` ids drop ``render_mode``, so the builder's render
  mode is set after construction.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager

import numpy as np
import torch

from corl.errors import CorlError
from corl.tasks import TaskSpec

PolicyFn = Callable[[torch.Tensor], torch.Tensor]


def prefer_egl() -> None:
    """Ask MuJoCo for EGL (the only headless backend that works here) unless the user chose one;
    effective only before ``mujoco`` is imported."""
    os.environ.setdefault("MUJOCO_GL", "egl")


@dataclass
class VideoOptions:
    """``episodes`` per policy and condition; ``every``: keep one frame in ``every`` steps
    (rendering dominates the cost); ``size``: (width, height), None for the simulator's own."""

    episodes: int = 0
    every: int = 1
    size: tuple[int, int] | None = None
    perturbed: bool = False  # also record each sim2real cell and attack budget

    def __post_init__(self) -> None:
        if self.episodes < 0:
            raise CorlError(f"--video must be >= 0, got {self.episodes}")
        if self.every < 1:
            raise CorlError(f"--video-every must be >= 1, got {self.every}")
        if self.size is not None and (len(self.size) != 2 or min(self.size) < 16):
            raise CorlError(f"--video-size must be WxH with both >= 16, got {self.size}")


def parse_size(text: str | None) -> tuple[int, int] | None:
    """``"320x240"`` -> (320, 240); one-line error otherwise."""
    if not text:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match:
        raise CorlError(f"bad --video-size {text!r}: expected WIDTHxHEIGHT, e.g. 320x240")
    return int(match.group(1)), int(match.group(2))


@dataclass
class VideoFile:
    path: Path
    reward: float
    cost: float
    length: int
    frames: int
    seed: int
    condition: str


def make_render_env(task: TaskSpec, size: tuple[int, int] | None = None):
    """(env, frame()) for ``task``: an env that renders RGB arrays without a display."""
    from corl.envs.factory import make_env

    if task.family == "bullet":
        env = make_env(task)
        camera = getattr(getattr(env.unwrapped, "world", None), "camera", None)
        if size is not None and camera is not None:
            camera.render_width, camera.render_height = size
        return env, lambda: env.unwrapped.render(mode="rgb_array")
    prefer_egl()
    kwargs: dict[str, Any] = {"render_mode": "rgb_array"}
    if size is not None:
        kwargs.update(width=size[0], height=size[1])
    try:
        env = make_env(task, **kwargs)
    except TypeError:  # an env constructor that takes no width/height
        env = make_env(task, render_mode="rgb_array")
    params = getattr(env.unwrapped, "render_parameters", None)
    if params is not None and dataclasses.is_dataclass(params) and not params.mode:
        # dsrl's Offline*Gymnasium ids drop render_mode on the way to safety-gymnasium's builder
        changes: dict[str, Any] = {"mode": "rgb_array"}
        if size is not None:
            changes.update(width=size[0], height=size[1])
        env.unwrapped.render_parameters = dataclasses.replace(params, **changes)
        return env, lambda: env.unwrapped.render()
    return env, lambda: env.render()


def _even(frame: np.ndarray) -> np.ndarray:
    """H.264 in yuv420p needs even sides: drop a last odd row/column (never resize)."""
    h, w = frame.shape[:2]
    return np.ascontiguousarray(frame[: h - h % 2, : w - w % 2, :3])


def has_ffmpeg() -> bool:
    try:
        import imageio_ffmpeg

        imageio_ffmpeg.get_ffmpeg_exe()
        return True
    except Exception:  # not installed, or no binary for this platform
        return False


def write_video(frames: list[np.ndarray], base: Path, fps: float) -> Path:
    """``base`` + ``.mp4`` (H.264) when imageio-ffmpeg is there, else ``.gif``; written to a
    temporary name and renamed into place. Returns the final path (its suffix says which).
    ``base`` is a name without suffix (its dots, e.g. ``cost0.0``, stay)."""
    import imageio.v2 as imageio

    frames = [_even(np.asarray(f, dtype=np.uint8)) for f in frames]
    suffix = ".mp4" if has_ffmpeg() else ".gif"
    path = base.with_name(base.name + suffix)
    tmp = base.with_name(f".{base.name}.{os.getpid()}.tmp{suffix}")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if path.suffix == ".mp4":
            with imageio.get_writer(
                tmp, format="FFMPEG", mode="I", fps=fps, codec="libx264", pixelformat="yuv420p", macro_block_size=1
            ) as writer:
                for frame in frames:
                    writer.append_data(frame)
        else:
            imageio.mimsave(tmp, frames, format="GIF", duration=1000.0 / fps, loop=0)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "x"


def record(
    task: TaskSpec,
    policy_fn: PolicyFn,
    opts: VideoOptions,
    out_dir: Path,
    name: str,
    seed: int = 0,
    condition: str = "clean",
    device: torch.device | str = "cpu",
    obs_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    env_hook: Callable[[Any], ContextManager[Any]] | None = None,
) -> list[VideoFile]:
    """Record ``opts.episodes`` episodes (episode ``i`` reset with ``seed + i``) to
    ``out_dir/<name>-<condition>-ep<i>-reward<R>-cost<C>.mp4``; same hooks as the rollout."""
    files: list[VideoFile] = []
    env, frame = make_render_env(task, opts.size)
    low, high = env.action_space.low, env.action_space.high
    fps = float(env.metadata.get("render_fps") or 30) / opts.every
    try:
        with contextlib.ExitStack() as stack:
            if env_hook is not None:
                stack.enter_context(env_hook(env))
            for i in range(opts.episodes):
                obs, _ = env.reset(seed=seed + i)
                frames: list[np.ndarray] = []
                reward = cost = 0.0
                t = 0
                while True:
                    if t % opts.every == 0:
                        frames.append(np.asarray(frame()))
                    x = torch.as_tensor(np.asarray(obs), dtype=torch.float32, device=device)[None]
                    if obs_transform is not None:
                        x = obs_transform(x)
                    with torch.no_grad():
                        action = policy_fn(x)
                    act = np.clip(action.detach().cpu().numpy()[0].astype(np.float64), low, high)
                    obs, r, terminated, truncated, info = env.step(act)
                    reward += float(r)
                    cost += float(info.get("cost", 0.0))
                    t += 1
                    if terminated or truncated:
                        break
                stem = f"{_slug(name)}-{_slug(condition)}-ep{i}-reward{reward:.1f}-cost{cost:.1f}"
                path = write_video(frames, out_dir / stem, fps)
                files.append(VideoFile(path, reward, cost, t, len(frames), seed + i, condition))
    finally:
        env.close()
    return files


def expected_frames(length: int, every: int) -> int:
    """Frames a video of an episode of ``length`` steps holds (steps 0, every, 2 every, ...)."""
    return math.ceil(length / every)


__all__ = [
    "VideoOptions",
    "VideoFile",
    "parse_size",
    "make_render_env",
    "write_video",
    "record",
    "has_ffmpeg",
    "prefer_egl",
    "expected_frames",
]
