"""ZeroGPU on a real NVIDIA machine: the forked worker sees exactly the leased GPU (by UUID), the main process none.

    .venv/bin/python bench/zerogpu_gpu_check.py      # needs nvidia-smi, and spaces, torch (CUDA), gradio,
                                                     # gradio_client importable in this interpreter

Without an NVIDIA GPU (no nvidia-smi, or it lists none) it says so and exits 0: nothing was checked.

What it runs: Spaceport's device API (the real ZeroGpu service and device app, SQLite in a temporary
directory) on loopback with this machine's GPUs as the pool; a Gradio app using the real `spaces` package
with `SPACES_ZERO_GPU=true`, started as a child process with the environment a zero-a10g instance gets;
one `@spaces.GPU` call through gradio_client. Then, while the package's worker is idle (it keeps its
CUDA context), it checks:
  1. the worker's CUDA_VISIBLE_DEVICES is the leased UUID and torch sees exactly one device, that one;
  2. nvidia-smi's compute processes: the worker is on the leased GPU only, the main process on none;
  3. the main process has no /dev/nvidia<N> open.
Prints a table; exit status 1 when a check fails.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select

APP = '''import json, os
import spaces
import torch
import gradio as gr


@spaces.GPU(duration=30)
def worker_view(_x: str) -> str:
    props = [str(torch.cuda.get_device_properties(i).uuid) for i in range(torch.cuda.device_count())]
    torch.ones(1).cuda()  # a CUDA context on the visible device, as a real call has
    return json.dumps({"pid": os.getpid(), "visible": os.environ.get("CUDA_VISIBLE_DEVICES"), "uuids": props})


def main_view(_x: str) -> str:
    return json.dumps({"pid": os.getpid()})


with gr.Blocks() as demo:
    box, out = gr.Textbox(), gr.Textbox()
    gr.Button("w").click(worker_view, box, out, api_name="worker_view")
    gr.Button("m").click(main_view, box, out, api_name="main_view")

demo.launch(server_name="127.0.0.1", server_port=int(os.environ["PORT"]))
'''


def gpus() -> list[tuple[int, str]]:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    done = subprocess.run([smi, "--query-gpu=index,uuid", "--format=csv,noheader"], capture_output=True, text=True,
                          check=False)
    rows = [line.split(",") for line in done.stdout.splitlines() if "," in line] if done.returncode == 0 else []
    return [(int(index), uuid.strip()) for index, uuid in rows]


def compute_apps() -> list[tuple[int, str]]:
    done = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,gpu_uuid", "--format=csv,noheader"],
                          capture_output=True, text=True, check=True)
    return [(int(p), u.strip()) for p, u in (line.split(",") for line in done.stdout.splitlines() if "," in line)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bare(uuid: str) -> str:
    return uuid.removeprefix("GPU-").lower()


async def run(found: list[tuple[int, str]]) -> list[tuple[str, bool, str]]:
    import uvicorn
    from gradio_client import Client
    from zerogpu import zero_instance  # bench/zerogpu.py, beside this script

    from controller.api import zerogpu as api
    from controller.config import Settings
    from controller.db.models import ZeroGpuLease
    from controller.domain import zerogpu as dz
    from controller.services import quotas
    from controller.services import zerogpu as zs
    from controller.services.accounts import create_user
    from controller.services.platform import Platform

    with tempfile.TemporaryDirectory(prefix="zerogpu-gpu-check-") as tmp:
        platform = Platform(Settings(data_dir=Path(tmp) / "data", public_url="http://gpu.check",
                                     zerogpu_device_api_url="http://gpu.check"))
        platform.migrate()
        with platform.tx() as session:
            owner = create_user(session, "check")
            for index, uuid in found:
                zs.add_device(session, quotas.catalog(platform), "nvidia-a10g", index, uuid)
            instance = zero_instance(session, owner.id, "check", "check")
        app_proc: list[subprocess.Popen[bytes]] = []
        zero = zs.ZeroGpu(platform, supervisor_pid=lambda _name: app_proc[0].pid if app_proc else None)
        api_port, app_port = free_port(), free_port()
        server = uvicorn.Server(uvicorn.Config(api.device_app(zero), host="127.0.0.1", port=api_port, lifespan="off",
                                               log_level="warning"))
        serving = asyncio.create_task(server.serve())
        env = zs.with_zero_env(platform, "zero-a10g", instance, {k: v for k, v in os.environ.items()
                                                                 if k != "CUDA_VISIBLE_DEVICES"})
        env["SPACES_ZERO_DEVICE_API_URL"] = (f"http://127.0.0.1:{api_port}/zerogpu/"
                                             f"{dz.instance_capability(platform.settings.key, instance)}/")
        script = Path(tmp) / "app.py"
        script.write_text(APP)
        app_proc.append(subprocess.Popen([sys.executable, str(script)], env={**env, "PORT": str(app_port)}))
        try:
            client = await asyncio.to_thread(_client, Client, f"http://127.0.0.1:{app_port}/")
            worker = json.loads(await asyncio.to_thread(client.predict, "x", api_name="/worker_view"))
            main = json.loads(await asyncio.to_thread(client.predict, "x", api_name="/main_view"))
            with platform.sessions() as session:
                lease = session.scalars(select(ZeroGpuLease).order_by(ZeroGpuLease.id)).first()
                leased = lease.device_uuid if lease is not None else "-"
            apps = compute_apps()
            return checks(worker, main, leased, apps)
        finally:
            app_proc[0].terminate()
            subprocess.run(["pkill", "-KILL", "-P", str(app_proc[0].pid)], check=False)  # the fork, by parent pid
            app_proc[0].wait(30)
            server.should_exit = True
            await serving
            platform.dispose()


def _client(factory: type, url: str) -> Any:
    deadline = time.monotonic() + 300
    while True:
        try:
            return factory(url, verbose=False)
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def checks(worker: dict[str, object], main: dict[str, object], leased: str,
           apps: list[tuple[int, str]]) -> list[tuple[str, bool, str]]:
    uuids = [bare(str(u)) for u in worker["uuids"]]  # type: ignore[attr-defined]
    wpid, mpid = int(str(worker["pid"])), int(str(main["pid"]))
    on = {u for p, u in apps if p == wpid}
    opened = [os.readlink(f) for f in Path(f"/proc/{mpid}/fd").iterdir() if _is_gpu_node(f)]
    return [
        ("worker's CUDA_VISIBLE_DEVICES is the leased UUID", worker["visible"] == leased, f"{worker['visible']} vs {leased}"),
        ("torch in the worker sees exactly the leased GPU", uuids == [bare(leased)], ", ".join(uuids) or "none"),
        ("worker differs from the main process", wpid != mpid, f"worker {wpid}, main {mpid}"),
        ("nvidia-smi: the worker is on the leased GPU only", on == {leased}, ", ".join(sorted(on)) or "none"),
        ("nvidia-smi: the main process is on no GPU", all(p != mpid for p, _ in apps), str([a for a in apps if a[0] == mpid])),
        ("main process has no /dev/nvidiaN open", not opened, ", ".join(opened) or "none"),
    ]


def _is_gpu_node(fd: Path) -> bool:
    try:
        target = os.readlink(fd)
    except OSError:
        return False
    return target.startswith("/dev/nvidia") and target[len("/dev/nvidia"):].isdigit()


def main() -> int:
    found = gpus()
    if not found:
        print("No NVIDIA GPU here (nvidia-smi is missing or lists no GPU): this check needs a machine with one. "
              "Nothing was checked.")
        return 0
    needed = [m for m in ("spaces", "torch", "gradio", "gradio_client") if importlib.util.find_spec(m) is None]
    if needed:
        print(f"Install {', '.join(needed)} into this interpreter first ({sys.executable} -m pip install ...).")
        return 2
    results = asyncio.run(run(found))
    width = max(len(name) for name, _, _ in results)
    print(f"\nZeroGPU device visibility on {len(found)} GPU(s)")
    print(f"| {'check'.ljust(width)} | ok  | seen |")
    print(f"|{'-' * (width + 2)}|-----|------|")
    for name, ok, seen in results:
        print(f"| {name.ljust(width)} | {'yes' if ok else 'NO '} | {seen} |")
    return 0 if all(ok for _, ok, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
